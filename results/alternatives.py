"""
"Is token skimming worth it?" on SST-2: every way of saving compute that this repository trains, on the same
backbone, data, budget (2 epochs), FLOPs counter, timing function and seeds, as dev accuracy against FLOPs
speedup (no padding). The runs are results/run_recipe.sh's and results/run_alternatives.sh's:
  - Transkimmer (skim.py): the default recipe at --target-speedup 1.5, 2 and 3     results/recipe/tNN-seedS.json
  - static top-k pruning (methods/topk.py, PoWER-BERT), at the same targets               results/alternatives/topkNN-seedS.json
  - skipping the middle layers (methods/skipmiddle.py, Lawson et al. 2025), the same      results/alternatives/smNN-seedS.json
  - fewer layers: the first 4, 3 and 2 of the 6 trained densely (1.5x, 2x, 3x)    results/recipe/layersK-seedS.json
  - the 6-layer dense model: each Transkimmer run's dense stage, evaluated when it ended
Seeds 42 to 44 (--seeds), those of them that have run. At each target every two methods are paired, and each
with dense, on the 872 dev sentences (results/compare.py's McNemar per seed and paired bootstrap
over seeds), on the seeds both have trained on the same kind of device: runs on different devices are not paired.

    GLUE_DIR=/path/to/glue python results/alternatives.py        # writes results/alternatives.md, .json and .png
    ... --time runs    # also times the models saved in runs/sst2-recipe-NAME/ and runs/sst2-alt-NAME/, at batch
                       # 1 and 32 (flops.measure_speedup, the function behind train.py's "measured"), those
                       # that OUT.json has no timing for yet; --retime times them all again. A fewer-layers run
                       # whose model is not here is timed on the checkpoint cut to its layers (compare.stand_in)
A run timed before keeps its timing in OUT.json (with the command, date and machine it was timed by), so adding
a seed and rerunning loses nothing.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
import compare  # noqa: E402
import flops  # noqa: E402

METHODS = {  # method: (its runs' folder under results/, {target: the prefix of its runs}, colour)
    "Transkimmer": ("recipe", {1.5: "t15", 2.0: "t20", 3.0: "t30"}, "tab:green"),
    "static top-k (PoWER-BERT)": ("alternatives", {1.5: "topk15", 2.0: "topk20", 3.0: "topk30"}, "tab:blue"),
    "skip the middle layers": ("alternatives", {1.5: "sm15", 2.0: "sm20", 3.0: "sm30"}, "tab:orange"),
    "fewer layers (4, 3, 2)": ("recipe", {1.5: "layers4", 2.0: "layers3", 3.0: "layers2"}, "tab:grey"),
}
DENSE = ("dense", "dense, 6 layers (each Transkimmer run's dense stage)", "t20", "stage0")
AT_2X = {"Transkimmer": "t20", "static top-k": "topk20", "skipping the middle layers": "sm20",
         "the first 3 layers": "layers3"}  # the verdict's names of the rows at 2x
BATCH_SIZES = (1, 32)
MARKS = {  # what a run's timing was made on: its mark in the table, and the note that says so
    "saved": ("", "the run's own saved model"),
    "stand-in": ("\\*", "timed on the checkpoint cut to the run's layers, the run's own model not being on the machine "
                 "that timed it: a dense model's time does not depend on its weights."),
    "bench": ("†", "timed by bench.py as the default command's model (`results/bench_cpu_checkpoint.json`, its "
              "\"measured\": flops.measure_speedup), which is this run: the same dev predictions and tokens kept per "
              "layer (`results/default_command_1thread.json`); FLOPs as run: bench.py's count on its infer path."),
}
# runs timed elsewhere by the one timing function: run name -> (the run that made the same model, the bench JSON)
BENCHED = {"t20-seed42": ("default_command_1thread.json", "bench_cpu_checkpoint.json")}
PREFIXES = ("sst2-recipe-", "sst2-alt-")  # the runs/ folder of a run NAME: run_recipe.sh's or run_alternatives.sh's


def specs(folder):
    """compare.load_rows' row specs for the runs in results/FOLDER: (key, what, prefix, "final") per method and
    target (the key is the prefix), and the dense row with the recipe's."""
    out = [(prefix, f"{method} at {target:g}x", prefix, "final")
           for method, (where, targets, _) in METHODS.items() if where == folder for target, prefix in targets.items()]
    return out + [DENSE] if folder == "recipe" else out


def load(results, labels, seeds):
    """Every row that has runs, from both folders: {key: compare.load_rows' row}."""
    rows = {}
    for folder in ("recipe", "alternatives"):
        rows.update(compare.load_rows(Path(results) / folder, labels, seeds, specs(folder)))
    return rows


def paired(rows, a, b):
    """(seeds, A's correctness, B's) on the seeds both rows have, trained on the same kind of device."""
    by_seed = [{compare.seed_of(n): (right, device) for n, right, device in zip(rows[k]["names"], rows[k]["right"],
                                                                               rows[k]["devices"])} for k in (a, b)]
    seeds = [s for s in sorted(set(by_seed[0]) & set(by_seed[1])) if by_seed[0][s][1] == by_seed[1][s][1]]
    return seeds, [by_seed[0][s][0] for s in seeds], [by_seed[1][s][0] for s in seeds]


def at_each_target():
    """The pairs compared: at each FLOPs target, every two methods' rows, then each against dense."""
    out = []
    for target in sorted({t for _, targets, _ in METHODS.values() for t in targets}):
        keys = [targets[target] for _, targets, _ in METHODS.values() if target in targets]
        out += [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]] + [(k, "dense") for k in keys]
    return out


def kept(results, names, folder):
    """The mean over a row's runs of the fraction of tokens each layer computes (metrics.json: flops.kept_fraction)."""
    fractions = [json.loads((Path(results) / folder / f"{n}.json").read_text())["flops"].get("kept_fraction")
                 for n in names]
    fractions = [f for f in fractions if f]
    return [round(float(x), 2) for x in np.mean(fractions, 0)] if fractions else None


def verdict(rows):
    """The one sentence the README shows: which method leads at 2x, by how much over the next, and whether the
    difference exceeds the seed-to-seed spread (and its paired interval excludes 0). None until every method has
    three seeds at 2x."""
    at_2x = {m: rows[k] for m, k in AT_2X.items() if k in rows and len(rows[k]["acc"]) >= 3}
    if len(at_2x) < len(AT_2X):
        return None
    (first, r1), (second, r2) = sorted(at_2x.items(), key=lambda kv: -compare.mean_std(kv[1]["acc"])[0])[:2]
    (m1, s1), (m2, s2) = compare.mean_std(r1["acc"]), compare.mean_std(r2["acc"])
    seeds, a, b = paired(rows, AT_2X[first], AT_2X[second])
    diff, low, high = compare.paired_bootstrap(a, b) if seeds else (m1 - m2, float("nan"), float("nan"))
    beyond = m1 - m2 > max(s1, s2) and low > 0
    return (f"At 2x the best is {first} ({m1:.2f} ± {s1:.2f}), {m1 - m2:.2f} points above {second} ({m2:.2f} ± "
            f"{s2:.2f}; paired over seeds {', '.join(map(str, seeds))}: {diff:+.2f} [{low:+.2f}, {high:+.2f}]): a "
            f"difference that {'exceeds' if beyond else 'does not exceed'} the seed-to-seed spread.")


def timed_before(path):
    """The timings an earlier run of this script wrote to `path` ({run name: {batch size: speedup, "by": the
    command, date and machine}}), or none."""
    return json.loads(Path(path).read_text()).get("timings", {}) if Path(path).exists() else {}


def benched(results):
    """The timings of BENCHED's runs, read from bench.py's JSON, for each run whose model is the one bench.py timed
    (the same dev predictions and tokens kept per layer as the run that made that model): {name: timing}."""
    out = {}
    for name, (twin, bench_json) in BENCHED.items():
        paths = [Path(results) / "recipe" / f"{name}.json", Path(results) / twin, Path(results) / bench_json]
        if not all(p.exists() for p in paths):
            continue
        run, made, timed = (json.loads(p.read_text()) for p in paths)
        infer32 = next(r for r in timed["results"] if r["path"] == "infer" and r["batch_size"] == 32)
        if (run["predictions"], run["flops"]["kept_fraction"]) != (made["predictions"], made["flops"]["kept_fraction"]) \
                or infer32["kept_fraction"] != made["flops"]["kept_fraction"]:
            continue  # not the model bench.py timed
        m, measured = timed["machine"], {r["batch_size"]: r["measured_speedup"] for r in timed["measured"]}
        out[name] = {**{str(bs): measured[bs] for bs in BATCH_SIZES if bs in measured}, "model": "bench",
                     "flops_executed": round(infer32["flops_speedup"], 3),
                     "by": timed_by(timed["command"], m["date"][:10], flops.describe_machine(m["cpu"], m["threads"], m["torch"]),
                                    m["loadavg_before"][0])}
    return out


def timed_by(command, date, machine, load):
    """How a timing was made, as the report's "Timed by" sentences say it."""
    return f"`{command}` on {date} ({machine}, load average {load:.2f} before)"


def report(rows, results, timings, command):
    def timed(name):  # measured at batch 1 / 32 (the FLOPs speedup of what was timed), marked by what was timed
        t = timings.get(name, {})
        if not any(str(bs) in t for bs in BATCH_SIZES):
            return None
        cell = " / ".join(f"{t[str(bs)]:.2f}x" if str(bs) in t else "-" for bs in BATCH_SIZES)
        return cell + (f" ({t['flops_executed']:.2f}x)" if "flops_executed" in t else "") + MARKS[t["model"]][0]
    timed_by = {}  # {how it was timed: the runs so timed}
    for name, t in sorted(timings.items()):
        timed_by.setdefault(t["by"], []).append(name)
    lines = ["# SST-2: is token skimming worth it?\n", f"Made by `{command}`."
             + "".join(f" Timed by {by}: {', '.join(names)}." for by, names in sorted(timed_by.items())) + "\n",
             "| method | FLOPs target | seeds (trained on) | dev acc, mean ± std | per seed | FLOPs speedup | "
             "measured CPU speedup, batch 1 / 32 (FLOPs as run) | tokens computed per layer (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, (folder, targets, _) in [("dense", ("recipe", {1.0: "dense"}, None)), *METHODS.items()]:
        for target, key in targets.items():
            if key not in rows:
                lines.append(f"| {method} | {target:g}x | not run yet | | | | | |")
                continue
            r = rows[key]
            devices = r["devices"]
            where = ", ".join(f"{devices.count(d)} {d}" for d in sorted(set(devices)))
            cells = [timed(n) or "-" for n in r["names"]] if key != "dense" else ["1.00x / 1.00x"]
            cells = ", ".join(cells) if any(c != "-" for c in cells) else "not timed"
            per_layer = kept(results, r["names"], folder) if key != "dense" else None
            lines.append(f"| {method} | {target:g}x | {', '.join(str(compare.seed_of(n)) for n in r['names'])} ({where}) | "
                         f"{compare.mean_std_text(r['acc'])} | {', '.join(f'{a:.2f}' for a in r['acc'])} | "
                         f"{', '.join(f'{s:.2f}x' for s in r['flops'])} | {cells} | {per_layer or ''} |")
    lines += ["", "Paired at each target on the 872 dev sentences (A - B in points; b = sentences only A gets right, "
              "c = only B; seeds trained on the same kind of device):", "",
              "| A vs B | per seed: A - B, b : c, McNemar p | mean A - B [95% bootstrap interval] |", "|---|---|---|"]
    pairs = {}
    for a, b in at_each_target():
        if a in rows and b in rows:
            seeds, ra, rb = paired(rows, a, b)
            if not seeds:
                lines.append(f"| {a} vs {b} | no seed trained on the same kind of device | |")
                continue
            per_seed = [f"{s}: {100 * (x.mean() - y.mean()):+.2f}, {'%d : %d, p = %.2f' % compare.mcnemar(x, y)}"
                        for s, x, y in zip(seeds, ra, rb)]
            diff, low, high = compare.paired_bootstrap(ra, rb)
            pairs[f"{a} vs {b}"] = {"seeds": seeds, "diff": diff, "low": low, "high": high}
            lines.append(f"| {a} vs {b} | {'; '.join(per_seed)} | {diff:+.2f} [{low:+.2f}, {high:+.2f}] |")
    sentence = verdict(rows)
    lines += ["", "FLOPs as run: flops.py's count of what the timed paths compute, the last layer for [CLS] alone "
              "(its \"cls\" convention, no padding), over the dense model run the same way: the figure to read a measured "
              "speedup against. It is below the FLOPs speedup for a method that skims in the last layer, where "
              "the dense model does little work either."]
    for kind, (mark, what) in MARKS.items():
        if mark and any(t["model"] == kind for t in timings.values()):
            lines += ["", f"{mark} {what}"]
    lines += ["", sentence or "The verdict at 2x waits for three seeds of every method there."]
    return "\n".join(lines) + "\n", sentence, pairs


def time_runs(rows, runs, data_dir, repeats, timings):
    """Into `timings`, for every run whose model is in `runs` (or that has a stand-in) and has no timing there yet:
    its measured speedup at each batch size, the FLOPs speedup of what was timed, and by what, when, on what."""
    by = timed_by(f"python results/alternatives.py --time {runs}", datetime.date.today(), flops.machine_line(),
                  os.getloadavg()[0])
    done = {n for n, t in timings.items() if "flops_executed" in t and all(str(bs) in t for bs in BATCH_SIZES)}
    models, reference = compare.models_here(rows, runs, specs("recipe") + specs("alternatives"), PREFIXES,
                                            stand_ins=True, skip=done)  # a model timed before is not even loaded
    batches = {bs: compare.dev_batches(data_dir, bs) for bs in BATCH_SIZES} if models else {}
    for bs in batches:
        new = compare.time_loaded(models, reference, batches[bs], repeats,
                                  skip={n for n, t in timings.items() if str(bs) in t})
        for name, speedup in new.items():
            timings.setdefault(name, {}).update({str(bs): speedup, "by": by})
    for name, model in models.items():
        if name in timings and "flops_executed" not in timings[name]:
            timings[name]["flops_executed"] = round(compare.executed_flops_speedup(model, reference,
                                                                                   batches[max(BATCH_SIZES)]), 3)
            timings[name]["model"] = "saved" if compare.saved_model(runs, PREFIXES, name) else "stand-in"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--results", default=str(ROOT), help="the folder holding recipe/ and alternatives/")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--out", default=str(ROOT / "alternatives"), help="writes OUT.md, OUT.json and OUT.png")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--time", metavar="RUNS", default=None, help="time the models saved in RUNS/ at batch 1 and 32")
    p.add_argument("--retime", action="store_true", help="with --time: time again the runs timed before")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.retime and not args.time:  # it would only erase the timings kept
        p.error("--retime needs --time RUNS")
    from checkpoint import atomic_write

    data_dir, labels = compare.sst2_dev(args.data_dir)
    rows = load(args.results, labels, set(args.seeds))
    timings = {} if args.retime else timed_before(args.out + ".json")  # {run name: {"1": x, "32": x, "by": ...}}
    timings.update(benched(args.results))
    if args.time:
        time_runs(rows, args.time, data_dir, args.repeats, timings)
    command = "python results/alternatives.py" + (f" --time {args.time}" if args.time else "")
    text, sentence, pairs = report(rows, args.results, timings, command)
    lines = {method: (targets, colour) for method, (_, targets, colour) in METHODS.items()}
    def label(method, targets):  # each line says how many seeds its 2x point is the mean of
        seeds = len(rows[targets[2.0]]["names"]) if targets[2.0] in rows else 0
        return f"{method} (2x: {seeds} seed{'s' * (seeds != 1)})"
    spec = {label(method, targets): (("dense", *targets.values()), colour) for method, (targets, colour) in lines.items()
            if any(prefix in rows for prefix in targets.values())}  # a method with no run yet draws no line
    compare.picture(rows, args.out + ".png", spec, title=f"SST-2 dev, the seeds of {', '.join(map(str, args.seeds))} "
                                                        "that have run: means, and each seed's dot")
    summary = {key: {"what": r["what"], "runs": r["names"], "trained_on": r["devices"], "accuracy": r["acc"],
                     "flops_speedup": r["flops"],
                     "measured_speedup": {bs: [timings.get(n, {}).get(str(bs)) for n in r["names"]] for bs in BATCH_SIZES}}
               for key, r in rows.items()}
    atomic_write(args.out + ".md", lambda path: Path(path).write_text(text))
    atomic_write(args.out + ".json", lambda path: Path(path).write_text(
        json.dumps({"command": command, "rows": summary, "pairs": pairs, "verdict": sentence, "timings": timings},
                   indent=1) + "\n"))
    print(text)


if __name__ == "__main__":
    main()
