"""
The verdict on the one-command recipe (results/run_recipe.sh's runs): each model's SST-2 dev accuracy over
seeds (mean and standard deviation), its speedup, and a paired comparison, sentence by sentence, of the
recipe at target 2 with the dense model and with the first 3 layers trained densely; the recipe at targets
1.5 and 3 with the first 4 and the first 2 layers (the same FLOPs, densely); and the recipe whose skim
stage is steered on whole sentences (train.py --steer-every) with the recipe of the same seed.

    GLUE_DIR=/path/to/glue python results/compare.py [--runs results/recipe] [--out results/sst2_recipe]
                                       # writes OUT.md, OUT.json and OUT.png (accuracy against speedup)
    ... --time runs        # also time the saved models (runs/sst2-recipe-NAME/) on this machine, those OUT.json
                           # has no timing for yet (--retime: all of them again, as after retraining a run)
    python results/compare.py --pair A/metrics.json B/metrics.json   # any two runs on SST-2 dev
    python results/compare.py --paired results/reference/hf-full results/reference/ours-full
                           # two models over seeds: A-seedS.json against B-seedS.json, for each seed both have

Every model is trained and scored on the same 872 dev sentences, so two models are compared on the
sentences where one is right and the other wrong:
  - McNemar's exact test, per seed: of the n sentences on which the two disagree, is the split b : c
    (A right : B right) unlikely under "each is right on half of them"? Two-sided binomial p.
  - A paired bootstrap over sentences, for the difference of the mean accuracy over seeds: resample the
    872 sentences with replacement (the same draw for every seed and both models) 10,000 times; the
    2.5th and 97.5th percentiles of the difference are the 95% interval. It keeps the pairing, so the
    sentences that are hard for both do not widen it.
The dense model of seed s is the dense stage of the recipe run with seed s: the first stage of the same
run, evaluated when it ended (train.py records its predictions), so it is the very model the skimming
stages started from. Likewise the skim stage of each run, scored at the threshold calibrated to the
target before the frozen stage began: recipe vs skimstage is what the frozen stage adds, per seed.

Speedups: "FLOPs" is flops.py's speedup with no padding (the 3-layer model: its FLOPs against the
6-layer checkpoint's). "measured" needs --time: flops.measure_speedup, the function behind train.py's
"measured" too: each saved model's packed inference path (model.infer: [CLS] alone in the last layer,
flops.py's "cls" convention) against the 6-layer dense model's, over the dev set at --batch-size, the
median of --repeats passes taken in turns with it.
Goals (results/log.md): at target 2 the dev speedup within 3% of 2 and the mean accuracy within 0.5
points of the dense mean and above the 3-layer model's mean; at 1.5 and 3, the speedup within 3%.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import data  # noqa: E402

ROWS = [  # (key, what, runs: every PREFIX-seedS.json there is, which predictions: the final model's, stage 0's,
          #  or stage 1's at the target)
    ("dense", "dense, 6 layers, 1 epoch (each recipe run's first stage)", "t20", "stage0"),
    ("recipe", "recipe at --target-speedup 2 (the default command)", "t20", "final"),
    ("skimstage", "the same runs' skim stage, at the threshold calibrated to 2 (no frozen stage)", "t20", "stage1"),
    ("layers3", "first 3 layers, dense, 2 epochs (--keep-layers 3)", "layers3", "final"),
    ("steered", "recipe at target 2, its skim stage steered on whole sentences (--steer-every 50)", "t20s", "final"),
    ("recipe15", "recipe at --target-speedup 1.5", "t15", "final"),
    ("layers4", "first 4 layers, dense, 2 epochs (--keep-layers 4: 1.5x)", "layers4", "final"),
    ("recipe30", "recipe at --target-speedup 3", "t30", "final"),
    ("layers2", "first 2 layers, dense, 2 epochs (--keep-layers 2: 3x)", "layers2", "final"),
]
TARGETS = {"recipe": 2.0, "steered": 2.0, "recipe15": 1.5, "recipe30": 3.0}
CURVES = {  # the picture's two lines, each through its rows in order of speedup, and its colour
    "the recipe, at targets 1.5, 2 and 3": (("recipe15", "recipe", "recipe30"), "tab:green"),
    "dense, 6 layers, then the first 4, 3 and 2 layers": (("dense", "layers4", "layers3", "layers2"), "tab:grey"),
}
PAIRS = [("recipe", "dense"), ("recipe", "layers3"), ("layers3", "dense"), ("recipe", "skimstage"),
         ("steered", "recipe"), ("steered", "layers3"),
         ("recipe15", "dense"), ("recipe15", "layers4"), ("recipe30", "dense"), ("recipe30", "layers2")]


def seed_of(name):
    """The seed in a run's name ("t20-seed43" -> 43): a pair compares the runs of the seeds both rows have."""
    return int(name.rsplit("-seed", 1)[1])


def mcnemar(a_right, b_right):
    """Exact McNemar test of two models' correctness on the same examples: (b, c, p), b = examples only A
    gets right, c = only B; p = two-sided binomial probability of a split at least this uneven."""
    a_right, b_right = np.asarray(a_right, bool), np.asarray(b_right, bool)
    b, c = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return b, c, min(1.0, 2 * tail)


def paired_bootstrap(a_right, b_right, resamples=10_000, seed=0):
    """a_right, b_right: (seeds, examples) correctness, seed i of A paired with seed i of B. Returns the
    difference of mean accuracy (A - B, in points) and its 95% bootstrap interval over examples."""
    a, b = np.atleast_2d(np.asarray(a_right, float)), np.atleast_2d(np.asarray(b_right, float))
    per_example = (a - b).mean(0)                                                   # (examples,)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_example), size=(resamples, len(per_example)))
    means = per_example[draws].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * per_example.mean(), 100 * low, 100 * high


def mean_std(values):
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def spread(values):
    """(mean, sample standard deviation), the deviation None for one value: one run has no spread, not one of 0."""
    mean, std = mean_std(values)
    return mean, std if len(values) > 1 else None


def mean_std_text(values):
    """"mean ± std" in points, or "value (one seed)" (spread)."""
    mean, std = spread(values)
    return f"{mean:.2f} (one seed)" if std is None else f"{mean:.2f} ± {std:.2f}"


def stage_dev(m, which):
    """A recipe run's dev record of its dense stage ("stage0"), or of its skim stage at the threshold
    calibrated to the target ("stage1"; None in runs made before train.py scored it there)."""
    if which == "stage0":
        return m["stages"][0]["dev"]
    return m["stages"][1].get("dev_at_target") if len(m["stages"]) > 1 else None


def correct(preds, labels, where):
    """(examples,) bool: which dev sentences `preds` (read from the file `where`) gets right."""
    if len(preds) != len(labels):
        raise SystemExit(f"{where}: {len(preds)} predictions, but the dev set has {len(labels)} examples")
    return np.asarray(preds) == labels


def final_correct(path, labels):
    """correct() of the final dev predictions in the metrics.json at `path`."""
    return correct(json.loads(Path(path).read_text())["predictions"], labels, path)


def common_seeds(a_by_seed, b_by_seed):
    """Two {seed: correctness} dicts -> (the seeds both have, in order, A's and B's correctness on them)."""
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    return seeds, [a_by_seed[s] for s in seeds], [b_by_seed[s] for s in seeds]


def run_names(runs_dir, prefix, seeds=None):
    """The runs of a row: every PREFIX-seedS.json in runs_dir (S in `seeds`, if given), as names in order of seed."""
    names = (p.stem for p in Path(runs_dir).glob(f"{prefix}-seed*.json"))
    return sorted((n for n in names if seeds is None or seed_of(n) in seeds), key=seed_of)


def load_rows(runs_dir, labels, seeds=None, specs=ROWS):
    """{key: {"what", "names", "right": (seeds, examples) bool, "acc": [...], "flops": [...], "devices": [...]}}
    for every row of `specs` (ROWS' form) that has runs (all of them holding the stage the row reads); other
    rows are left out."""
    rows = {}
    for key, what, prefix, which in specs:
        names = run_names(runs_dir, prefix, seeds)
        paths = [Path(runs_dir) / f"{name}.json" for name in names]
        if not paths:
            continue
        right, accs, speedups, devices, args = [], [], [], [], []
        for p in paths:
            m = json.loads(p.read_text())
            if which in ("stage0", "stage1"):
                dev = stage_dev(m, which)
                if dev is None:
                    break
                preds, speedup = dev["predictions"], dev["flops_speedup"]
            else:
                preds = m["predictions"]
                speedup = m.get("flops_speedup_over_checkpoint") or m["flops"]["none"]["speedup"]
            right.append(correct(preds, labels, p))
            accs.append(float(100 * right[-1].mean()))
            speedups.append(speedup)
            devices.append(m.get("args", {}).get("device", "cpu"))
            args.append(m.get("args", {}))
        else:
            rows[key] = {"what": what, "names": names, "right": np.array(right), "acc": accs, "flops": speedups,
                         "devices": devices, "args": args}
    return rows


def saved_model(folders, prefixes, name):
    """The folder under `folders` that holds run `name`'s model (PREFIX + name, the first of `prefixes` that has
    one), or None: the run was trained on another machine."""
    return next((Path(folders) / f"{p}{name}" for p in prefixes
                 if (Path(folders) / f"{p}{name}" / "model.safetensors").exists()), None)


def stand_in(args, cache, num_labels=2):
    """For timing only, a dense run's model rebuilt from the checkpoint it started from, cut to its --keep-layers:
    the time of a dense model does not depend on its weights. None for a run that skims (its time does). The
    runs of one checkpoint and the same layers get the one model, kept in `cache`."""
    import methods
    import model
    stages = args.get("stages")
    if not stages or args.get("method") not in (None, "dense") or any(stage[0] != "dense" for stage in stages):
        return None
    like = (args.get("model"), str(args.get("keep_layers")))
    if like not in cache:
        dense = model.BertForSequenceClassification.from_pretrained(args.get("model"), num_labels=num_labels)
        cache[like] = methods.Dense(model.keep_layers(dense, args["keep_layers"]) if args.get("keep_layers") else dense)
    return cache[like]


def models_here(rows, folders, specs=ROWS, prefixes=("sst2-recipe-",), stand_ins=False, skip=()):
    """({run name: model}, the 6-layer dense model to measure them against) for the rows' runs whose model is
    saved under `folders` as PREFIX + name (the first of `prefixes` that has it); a run whose model is not here
    is left out, unless `stand_ins` and it is dense: then its stand_in is there, one for all the runs of the same
    checkpoint and layers. The runs in `skip` (timed before) are not loaded. The reference is the encoder and
    classifier of the first method's model, every token kept; none (and no models) if no method's model is here."""
    import methods
    models, shared = {}, {}  # run name: its model; the stand-ins made (stand_in's cache)
    for key, *_, which in specs:
        if which == "final" and key in rows:  # the rows whose model is the run's saved one
            for name, args in zip(rows[key]["names"], rows[key].get("args") or [{}] * len(rows[key]["names"])):
                if name in skip:
                    continue
                saved = saved_model(folders, prefixes, name)
                model = methods.load_saved(saved) if saved else stand_in(args, shared) if stand_ins else None
                if model is not None:
                    models[name] = model
    reference = next((m.bert for m in models.values() if not isinstance(m, methods.Dense)), None)
    return (models, reference) if reference is not None else ({}, None)


def dev_batches(data_dir, batch_size):
    """SST-2 dev, tokenized by the default checkpoint's tokenizer and batched in order, as the timings take it."""
    from checkpoint import load_tokenizer
    task = data.get_task("sst2")
    dev = data.encode(load_tokenizer(None), data.read_split(task, "dev", data_dir), task.max_seq_length)
    return list(data.batches(dev, batch_size))


def time_models(rows, folders, data_dir, batch_size, repeats, specs=ROWS, prefixes=("sst2-recipe-",), skip=(),
                stand_ins=False):
    """Measured speedup of each of models_here over its dense reference, packed inference path, on SST-2 dev at
    `batch_size`: {run name: speedup}, for the runs not in `skip` (timed before)."""
    models, reference = models_here(rows, folders, specs, prefixes, stand_ins, skip)
    return time_loaded(models, reference, dev_batches(data_dir, batch_size) if models else [], repeats)


def time_loaded(models, reference, batches, repeats, skip=()):
    """time_models on models already loaded ({run name: model}, models_here's): a shared stand-in is timed once."""
    import flops
    speedups = {}  # id(model): its measured speedup
    for name, m in models.items():
        if name not in skip and id(m) not in speedups:
            speedups[id(m)] = flops.measure_speedup(m, batches, repeats, dense=reference)["measured_speedup"]
    return {name: speedups[id(m)] for name, m in models.items() if name not in skip}


def executed_flops_speedup(model, reference, batches):
    """The FLOPs speedup of what the timed paths compute, to read a measured speedup against: flops.py's count, no
    padding, under its "cls" convention (every `infer` computes the last layer for [CLS] alone), of `model`'s
    decisions on `batches`, over the dense `reference` run the same way. Below the table's FLOPs speedup for a
    method that skims in the last layer, where the dense model does little work either."""
    import torch

    import methods
    ours, dense = model.flops_counter(last_layer="cls"), methods.Dense(reference).flops_counter(last_layer="cls")
    L = reference.config.num_hidden_layers
    with torch.inference_mode():
        for b in batches:
            out = model.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            ours.add(out.masks, b["attention_mask"])
            dense.add([b["attention_mask"].float()] * L, b["attention_mask"])
    return dense.summary()["none"]["dense"] / ours.summary()["none"]["skim"]


def verdict(rows):
    """The goals, each True (met), False (missed) or None (its runs are not all there)."""
    goals = {}
    for key, target in TARGETS.items():
        if key in rows:
            goals[f"{key}: dev speedup within 3% of {target}"] = all(abs(s / target - 1) <= 0.03
                                                                       for s in rows[key]["flops"])
    if "recipe" in rows and "dense" in rows:
        goals["recipe: mean accuracy within 0.5 points of dense"] = \
            mean_std(rows["recipe"]["acc"])[0] >= mean_std(rows["dense"]["acc"])[0] - 0.5
    if "recipe" in rows and "layers3" in rows:
        goals["recipe: mean accuracy above the 3-layer model's"] = \
            mean_std(rows["recipe"]["acc"])[0] > mean_std(rows["layers3"]["acc"])[0]
    return goals


def timed_before(path):
    """The measured speedups an earlier run of this script wrote to `path`: ({run name: speedup}, {run name: the
    command that timed it}). A rerun without --time keeps them, so redrawing the table never erases a timing."""
    if not Path(path).exists():
        return {}, {}
    out = json.loads(Path(path).read_text())
    return out.get("timings", {}), out.get("timed_by", {})


def measured_of(key, names, measured):
    """A row's measured speedups: the dense model's is 1 by definition; the saved (final) models were timed;
    a skim stage's model was not saved, so it has none."""
    if key == "dense":
        return [1.0] * len(names)
    return [None if key == "skimstage" else measured.get(n) for n in names]


def report(rows, measured, command, timed_by=None):
    by = "; the measured speedups by `" + "`, `".join(sorted(set(timed_by.values()))) + "`" if timed_by else ""
    lines = [f"# SST-2: the recipe against its baselines\n", f"Made by `{command}` from `results/recipe/*.json`{by}.\n",
             "| model | seeds (trained on) | dev acc, mean ± std | per seed | FLOPs speedup | measured CPU speedup |",
             "|---|---|---|---|---|---|"]
    for key, what, *_ in ROWS:
        if key not in rows:
            lines.append(f"| {what} | not run yet | | | | |")
            continue
        r = rows[key]
        names = r["names"]
        shown = ", ".join(f"{t:.2f}x" for t in measured_of(key, names, measured) if t) or "not timed"
        seeds = ", ".join(str(seed_of(n)) for n in names)
        where = ", ".join(f"{r['devices'].count(d)} {d}" for d in sorted(set(r["devices"])))
        lines.append(f"| {what} | {seeds} ({where}) | {mean_std_text(r['acc'])} | {', '.join(f'{a:.2f}' for a in r['acc'])} | "
                     f"{', '.join(f'{s:.2f}x' for s in r['flops'])} | {shown} |")
    lines += ["", "Paired on the 872 dev sentences (A - B in points; b = sentences only A gets right, c = only B):", "",
              "| A vs B | per seed: A - B, b : c, McNemar p | mean A - B [95% bootstrap interval] |", "|---|---|---|"]
    for a, b in PAIRS:
        if a in rows and b in rows:
            _, a_right, b_right = common_seeds(*(dict(zip(map(seed_of, rows[k]["names"]), rows[k]["right"]))
                                                  for k in (a, b)))
            per_seed = []
            for ra, rb in zip(a_right, b_right):
                nb, nc, p = mcnemar(ra, rb)
                per_seed.append(f"{100 * (ra.mean() - rb.mean()):+.2f}, {nb} : {nc}, p = {p:.2f}")
            diff, low, high = paired_bootstrap(a_right, b_right)
            lines.append(f"| {a} vs {b} | {'; '.join(per_seed)} | {diff:+.2f} [{low:+.2f}, {high:+.2f}] |")
    lines += ["", "Goals:", ""]
    goals = verdict(rows)
    lines += [f"- {name}: {'met' if ok else 'MISSED'}" for name, ok in goals.items()] or ["- no runs yet"]
    return "\n".join(lines) + "\n", goals


def paired_over_seeds(a_prefix, b_prefix, labels):
    """The report of --paired: A-seedS.json against B-seedS.json (final dev predictions), seed by seed
    (McNemar) and over the seeds (mean ± std of each, and the paired bootstrap of the difference)."""
    by_seed = []
    for prefix in (a_prefix, b_prefix):
        folder, stem = Path(prefix).parent, Path(prefix).name
        by_seed.append({seed_of(n): final_correct(folder / f"{n}.json", labels) for n in run_names(folder, stem)})
    seeds, a_right, b_right = common_seeds(*by_seed)
    if not seeds:
        raise SystemExit(f"error: no seed has both a {a_prefix}-seedS.json and a {b_prefix}-seedS.json")
    lines = [f"A = {a_prefix}, B = {b_prefix}, seeds {', '.join(map(str, seeds))}; A - B in points, "
             "b : c = sentences only A : only B gets right", ""]
    for seed, ra, rb in zip(seeds, a_right, b_right):
        nb, nc, p = mcnemar(ra, rb)
        lines.append(f"seed {seed}: A {100 * ra.mean():.2f}, B {100 * rb.mean():.2f}, A - B {100 * (ra.mean() - rb.mean()):+.2f}, "
                     f"{nb} : {nc}, McNemar p = {p:.2f}")
    (ma, sa), (mb, sb) = (mean_std([100 * r.mean() for r in rs]) for rs in (a_right, b_right))
    diff, low, high = paired_bootstrap(a_right, b_right)
    lines.append(f"A {ma:.2f} ± {sa:.2f}, B {mb:.2f} ± {sb:.2f}; A - B = {diff:+.2f}, 95% paired bootstrap "
                 f"[{low:+.2f}, {high:+.2f}]")
    return "\n".join(lines)


def curves(rows, spec=CURVES):
    """{line: [(mean FLOPs speedup, mean accuracy, accuracy std, [accuracy per seed]), ...]} for the rows
    of `spec` (CURVES' form) that have run, in order of speedup."""
    out = {}
    for line, (keys, _) in spec.items():
        points = [(statistics.mean(rows[k]["flops"]), *mean_std(rows[k]["acc"]), rows[k]["acc"]) for k in keys if k in rows]
        if points:
            out[line] = sorted(points)
    return out


def picture(rows, path, spec=CURVES, title=None):
    """Dev accuracy against FLOPs speedup: one line per entry of `spec` (CURVES: the recipe's beside the
    smaller dense models'), each point a row's mean over its seeds (bar: one standard deviation; dots: the
    seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from checkpoint import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for line, points in curves(rows, spec).items():
        x, y, std, seeds = zip(*points)
        colour = spec[line][1]
        ax.errorbar(x, y, yerr=std, color=colour, marker="o", capsize=3, label=line)
        for xi, accs in zip(x, seeds):
            ax.scatter([xi] * len(accs), accs, color=colour, s=10, alpha=0.5)
    ax.set(xlabel="FLOPs speedup over the 6-layer model (no padding)", ylabel="SST-2 dev accuracy (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: clear of every point
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def sst2_dev(data_dir=None):
    """(the GLUE folder, SST-2 dev's labels (872,)), from --data-dir or $GLUE_DIR; one error line if absent."""
    task = data.get_task("sst2")
    try:
        data_dir = data.find_data_dir(task, data_dir, download=False)
        return data_dir, np.array([ex.label for ex in data.read_split(task, "dev", data_dir)])
    except data.DataError as e:
        raise SystemExit(f"error: {e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--runs", default=str(ROOT / "results" / "recipe"), help="folder of NAME.json (run_recipe.sh's)")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--out", default=str(ROOT / "results" / "sst2_recipe"), help="writes OUT.md and OUT.json")
    p.add_argument("--time", metavar="RUNS", default=None, help="time the saved models in RUNS/sst2-recipe-NAME/")
    p.add_argument("--retime", action="store_true", help="with --time: time again the runs timed before")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pair", nargs=2, metavar=("A", "B"), help="only compare two metrics.json files' final "
                                                                  "dev predictions, and print the result")
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), help="only compare the runs A-seedS.json with "
                                                                    "B-seedS.json over the seeds both have, and print it")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="only the runs of these seeds (a subset: the report is printed, nothing is written)")
    args = p.parse_args(argv)
    if args.retime and not args.time:  # it would only erase the timings kept
        p.error("--retime needs --time RUNS")
    from checkpoint import atomic_write

    data_dir, labels = sst2_dev(args.data_dir)
    if args.pair:
        a, b = (final_correct(f, labels) for f in args.pair)
        only_a, only_b, p_value = mcnemar(a, b)
        diff, low, high = paired_bootstrap(a, b)
        print(f"{args.pair[0]} {100 * a.mean():.2f} vs {args.pair[1]} {100 * b.mean():.2f}: only A right on {only_a}, "
              f"only B on {only_b}, McNemar p = {p_value:.2f}; A - B = {diff:+.2f} points, 95% paired bootstrap "
              f"[{low:+.2f}, {high:+.2f}]")
        return
    if args.paired:
        print(paired_over_seeds(*args.paired, labels))
        return
    rows = load_rows(args.runs, labels, set(args.seeds) if args.seeds else None)
    if args.seeds:
        print(report(rows, {}, "python results/compare.py --seeds " + " ".join(map(str, args.seeds)))[0])
        return
    measured, timed_by = ({}, {}) if args.retime else timed_before(args.out + ".json")
    command = "python results/compare.py"
    if args.time:
        command += f" --time {args.time} --batch-size {args.batch_size}"
        new = time_models(rows, args.time, data_dir, args.batch_size, args.repeats, skip=set(measured))
        measured.update(new)
        timed_by.update({name: command for name in new})
    text, goals = report(rows, measured, command, timed_by)
    summary = {key: {"runs": r["names"], "trained_on": r["devices"], "accuracy": r["acc"], "flops_speedup": r["flops"],
                     "measured_speedup": measured_of(key, r["names"], measured)} for key, r in rows.items()}
    atomic_write(args.out + ".md", lambda path: Path(path).write_text(text))
    picture(rows, args.out + ".png")
    atomic_write(args.out + ".json", lambda path: Path(path).write_text(
        json.dumps({"command": command, "rows": summary, "goals": goals, "timings": measured, "timed_by": timed_by},
                   indent=1) + "\n"))
    print(text)


if __name__ == "__main__":
    main()
