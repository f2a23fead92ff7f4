"""
The held-out check of the small-task recipe (results/log.md, "GLUE: a recipe sized for a small task"): from
results/run_glue_small.sh's metrics (results/glue/small/TASK.json), each stage's score on the held-out slice and
on dev, the FLOPs speedup, and the verdict of the rule written down before the runs: the final held-out score
within 2 points of the run's own dense stage, at a dev FLOPs speedup of at least 1.9x. Beside them, not judged by
the rule, the first 3 layers trained densely on the same slice and budget (TASK-layers3.json), what 2x costs
without skimming.

    python results/glue_small.py [--runs results/glue/small]     # prints a Markdown table
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import data  # noqa: E402

CANDIDATES = {"": "first", "plr": "second", "c3": "third"}  # a run's name, TASK or TASK-SUFFIX -> its candidate
WITHIN, AT_LEAST = 2.0, 1.9  # the rule: points of the main metric (x 100), and the dev FLOPs speedup


def judged_metric(task):
    """The metric the rule was written in: the task's main metric when the runs were made. MRPC's was accuracy then
    (its stage records hold no F1); it is F1, the paper's, since."""
    return "accuracy" if task == "mrpc" else data.get_task(task).main_metric


def rows(m):
    """One run's metrics.json -> [(what, held-out, dev, dev FLOPs speedup, lambda at the end)] in points."""
    main = judged_metric(m["task"])
    out = []
    for s in m["stages"][:-1]:
        what = "the dense stage" if s["stage"] == "dense" else f"the {s['stage']} stage, threshold 0.5"
        out.append((what, 100 * s["holdout"][main], 100 * s["dev"][main],
                    s["dev"]["flops_speedup"], s.get("final_skim_coef")))
        if "dev_at_target" in s:
            out.append((f"the {s['stage']} stage, at the threshold calibrated to the target", None, 100 * s["dev_at_target"][main],
                        s["dev_at_target"]["flops_speedup"], None))
    out.append(("the end (the frozen stage)", 100 * m["holdout"][main], 100 * m[main], m["flops"]["none"]["speedup"], None))
    return main, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(ROOT / "results" / "glue" / "small"))
    args = p.parse_args(argv)
    print("| run | model | held-out | dev | FLOPs speedup (dev) | lambda at the end |\n|---|---|---|---|---|---|")
    verdicts, shallow, finals = [], {}, {}
    for path in sorted(Path(args.runs).glob("*-layers3.json")):  # the baseline at 2x, no candidate
        m = json.loads(path.read_text())
        main_metric = judged_metric(m["task"])
        shallow[m["task"]] = 100 * m["holdout"][main_metric]
        print(f"| {path.stem} ({main_metric}) | the first 3 layers, dense (2x) | {shallow[m['task']]:.2f} | "
              f"{100 * m[main_metric]:.2f} | {m['flops_speedup_over_checkpoint']:.2f}x | |")
    for path in sorted(p for p in Path(args.runs).glob("*.json") if not p.stem.endswith("-layers3")):
        m = json.loads(path.read_text())
        main_metric, table = rows(m)
        for what, held, dev, speedup, coef in table:
            held_text = "" if held is None else f"{held:.2f}"
            coef_text = "" if coef is None else f"{coef:.2f}"
            print(f"| {path.stem} ({main_metric}) | {what} | {held_text} | {dev:.2f} | {speedup:.2f}x | {coef_text} |")
        dense, final, speedup = table[0][1], table[-1][1], table[-1][3]
        finals.setdefault(CANDIDATES[path.stem.partition("-")[2]], {})[m["task"]] = final
        passed = final >= dense - WITHIN and speedup >= AT_LEAST
        verdicts.append(f"{path.stem}: {'passes' if passed else 'fails'} (final {final:.2f} held out against the dense "
                        f"stage's {dense:.2f}, at {speedup:.2f}x" + (f"; the first 3 layers: {shallow[m['task']]:.2f}"
                                                                      if m["task"] in shallow else "") + ")")
    print("\n" + "; ".join(verdicts) + ".")
    # the rule written down before the third candidate's runs: if none passes on two tasks, the table runs with
    # the candidate of the best mean final held-out score over the three tasks
    means = {c: sum(f.values()) / len(f) for c, f in finals.items() if len(f) == 3}
    if means:
        print("\nMean final held-out score over CoLA, MRPC and STS-B: "
              + ", ".join(f"the {c} candidate {v:.2f}" for c, v in means.items())
              + f"; the best: the {max(means, key=means.get)}.")


if __name__ == "__main__":
    main()
