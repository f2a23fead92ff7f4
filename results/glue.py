"""
The paper's Table 3 on six GLUE tasks (results/run_glue.sh's runs; SST-2's are results/run_recipe.sh's): for each
task, the 6-layer dense model, the default recipe at 2x and at the paper's speedup for the task, and the first 3
and the first 2 layers trained densely with the recipe's budget, over seeds, beside the paper's figures.

    GLUE_DIR=/path/to/glue python results/glue.py [--runs results/glue] [--sst2-runs results/recipe]
                                                  [--out results/glue]
    # writes OUT.md, OUT.json, OUT_kept.png (tokens kept per layer, the paper's Fig. 4) and OUT_drop.png
    # (the drop from dense against the FLOPs speedup, ours and the paper's)

Rows (each run's name is TASK-RUN-seedS.json; SST-2's are RUN-seedS.json in --sst2-runs):
  - dense: the dense stage of each t20 run (its first stage, evaluated on dev when it ended: the very model the
    skimming stages started from), so the recipe is compared with its own dense model, example by example.
  - recipe at 2x (t20), at the paper's speedup (tpaper; SST-2: t15, target 1.5, the nearest run to the paper's
    1.58), and the 3- and 2-layer models (layers3, layers2: 2x and 3x FLOPs).
A recipe run's drop from dense is from its own dense stage (the tpaper runs' too; OWN_DENSE).
Every metric is computed from the saved dev predictions by data.compute_metrics, the function train.py reports.
Each task's Targets line sets the speedup a --target-speedup run met on its calibration inputs (training inputs) beside
its speedup on dev, and the two samples' mean lengths (input_tokens).
Paired comparisons use the seeds both rows have, trained on one machine (two machines' arithmetic rounds apart, so
a seed trained on each is not the same run; the seeds column names each run's machine):
  - a paired bootstrap over dev examples of the main metric's difference, the seeds pooled: resample the examples
    with replacement (one draw for every seed and both rows) 10,000 times, the metric recomputed on each resample,
    the difference averaged over the seeds; the 2.5th and 97.5th percentiles are the 95% interval. For accuracy it
    is compare.paired_bootstrap (the same draws), so SST-2's intervals are those of results/sst2_recipe.md.
  - McNemar's exact test per seed, where the main metric is accuracy (compare.mcnemar).
Scores are in points (x100). Our backbone is all-MiniLM-L6-v2 (6 layers, 384 wide), the paper's BERT-base (12
layers, 768 wide): compare the drop from dense and the speedup, not the scores.
"""

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "results"))
import data  # noqa: E402
import compare  # noqa: E402
from compare import mcnemar, paired_bootstrap, spread  # noqa: E402

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
# Table 3, BERT-base, Transkimmer with no padding: (dense, Transkimmer, FLOPs speedup); main metric, points
PAPER = {"cola": (57.8, 58.9, 1.75), "sst2": (93.0, 92.3, 1.58), "mrpc": (88.9, 88.5, 3.13),
         "stsb": (88.6, 87.4, 3.45), "rte": (65.7, 68.9, 2.85), "wnli": (56.3, 56.3, 5.56)}
# Table 3, DistilBERT (6 layers) and DistilBERT + Transkimmer (no padding), as the paper's text extraction reads;
# the speedups are over BERT-base (DistilBERT alone: 1.98x), so over DistilBERT they are these / 1.98
PAPER_DISTIL = {"cola": (55.7, 55.1, 3.52), "sst2": (90.6, 89.5, 5.01), "mrpc": (88.3, 87.8, 9.92),
                "stsb": (87.0, 86.5, 3.47), "rte": (58.8, 59.2, 4.12), "wnli": (53.5, 56.3, 10.41)}
DISTIL_SPEEDUP = 1.98
# (key, what, run prefix, which predictions: the final model's or its dense stage's)
ROWS = [("dense", "dense, 6 layers (each t20 run's dense stage)", "t20", "stage0"),
        ("recipe2", "recipe at --target-speedup 2", "t20", "final"),
        ("recipepaper", "recipe at the paper's speedup", "tpaper", "final"),
        ("layers3", "first 3 layers, dense, the recipe's budget (2x)", "layers3", "final"),
        ("layers2", "first 2 layers, dense, the recipe's budget (3x)", "layers2", "final")]
SST2_PREFIX = {"t20": "t20", "tpaper": "t15", "layers3": "layers3", "layers2": "layers2"}
PAIRS = [("recipe2", "dense"), ("recipe2", "layers3"), ("layers3", "dense"), ("recipepaper", "dense"),
         ("recipepaper", "layers2")]
# A recipe row against dense is each run against its own dense stage (its first, evaluated when it ended): for t20
# that is the dense row itself; for tpaper (loaded here) it is the same model as t20's of its seed wherever both
# trained on one machine (same_dense counts it), and still the right one where they did not.
OWN_DENSE = (("recipepaper", "tpaper"),)
NEAR_3X = ("mrpc", "stsb", "rte")  # the tasks whose paper speedup (3.13, 3.45, 2.85) is within 15% of layers2's 3x


def seed_of(path):
    return compare.seed_of(Path(path).stem)


def run_paths(task, prefix, runs, sst2_runs):
    if task == "sst2":
        return sorted(Path(sst2_runs).glob(f"{SST2_PREFIX[prefix]}-seed*.json"), key=seed_of)
    return sorted(Path(runs).glob(f"{task}-{prefix}-seed*.json"), key=seed_of)


def over_checkpoint(m, padding):
    """The FLOPs speedup over the 6-layer dense model, with no padding or the paper's sequence padding (a
    --keep-layers model's own dense FLOPs are scaled up to the checkpoint's layers, as recipe.report does)."""
    f = m["flops"]
    dense, ran = f[padding]["dense"], f[padding]["skim"]
    layers, whole = m["args"].get("keep_layers"), m["args"].get("checkpoint_layers")
    if layers and whole:
        dense = (dense - f["head"]) * whole / len(layers) + f["head"]
    return dense / ran


def machine_of(m):
    """Where a run trained, in short: the processor or GPU its stages record ("Intel Xeon", "AMD EPYC"; two joined
    by " + " for a run resumed elsewhere), else its --device (the runs made before stages recorded it)."""
    names = {re.sub(r"\(R\)|\(TM\)| Processor|\s+(?=\s)", "", line.split(",")[0]).strip()
             for stage in m["stages"] for line in stage.get("machines") or []}
    return " + ".join(sorted(names)) or m["args"].get("device", "cpu")


def load_row(task, labels, prefix, which, runs, sst2_runs):
    """[{seed, preds, metrics, speedup, speedup_seq, measured, kept, train_minutes, calibrated, args, device,
    machine}] over the row's runs (calibrated: the speedup a --target-speedup run ended at on its calibration
    inputs)."""
    out = []
    for path in run_paths(task, prefix, runs, sst2_runs):
        m = json.loads(path.read_text())
        if which == "stage0":
            stage = m["stages"][0]
            preds, speedup, speedup_seq, measured = stage["dev"]["predictions"], 1.0, None, 1.0
            kept, minutes, calibrated = stage["dev"]["kept_fraction"], stage["train_seconds"] / 60, None
        else:
            preds, speedup, speedup_seq = m["predictions"], over_checkpoint(m, "none"), over_checkpoint(m, "sequence")
            measured, kept, minutes = m.get("measured_speedup"), m["flops"]["kept_fraction"], m["train_seconds"] / 60
            calibrated = m["stages"][-1].get("calibrated_speedup")
        if len(preds) != len(labels):
            raise SystemExit(f"{path}: {len(preds)} predictions, but {task}'s dev set has {len(labels)} examples")
        preds = np.asarray(preds)
        out.append({"seed": seed_of(path), "preds": preds, "speedup": speedup, "speedup_seq": speedup_seq,
                    "metrics": {k: 100 * v for k, v in data.compute_metrics(data.get_task(task), preds, labels).items()},
                    "measured": measured, "kept": kept, "train_minutes": minutes, "timing": m.get("timing"),
                    "calibrated": calibrated, "args": m["args"],
                    "device": m["args"].get("device", "cpu"), "machine": machine_of(m)})
    return out


def metric_bootstrap(name, a_preds, b_preds, labels, resamples=10_000, seed=0):
    """The paired bootstrap of the docstring: (A - B, low, high) in points for metric `name`, seeds pooled."""
    if name == "accuracy":
        return paired_bootstrap([p == labels for p in a_preds], [p == labels for p in b_preds], resamples, seed)
    metric = data.METRICS[name]
    diff = lambda idx: statistics.fmean(metric(a[idx], labels[idx]) - metric(b[idx], labels[idx])  # noqa: E731
                                        for a, b in zip(a_preds, b_preds))
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    values = [diff(idx) for idx in draws]
    low, high = np.percentile(values, [2.5, 97.5])
    return 100 * diff(np.arange(len(labels))), 100 * low, 100 * high


def seed_pairs(a, b):
    """[(run of a, run of b)] for the seeds both rows have, trained on one machine: the one rule of what pairs."""
    b_by_seed = {r["seed"]: r for r in b}
    return [(r, b_by_seed[r["seed"]]) for r in a
            if r["seed"] in b_by_seed and b_by_seed[r["seed"]]["machine"] == r["machine"]]


def compare_rows(task, a, b, labels):
    """The paired comparison of two rows over the seeds both have on one machine, or None (nothing to pair)."""
    main = data.get_task(task).main_metric
    pairs = seed_pairs(a, b)
    if not pairs:
        return None
    diff, low, high = metric_bootstrap(main, [x["preds"] for x, _ in pairs], [y["preds"] for _, y in pairs], labels)
    per_seed = [{"seed": x["seed"], "diff": x["metrics"][main] - y["metrics"][main]} for x, y in pairs]
    if main == "accuracy":
        for entry, (x, y) in zip(per_seed, pairs):
            entry["b"], entry["c"], entry["p"] = mcnemar(x["preds"] == labels, y["preds"] == labels)
    return {"seeds": [x["seed"] for x, _ in pairs], "diff": diff, "low": low, "high": high, "per_seed": per_seed}


def pair_rows(task, rows, own, labels):
    """{"A vs B": compare_rows(...)} for the PAIRS both sides of which have runs; a row of `own` (the recipe at the
    paper's speedup) against dense is paired with its own runs' dense stages (own[A]), any other row with the dense
    row (which is the recipe at 2x's own)."""
    partner = lambda a, b: own[a] if b == "dense" and own.get(a) else rows.get(b)  # noqa: E731
    return {f"{a} vs {b}": c for a, b in PAIRS if a in rows and partner(a, b) and (b != "layers2" or task in NEAR_3X)
            and (c := compare_rows(task, rows[a], partner(a, b), labels))}


def summary(row, task):
    """Mean and standard deviation over the seeds of each metric and speedup of a row."""
    t = data.get_task(task)
    names = (t.main_metric,) + tuple(m for m in t.metrics if m != t.main_metric)
    s = {name: spread([r["metrics"][name] for r in row]) for name in names}
    for key in ("speedup", "speedup_seq", "calibrated", "measured", "train_minutes"):  # time: of the CPU runs alone
        values = [r[key] for r in row if r[key] is not None and (key in ("speedup", "speedup_seq", "calibrated")
                                                                    or r["device"] == "cpu")]
        s[key] = spread(values) if values else None
    s["kept"] = list(np.mean([r["kept"] for r in row], axis=0))
    s["seeds"], s["where"] = [r["seed"] for r in row], seeds_where(row)
    return s


def tokens_per_input(batches):
    """Each input's tokens in padded batches, [CLS] and [SEP] counted, padding not: the lengths that the Targets
    lines (input_tokens) and results/speedup_by_length.py average."""
    return [int(n) for b in batches for n in b["attention_mask"].sum(1)]


def input_tokens(task, data_dir, args):
    """{"calibration": tokens, "dev": tokens, "examples": n}: the mean tokens per input ([CLS] and [SEP] counted) of
    the n training inputs on which a --target-speedup run of `task` with these args (its JSON's) calibrated its keep
    threshold (recipe.calibration_sample, the very sample train.py draws, from the held-out slice where the run
    held one out), and of dev, with the run's tokenizer. A run meets its target on the first; dev is another sample,
    and a model's speedup moves with its inputs' lengths (results/speedup_by_length.py measures how)."""
    import types
    import checkpoint
    import recipe
    t = data.get_task(task)
    folder = data.find_data_dir(t, data_dir, download=False)
    train, dev = data.read_split(t, "train", folder), data.read_split(t, t.dev_splits[0], folder)
    tokenizer, length = checkpoint.load_tokenizer(args.get("checkpoint") or args.get("model")), args["max_seq_length"]
    train, held = data.training_rows(train, args.get("holdout"), args.get("max_train_samples"))
    encode = lambda examples: data.encode(tokenizer, examples, length)  # noqa: E731
    settings = types.SimpleNamespace(batch_size=args["batch_size"], device="cpu")
    lengths = tokens_per_input(recipe.calibration_sample(train, encode(train), held, encode(held), settings))
    dev_lengths = tokens_per_input(data.batches(encode(dev), args["batch_size"]))
    return {"calibration": statistics.fmean(lengths), "dev": statistics.fmean(dev_lengths), "examples": len(lengths)}


def calibration_text(s, inputs):
    """A task's line on its targets: on the calibration inputs and on dev, and the two samples' lengths."""
    runs = [(what, s[key]) for key, what in (("recipe2", "at 2x"), ("recipepaper", "at the paper's speedup"))
            if key in s and s[key]["calibrated"]]
    if not runs or inputs is None:
        return None
    shift = 100 * (inputs["dev"] / inputs["calibration"] - 1)
    return (f"Targets: a `--target-speedup` run sets its keep threshold where the model meets the target on "
            f"{inputs['examples']} training inputs of {inputs['calibration']:.1f} tokens on average "
            f"(`recipe.calibration_batches`); dev's inputs average {inputs['dev']:.1f} ({shift:+.1f}%), and a model's "
            "speedup moves with its inputs' lengths (`results/speedup_by_length.py`). FLOPs speedup on the "
            "calibration inputs, then on dev: "
            + "; ".join(f"{what} {fmt(x['calibrated'], unit='x')}, {fmt(x['speedup'], unit='x')}" for what, x in runs)
            + ".")


def same_dense(a, b):
    """(equal, of): of the seeds two rows of dense stages have on one machine, how many give the same dev
    predictions."""
    both = seed_pairs(a, b)
    return sum(bool(np.array_equal(x["preds"], y["preds"])) for x, y in both), len(both)


def seeds_where(row):
    """"42, 43 (Intel Xeon); 44 (AMD EPYC)": a row's seeds, grouped by the machine each trained on."""
    machines = list(dict.fromkeys(r["machine"] for r in row))
    return "; ".join(", ".join(str(r["seed"]) for r in row if r["machine"] == where) + f" ({where})"
                     for where in machines)


def drop(pairs, key):
    """The drop from dense of row `key` (dense - key, points), paired: the mean over the seeds both rows have on one
    machine of the per-seed difference (the paired table's A - B, negated), or None where no seed pairs. The goal,
    the summary table, the GLUE-wide average and the figure all show this one number; a difference of row means
    would set a recipe of seed 42 against a dense model averaged over seeds it never ran."""
    c = pairs.get(f"{key} vs dense")
    return None if c is None else 0.0 - c["diff"]  # 0.0 - x: no "-0.00" for a drop of nothing


def told_apart(c):
    """A paired comparison's verdict: True (its 95% interval above 0), False (below 0) or "level" (it holds 0)."""
    return True if c["low"] > 0 else False if c["high"] < 0 else "level"


def goals(task, s, pairs):
    """The issue's goals for one task, each True (met), False (missed), "level" (a difference its paired interval
    does not tell apart from 0) or None (not judged: the spread of a dense model of one seed), and absent where a row
    has no runs or no seed pairs: at 2x, within the seed-to-seed spread of the dense model (its mean less one
    standard deviation) and above the 3-layer model (the paired 95% interval above 0); at the paper's speedup, a
    drop from dense (paired) no larger than the paper's."""
    main = data.get_task(task).main_metric
    out = {}
    if "recipe2" in s and "dense" in s:
        r, d = s["recipe2"], s["dense"]
        out["at 2x: FLOPs speedup >= 2.0 (3% tolerance, mean)"] = r["speedup"][0] >= 2.0 * 0.97
        out["at 2x: within dense's seed-to-seed spread"] = (None if d[main][1] is None
                                                             else r[main][0] >= d[main][0] - d[main][1])
    if (c := pairs.get("recipe2 vs layers3")) is not None:
        out["at 2x: above the 3-layer model"] = told_apart(c)
    if (ours := drop(pairs, "recipepaper")) is not None:
        paper = PAPER[task][0] - PAPER[task][1]
        out[f"at the paper's speedup: drop {ours:+.2f} <= the paper's {paper:+.2f}"] = ours <= paper
    return out


def fmt(ms, digits=2, unit=""):
    """"mean ± std" of spread(), "—" for nothing, and for one value the value alone (every table has a seeds
    column)."""
    if ms is None:
        return "—"
    if ms[1] is None:
        return f"{ms[0]:.{digits}f}{unit}"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}{unit}"


VERDICT = {True: "met", False: "MISSED", None: "not judged yet (dense has one seed)",
           "level": "MISSED, level (the paired 95% interval holds 0)"}


def report(results, command):
    lines = ["# GLUE: the paper's Table 3, on all-MiniLM-L6-v2\n", f"Made by `{command}` from `results/glue/*.json` "
             "(SST-2: `results/recipe/*.json`); the runs by `results/run_glue.sh` and `results/run_recipe.sh`. "
             "Scores in points; mean ± std over the seeds listed (one seed: its value alone); FLOPs speedups over "
             "the 6-layer dense model. "
             "Compare the drop from dense and the speedup with the paper's, not the scores: its backbone is "
             "BERT-base (12 layers, 768 wide). The measured CPU speedup is train.py's own, at each run's end "
             "(`flops.measure_speedup`: the infer path against the dense infer, batch 32, median of 3 passes over dev, at the "
             "run's threads; each JSON's `timing` and `machine`), not a quiet benchmark: another run may have "
             "trained beside it. Train minutes: of the runs on a CPU.\n",
             "Each task's first metric is the paper's: MRPC's column is F1 (its BERT-base 88.9 is Hugging Face "
             "run_glue's published F1, 88.85; its accuracy there is 84.07), STS-B's Pearson (88.6: 88.64), RTE's and "
             "WNLI's accuracy (65.7 and 56.3: 65.70 and 56.34), CoLA's Matthews correlation and SST-2's accuracy by "
             "GLUE's definition. MRPC's rows were reported in accuracy before; the runs are the same.\n"]
    equal, of = (sum(results[t]["same_dense"][i] for t in TASKS) for i in (0, 1))
    lines += ["Pairs: seeds are paired only where both rows trained on one machine. A recipe run is set against its "
              "own dense stage: for the recipe at 2x, the dense row; at the paper's speedup, its own run's, which is "
              f"the dense row's model, prediction for prediction, in {equal} of the {of} seeds where both trained on "
              "one machine.\n"]
    for task in TASKS:
        r = results[task]
        s, main = r["summary"], data.get_task(task).main_metric
        t = data.get_task(task)
        names = (main,) + tuple(m for m in t.metrics if m != main)
        pd, pt, ps = PAPER[task]
        dd, dt, dsp = PAPER_DISTIL[task]
        lines += [f"## {task}\n", f"Paper (BERT-base, no padding): dense {pd}, Transkimmer {pt} at {ps}x (drop "
                  f"{pd - pt:+.1f}). DistilBERT {dd}, + Transkimmer {dt} at {dsp / DISTIL_SPEEDUP:.2f}x over DistilBERT "
                  f"(drop {dd - dt:+.1f})."
                  + (" Our row at the paper's speedup is the recipe at target 1.5 (`t15`), the nearest run to 1.58."
                     if task == "sst2" else "") + "\n",
                  f"| model | seeds | {' | '.join(names)} | FLOPs speedup (no padding) | with padding to {t.max_seq_length} | "
                  "measured CPU speedup | kept per layer | train minutes (CPU) |",
                  "|---|---|" + "---|" * len(names) + "---|---|---|---|---|"]
        for key, what, *_ in ROWS:
            if key not in s:
                lines.append(f"| {what} | not run yet |" + " |" * (len(names) + 5))
                continue
            x = s[key]
            lines.append(f"| {what} | {x['where']} | "
                         + " | ".join(fmt(x[n]) for n in names)
                         + f" | {fmt(x['speedup'], unit='x')} | {fmt(x['speedup_seq'], unit='x')} | {fmt(x['measured'], unit='x')} | "
                         + " ".join(f"{k:.2f}" for k in x["kept"]) + f" | {fmt(x['train_minutes'], 1)} |")
        if (text := calibration_text(s, r.get("inputs"))) is not None:
            lines += ["", text]
        if r["pairs"]:
            mcnemar_key = "; b : c = examples only A : only B gets right, McNemar's p" if main == "accuracy" else ""
            lines += ["", f"Paired on the dev examples ({main}, A - B in points{mcnemar_key}):", "",
                      "| A vs B | seeds | per seed | A - B [95% bootstrap interval] |", "|---|---|---|---|"]
            for name, c in r["pairs"].items():
                per = "; ".join(f"{e['diff']:+.2f}" + (f", {e['b']} : {e['c']}, p = {e['p']:.2f}" if "p" in e else "")
                                for e in c["per_seed"])
                lines.append(f"| {name} | {', '.join(map(str, c['seeds']))} | {per} | {c['diff']:+.2f} "
                             f"[{c['low']:+.2f}, {c['high']:+.2f}] |")
        if r["goals"]:
            lines += ["", "Goals: " + "; ".join(f"{g}: {VERDICT[ok]}" for g, ok in r["goals"].items())]
        lines.append("")
    lines += ["## All six tasks\n", "The README's GLUE table is rows of this one, copied as they are "
              "(`tests/test_glue_report.py` checks it). Bold: a paired 95% interval that does not hold 0.\n",
              SUMMARY_HEAD, "|---|---|---|---|---|---|---|"]
    lines += [summary_line(task, results[task]) for task in TASKS if "recipe2" in results[task]["summary"]]
    lines += ["", "Its drop: dense less the recipe at the paper's speedup on the seeds both were run with (the paired "
              "table's), not the difference of the two columns where their seeds differ."]
    done = [t for t in TASKS if drop(results[t]["pairs"], "recipepaper") is not None]
    if done:
        lines += ["", f"Over {len(done)} of the six tasks ({', '.join(done)}; each task's drop over its paired seeds): "
                  + average_drops(results, done) + "."]
    if "wnli" in done and len(done) > 1:
        rest = [t for t in done if t != "wnli"]
        lines += ["", f"Without WNLI, whose dev set is adversarial (a model that stops reading its input scores "
                  f"higher there, so a drop below 0 is no gain), over {', '.join(rest)}: {average_drops(results, rest)}."]
    return "\n".join(lines) + "\n"


SUMMARY_HEAD = ("| task (metric) | seeds | dense | recipe, 2x | first 3 layers, 2x | recipe - 3 layers (paired) | "
                "drop at the paper's speedup (the paper's) |")


def seed_text(seeds):
    """"42-44, 46": seeds, consecutive ones as a range."""
    runs = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def summary_line(task, r):
    """One task's row of the summary table (and of the README's): the seeds of the recipe at 2x (a row trained on
    other seeds says which), dense, the recipe and the 3 layers at 2x, the recipe less the 3 layers (paired, bold where
    its interval does not hold 0) and the recipe's paired drop at the paper's speedup, the paper's beside it."""
    t, s, pairs = data.get_task(task), r["summary"], r["pairs"]
    seeds = s["recipe2"]["seeds"]

    def cell(key):
        if key not in s:
            return "—"
        other = "" if s[key]["seeds"] == seeds else f" (seeds {seed_text(s[key]['seeds'])})"
        return fmt(s[key][t.main_metric]) + other
    c = pairs.get("recipe2 vs layers3")
    versus = "—" if c is None else f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"
    if c is not None and told_apart(c) != "level":
        versus = f"**{versus}**"
    pd, pt, ps = PAPER[task]
    ours = drop(pairs, "recipepaper")
    paired = pairs.get("recipepaper vs dense", {}).get("seeds", [])
    drop_text = "—" if ours is None else (f"{ours:+.2f} at {s['recipepaper']['speedup'][0]:.2f}x, "
                                          f"seed{'s' * (len(paired) > 1)} {seed_text(paired)}")
    metric = {"matthews": "Matthews", "pearson": "Pearson"}.get(t.main_metric, t.main_metric)
    return (f"| {t.dir_name} ({metric}) | {seed_text(seeds)} | {cell('dense')} | "
            f"{cell('recipe2')} | {cell('layers3')} | {versus} | {drop_text} ({pd - pt:+.1f} at {ps}x) |")


def average_drops(results, tasks):
    """"our average drop ... the paper's ...": the drop from dense at the paper's speedup (paired: drop()), and that
    speedup, averaged over `tasks`, ours beside the paper's."""
    ours = [drop(results[t]["pairs"], "recipepaper") for t in tasks]
    speed = [results[t]["summary"]["recipepaper"]["speedup"][0] for t in tasks]
    return (f"our average drop at the paper's speedups {statistics.fmean(ours):+.2f} points at "
            f"{statistics.fmean(speed):.2f}x on average; the paper's on the same tasks "
            f"{statistics.fmean(PAPER[t][0] - PAPER[t][1] for t in tasks):+.2f} at "
            f"{statistics.fmean(PAPER[t][2] for t in tasks):.2f}x")


def pictures(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from checkpoint import atomic_write

    def save(fig, ax, path):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside: it hid a point
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, format="png"))
        plt.close(fig)

    colours = dict(zip(TASKS, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for task in TASKS:
        if "recipe2" in results[task]["summary"]:
            kept = results[task]["summary"]["recipe2"]["kept"]
            ax.plot(range(1, len(kept) + 1), kept, marker="o", color=colours[task], label=task)
    ax.set(xlabel="layer", ylabel="fraction of tokens processed", ylim=(0, 1.05),
           title="Tokens kept per layer, the recipe at 2x (mean over seeds)")
    save(fig, ax, f"{out}_kept.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for task in TASKS:
        s, pairs = results[task]["summary"], results[task]["pairs"]
        points = [(s[k]["speedup"][0], drop(pairs, k)) for k in ("recipe2", "recipepaper")
                  if drop(pairs, k) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color=colours[task], label=f"{task}, ours")
        pd, pt, ps = PAPER[task]
        ax.scatter([ps], [pd - pt], marker="s", facecolors="none", edgecolors=colours[task],
                   label=f"{task}, paper")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="FLOPs speedup (no padding)", ylabel="drop from dense (points; below 0: a gain)",
           title="Ours (dots: 2x and the paper's speedup) and the paper's (squares)")
    save(fig, ax, f"{out}_drop.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--runs", default=str(ROOT / "results" / "glue"), help="folder of TASK-RUN-seedS.json")
    p.add_argument("--sst2-runs", default=str(ROOT / "results" / "recipe"), help="folder of SST-2's RUN-seedS.json")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--out", default=str(ROOT / "results" / "glue"), help="writes OUT.md, OUT.json, OUT_*.png")
    args = p.parse_args(argv)
    from checkpoint import atomic_write

    results = {}
    for task in TASKS:
        t = data.get_task(task)
        try:
            labels = np.array([e.label for e in data.read_split(t, "dev", data.find_data_dir(t, args.data_dir,
                                                                                              download=False))])
        except data.DataError as e:
            raise SystemExit(f"error: {e}")
        rows = {key: row for key, _, prefix, which in ROWS
                if (row := load_row(task, labels, prefix, which, args.runs, args.sst2_runs))}
        own = {key: load_row(task, labels, prefix, "stage0", args.runs, args.sst2_runs) for key, prefix in OWN_DENSE}
        s = {key: summary(row, task) for key, row in rows.items()}
        pairs = pair_rows(task, rows, own, labels)
        target_runs = rows.get("recipe2") or rows.get("recipepaper")
        try:
            inputs = input_tokens(task, args.data_dir, target_runs[0]["args"]) if target_runs else None
        except data.DataError as e:  # a malformed training file: one line, no traceback
            raise SystemExit(f"error: {e}")
        results[task] = {"summary": s, "pairs": pairs, "goals": goals(task, s, pairs), "inputs": inputs,
                         "same_dense": same_dense(rows.get("dense", []), own["recipepaper"]),
                         "runs": {k: [{x: v for x, v in r.items() if x not in ("preds", "args")} for r in row]
                                  for k, row in rows.items()}}
    command = "GLUE_DIR=/path/to/glue python results/glue.py" + (" " + " ".join(argv) if argv else "")
    text = report(results, command)
    atomic_write(f"{args.out}.md", lambda f: Path(f).write_text(text))
    atomic_write(f"{args.out}.json", lambda f: Path(f).write_text(json.dumps(
        {"command": command, "paper": PAPER, "paper_distilbert": PAPER_DISTIL, "tasks": results}, indent=1,
        default=float) + "\n"))
    pictures(results, args.out)
    print(text)


if __name__ == "__main__":
    main()
