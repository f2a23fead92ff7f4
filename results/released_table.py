"""
Why the paper's numbers do not reproduce: the authors' released computation beside honest pruning, on the paper's
own metrics (results/run_released.sh's runs; methods/released.py: RECIPE, and the computation).

    GLUE_DIR=/path/to/glue python results/released_table.py [--runs results/released] [--glue results/glue.json]
                                                      [--out results/released]
    # writes OUT.md and OUT.json

Per task, over the seeds run (mean ± std over seeds; points, the paper's metric first: MRPC F1, STS-B Pearson,
CoLA Matthews, else accuracy), with each row's FLOPs speedup (no padding) from the decisions that row took:
  - the released training (--method released), scored three ways on the same weights (metrics.json "scored"): the
    released pass with sampled decisions, as the paper evaluated it (the mean of 5 samplings per seed; the spread
    within a model is its own column), the released pass with argmax decisions, and honest pruned inference
    (`infer`, argmax): what a user who deploys the model gets;
  - the honest training at the paper's settings (our Transkimmer, the same recipe, tau and init);
  - the released computation trained with our recipe at 2x (ourrecipe), scored the same three ways: a model that
    skims, where the released recipe's do not at argmax;
  - from results/glue.json (results/glue.py, the same seeds where run): the dense model, our recipe at 2x and at the
    paper's speedup, the first 3 and 2 layers; and the paper's row (Table 3, BERT-base).
Paired comparisons, a bootstrap over dev examples with the seeds pooled (glue.metric_bootstrap, 10,000 resamples):
  - the leak: the released pass minus honest inference of the same weights (sampled: each sampling paired with
    its model's honest predictions; argmax); the same model, so these pair on any machine;
  - the paper's settings trained honestly minus our recipe at the speedup nearest to theirs (2x or the paper's),
    and minus the first 3 layers: different recipes from the same checkpoint, paired on the examples;
  - under our recipe at 2x: the leak again (released pass minus honest inference, same weights), and what training
    with the released computation does to the deployed model (its honest inference minus our recipe's, 2x).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "results"))
import data  # noqa: E402
import glue  # noqa: E402
from compare import seed_of, spread  # noqa: E402

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
MODES = ("released", "honest", "ourrecipe")
SCORED = ("released", "ourrecipe")  # the modes trained with the released computation, scored three ways


def load(runs, task, mode, labels):
    """[{seed, machine, scores: {pass: [{metrics, preds, speedup}]}}] of one task and training mode: the released
    training's three passes (released_sampled: one entry per sampling; ourrecipe's too), or the honest training's one
    ("honest_training")."""
    t = data.get_task(task)

    def entry(path, preds, speedup):
        preds = np.asarray(preds)
        if len(preds) != len(labels):
            raise SystemExit(f"{path}: {len(preds)} predictions, but {task}'s dev set has {len(labels)} examples")
        return {"metrics": {k: 100 * v for k, v in data.compute_metrics(t, preds, labels).items()},
                "preds": preds, "speedup": speedup}

    out = []
    for path in sorted(Path(runs).glob(f"{task}-{mode}-seed*.json"), key=lambda p: seed_of(p.stem)):
        m = json.loads(path.read_text())
        if mode in SCORED:
            scored = m["scored"]
            scores = {name: [entry(path, r["predictions"], r["flops_speedup"]) for r in
                             (scored[name] if isinstance(scored[name], list) else [scored[name]])]
                      for name in ("released_sampled", "released_argmax", "honest")}
        else:
            scores = {"honest_training": [entry(path, m["predictions"], m["flops"]["none"]["speedup"])]}
        out.append({"seed": seed_of(path.stem), "machine": glue.machine_of(m), "scores": scores})
    return out


def row_summary(runs, name, metric_names):
    """Mean ± std over the seeds of each metric (a seed's value: the mean over its samplings) and of the speedup;
    for a sampled pass also the mean over seeds of the spread within a model."""
    per_seed = [r["scores"][name] for r in runs]
    s = {n: spread([np.mean([e["metrics"][n] for e in entries]) for entries in per_seed]) for n in metric_names}
    s["speedup"] = spread([np.mean([e["speedup"] for e in entries]) for entries in per_seed])
    s["within"] = (float(np.mean([np.std([e["metrics"][metric_names[0]] for e in entries], ddof=1)
                                  for entries in per_seed])) if len(per_seed[0]) > 1 else None)
    s["seeds"] = glue.seeds_where([{"seed": r["seed"], "machine": r["machine"]} for r in runs])
    return s


def paired(main, a_runs, a_name, b_runs, b_name, labels):
    """A - B (points) with its 95% bootstrap interval, over the seeds both have, every entry of A's pass (each
    sampling) against B's pass of the same seed."""
    b_by_seed = {r["seed"]: r for r in b_runs}
    a_preds, b_preds, seeds = [], [], []
    for r in a_runs:
        if r["seed"] not in b_by_seed:
            continue
        b = b_by_seed[r["seed"]]["scores"][b_name][0]["preds"]
        for e in r["scores"][a_name]:
            a_preds.append(e["preds"])
            b_preds.append(b)
        seeds.append(r["seed"])
    if not seeds:
        return None
    diff, low, high = glue.metric_bootstrap(main, a_preds, b_preds, labels)
    return {"seeds": seeds, "diff": diff, "low": low, "high": high}


def leaks(main, runs, prefix, labels):
    """The leak of a mode trained with the released computation: its released pass (sampled; argmax) minus honest
    inference of the same weights, labelled PREFIX + "the leak: ..." (notebook 5 reads these labels)."""
    return {f"{prefix}the leak: released pass ({how}) - honest inference, same weights":
            paired(main, runs, f"released_{how}", runs, "honest", labels) for how in ("sampled", "argmax")}


def glue_rows(glue_runs, task, labels, seeds):
    """results/glue.py's rows of the task (dense, recipe at 2x and the paper's speedup, 3 and 2 layers), restricted
    to `seeds`, as {key: runs in this script's shape (one "final" entry each)}."""
    rows = {}
    for key, _, prefix, which in glue.ROWS:
        row = [r for r in glue.load_row(task, labels, prefix, which, glue_runs, ROOT / "results" / "recipe")
               if r["seed"] in seeds]
        if row:
            rows[key] = [{"seed": r["seed"], "machine": r["machine"],
                          "scores": {"final": [{"metrics": r["metrics"], "preds": r["preds"], "speedup": r["speedup"]}]}}
                         for r in row]
    return rows


ROW_NAMES = [("released", "released_sampled", "released training, released pass, decisions sampled (as the paper)"),
             ("released", "released_argmax", "released training, released pass, argmax decisions"),
             ("released", "honest", "released training, honest pruned inference (`infer`): what is deployed"),
             ("honest", "honest_training", "the paper's settings trained honestly (our Transkimmer, tau 1)"),
             ("ourrecipe", "released_sampled", "released computation, our recipe at 2x: released pass, sampled"),
             ("ourrecipe", "released_argmax", "released computation, our recipe at 2x: released pass, argmax"),
             ("ourrecipe", "honest", "released computation, our recipe at 2x: honest pruned inference"),
             ("dense", "final", "dense, 6 layers (our recipe's dense stage)"),
             ("recipe2", "final", "our recipe at 2x"),
             ("recipepaper", "final", "our recipe at the paper's speedup"),
             ("layers3", "final", "first 3 layers, dense (2x)"),
             ("layers2", "final", "first 2 layers, dense (3x)")]


def fmt(ms, digits=2, unit=""):
    if ms is None or ms[0] is None:
        return "—"
    return f"{ms[0]:.{digits}f}{unit}" if ms[1] is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}{unit}"


def interval(c):
    return "—" if c is None else f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] (seeds {', '.join(map(str, c['seeds']))})"


def report(results, command, machine_note):
    lines = ["# Why the paper's numbers do not reproduce\n",
             f"Made by `{command}` from `results/released/*.json` (the runs: `results/run_released.sh`) and "
             "`results/glue/*.json` (our recipe and its baselines, `results/run_glue.sh`). Scores in points, the "
             "paper's metric first; mean ± std over the seeds listed (the seeds column names each run's machine). "
             "FLOPs speedups (no padding) over the 6-layer dense model, from the decisions each row took; the released "
             "pass computes every token in every layer, so its speedup is what its decisions would save, not what it "
             "ran. Backbone all-MiniLM-L6-v2 (the paper: BERT-base): compare drops and differences, not scores. "
             + machine_note + "\n",
             "The released recipe (`train.py --recipe released`, `methods/released.py`'s `RECIPE`): one skim stage from the "
             "pretrained checkpoint, lambda 0.5, batch 64 drawn at random, lr 2e-5, AdamW without weight decay, no "
             "warm-up, linear decay, no clipping, tau 1, mu0 5, the decisions' gradient into the encoder (joint); 3 "
             "epochs, 5 on MRPC; float32. Dev is scored once, at the end (their script also scored it after every "
             "epoch). `ourrecipe`: the released computation (`--method released`) trained instead with our recipe at "
             "`--target-speedup 2`, made as `results/run_glue.sh`'s t20 runs (random batches, float32), with which it "
             "pairs; its released pass samples decisions in every stage, the frozen one too.\n"]
    for task, r in results.items():
        t = data.get_task(task)
        names = (t.main_metric,) + tuple(m for m in t.metrics if m != t.main_metric)
        pd, pt, ps = glue.PAPER[task]
        lines += [f"## {task}\n", f"The paper (BERT-base, {names[0]}): dense {pd}, Transkimmer {pt} at {ps}x.\n",
                  f"| row | seeds | {' | '.join(names)} | within a model (5 samplings) | FLOPs speedup |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
        for key, name, what in ROW_NAMES:
            s = r["rows"].get(f"{key}/{name}")
            if s is None:
                lines.append(f"| {what} | not run yet |" + " |" * (len(names) + 2))
                continue
            within = "—" if s["within"] is None else f"± {s['within']:.2f}"
            lines.append(f"| {what} | {s['seeds']} | " + " | ".join(fmt(s[n]) for n in names)
                         + f" | {within} | {fmt(s['speedup'], unit='x')} |")
        lines += ["", f"Paired ({names[0]}, 95% bootstrap over dev examples, seeds pooled):", ""]
        for label, c in r["pairs"].items():
            lines.append(f"- {label}: {interval(c)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--runs", default=str(ROOT / "results" / "released"), help="folder of TASK-MODE-seedS.json")
    p.add_argument("--glue-runs", default=str(ROOT / "results" / "glue"), help="results/run_glue.sh's JSON folder")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--out", default=str(ROOT / "results" / "released"), help="writes OUT.md and OUT.json")
    args = p.parse_args(argv)
    from checkpoint import atomic_write

    results, machines = {}, set()
    for task in TASKS:
        t = data.get_task(task)
        runs = {mode: [] for mode in MODES}
        try:
            labels = np.array([e.label for e in data.read_split(t, "dev", data.find_data_dir(t, args.data_dir,
                                                                                              download=False))])
            runs = {mode: load(args.runs, task, mode, labels) for mode in MODES}
        except data.DataError as e:
            raise SystemExit(f"error: {e}")
        if not any(runs.values()):
            continue
        seeds = {r["seed"] for mode in MODES for r in runs[mode]}
        machines |= {r["machine"] for mode in MODES for r in runs[mode]}
        rows = {mode: runs[mode] for mode in MODES} | glue_rows(args.glue_runs, task, labels, seeds)
        names = (t.main_metric,) + tuple(m for m in t.metrics if m != t.main_metric)
        summaries = {f"{key}/{name}": row_summary(rows[key], name, names)
                     for key, name, _ in ROW_NAMES if rows.get(key)}
        main = t.main_metric
        pairs = {}
        if runs["released"]:
            pairs |= leaks(main, runs["released"], "", labels)
        if runs["honest"]:
            speed = np.mean([r["scores"]["honest_training"][0]["speedup"] for r in runs["honest"]])
            near = min((k for k in ("recipe2", "recipepaper") if rows.get(k)),
                       key=lambda k: abs(summaries[f"{k}/final"]["speedup"][0] - speed), default=None)
            if near:
                pairs[f"the paper's settings trained honestly ({speed:.2f}x) - our recipe "
                      f"({'2x' if near == 'recipe2' else 'at the paper speedup'})"] = paired(
                    main, runs["honest"], "honest_training", rows[near], "final", labels)
            if rows.get("layers3"):
                pairs[f"the paper's settings trained honestly ({speed:.2f}x) - first 3 layers (2x)"] = paired(
                    main, runs["honest"], "honest_training", rows["layers3"], "final", labels)
            if runs["released"]:
                pairs["released training, honest inference - the paper's settings trained honestly"] = paired(
                    main, runs["released"], "honest", runs["honest"], "honest_training", labels)
        if runs["ourrecipe"]:
            pairs |= leaks(main, runs["ourrecipe"], "under our recipe at 2x, ", labels)
            if rows.get("recipe2"):
                pairs["under our recipe at 2x: released computation's honest inference - ours (our recipe, 2x)"] = \
                    paired(main, runs["ourrecipe"], "honest", rows["recipe2"], "final", labels)
        results[task] = {"rows": summaries, "pairs": pairs}
    command = "GLUE_DIR=/path/to/glue python results/released_table.py" + (" " + " ".join(argv) if argv else "")
    note = f"Trained on: {', '.join(sorted(machines)) or 'nothing yet'} (one thread a run)."
    text = report(results, command, note)
    atomic_write(f"{args.out}.md", lambda f: Path(f).write_text(text))
    atomic_write(f"{args.out}.json", lambda f: Path(f).write_text(json.dumps(
        {"command": command, "tasks": results}, indent=1, default=float) + "\n"))
    print(text)


if __name__ == "__main__":
    main()
