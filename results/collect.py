"""
The SST-2 results in one place: each run's runs/sst2-NAME/metrics.json (results/run_sst2.sh) and its
operating points, runs/sst2-NAME/threshold-T/metrics.json (results/sweep_thresholds.sh), become
results/sst2.json (the record) and the tables of results/sst2.md; results/plots.py then draws the pictures.

    python results/collect.py [--runs runs] [--out results]

The runs found under --runs are added to OUT/sst2.json (a run already there is replaced), so everything
can be made again from the committed record, without the runs' folders. Each row is compared with the
dense row trained with the same recipe, and every row and operating point is checked against one goal:
a FLOPs speedup (no padding) of at least 2x with dev accuracy at most one point below that dense row.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import atomic_write  # noqa: E402
from skim import KEEP_THRESHOLD  # noqa: E402
from train import LR, parse_args  # noqa: E402

PRETRAINED = "all-MiniLM-L6-v2"  # what train.py fine-tunes unless --model names another
# a command names a recipe setting only where it is not train.py's default; these runs are one stage, which
# trains at LR unless --lr says otherwise
TRAIN_DEFAULTS = {**vars(parse_args([])), "lr": LR}
RECIPE_FLAGS = {"lr": "--lr", "epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed"}
GOAL_SPEEDUP, GOAL_DROP = 2.0, 1.0  # the goal: >= 2x FLOPs (no padding), <= 1 point below the dense row
MACHINE = "2 cores of an AMD EPYC CPU, 24 GiB, no GPU, torch 2.13.0 (CPU build)"


def measures(m):
    """What an evaluation's metrics.json says of a model's operating point."""
    return {"keep_threshold": m["args"].get("keep_threshold") or KEEP_THRESHOLD,  # absent before --keep-threshold
            "accuracy": m["accuracy"],
            "flops_speedup_no_padding": m["flops"]["none"]["speedup"],
            "flops_speedup_sequence": m["flops"]["sequence"]["speedup"],
            "measured_speedup": m.get("measured_speedup"),
            "kept_fraction": m["flops"]["kept_fraction"]}


def operating_point(path):
    """threshold-T/metrics.json: the run's model evaluated with train.py --eval-only --keep-threshold T."""
    m = json.loads(path.read_text())
    a = m["args"]
    return {**measures(m), "command": f"python train.py --task sst2 --eval-only --checkpoint {a['checkpoint']} "
                                      f"--keep-threshold {a['keep_threshold']} --output-dir {a['output_dir']}"}


def row(path):
    """One run's metrics.json (and, if measured, its encoder-only/metrics.json) as a row of the table."""
    m = json.loads(path.read_text())
    a = m["args"]
    frozen_at = a.get("freeze_predictors")  # absent in runs made before the flag
    grad = "frozen" if frozen_at else a.get("predictor_grad", "joint")  # runs made before the flag were "joint"
    predictor_lr = a.get("predictor_lr") or a["lr"]  # None (= --lr) in runs made before train.py resolved it
    teacher = a.get("teacher")
    if frozen_at:  # a further stage: the predictors as --model left them, only the encoder learning
        flags = f"--freeze-predictors {frozen_at}"
    elif a["no_skim"]:
        flags = "--no-skim"
    else:
        flags = f"--skim-coef {a['skim_coef']} --tau {a['tau']} --mu0 {a['mu0']}"
        flags += f" --predictor-lr {predictor_lr}" if predictor_lr != a["lr"] else ""
        flags += f" --predictor-grad {grad}"
    flags = (f"--model {a['model']} " if a["model"] else "") + flags
    flags += "".join(f" {flag} {a[key]}" for key, flag in RECIPE_FLAGS.items() if a[key] != TRAIN_DEFAULTS[key])
    if teacher:
        flags += f" --teacher {teacher} --distill-coef {a['distill_coef']} --distill-temp {a['distill_temp']}"
    encoder_only = path.parent / "encoder-only" / "metrics.json"  # train.py --eval-only --no-skim on this run
    return {
        "run": path.parent.name,
        "command": f"python train.py --task sst2 {flags} --output-dir {path.parent}",
        "starts_from": Path(a["model"]).name if a["model"] else PRETRAINED,
        "teacher": Path(teacher).name if teacher else None,
        "distill_coef": a["distill_coef"] if teacher else None, "distill_temp": a["distill_temp"] if teacher else None,
        "skim": not a["no_skim"], "skim_coef": a["skim_coef"], "tau": a["tau"], "mu0": a["mu0"], "predictor_grad": grad,
        "predictor_lr": predictor_lr, "frozen_at": frozen_at,
        "lr": a["lr"], "epochs": a["epochs"], "batch_size": a["batch_size"], "seed": a["seed"],
        **measures(m),
        "encoder_only_accuracy": json.loads(encoder_only.read_text())["accuracy"] if encoder_only.is_file() else None,
        "train_seconds": m.get("train_seconds"), "train_steps": m.get("train_steps"),
        "operating_points": sorted((operating_point(p) for p in path.parent.glob("threshold-*/metrics.json")),
                                   key=lambda p: p["keep_threshold"]),
    }


def recipe(r, by_run):
    """What makes two rows comparable: the same teacher, epochs, lr, batch size and seed, starting from the
    same model or from models that were themselves trained with the same recipe (so a further stage from a
    skimming run is compared with the same stage from its dense reference)."""
    start = r["starts_from"]
    return (recipe(by_run[start], by_run) if start in by_run else start, r["teacher"], r["distill_coef"],
            r["distill_temp"], r["epochs"], r["lr"], r["batch_size"], r["seed"])


def stage(r, by_run):
    """1 for a run fine-tuned from the pre-trained checkpoint, 2 for one fine-tuned from such a run, ..."""
    return 1 + stage(by_run[r["starts_from"]], by_run) if r["starts_from"] in by_run else 1


def compare_to_dense(rows):
    """Each row and each of its operating points against the dense row of the same recipe, in points; the rows
    in table order (stage, distilled or not, dense first, speedup)."""
    by_run = {r["run"]: r for r in rows}
    for r in rows:
        r["stage"] = stage(r, by_run)
    rows.sort(key=lambda r: (r["stage"], r["teacher"] is not None, r["skim"], r["flops_speedup_no_padding"]))
    recipes = {r["run"]: recipe(r, by_run) for r in rows}
    for r in rows:
        dense = next((d for d in rows if not d["skim"] and recipes[d["run"]] == recipes[r["run"]]), None)
        r["dense_reference"] = dense["run"] if dense else None
        for p in [r, *r["operating_points"]]:
            p["accuracy_change_points"] = round(100 * (p["accuracy"] - dense["accuracy"]), 2) if dense else None


def meets_goal(p):
    change = p["accuracy_change_points"]
    return change is not None and p["flops_speedup_no_padding"] >= GOAL_SPEEDUP and change >= -GOAL_DROP


def short(run):
    """A run's name without the task prefix, for references and labels."""
    return run.replace("sst2-", "")


def delta(change, reference):
    return "n/a (no dense row)" if change is None else f"{change:+.1f} vs {short(reference)}"


def kept(p):
    return " ".join(f"{k:.2f}" for k in p["kept_fraction"])


def curve(r):
    """A row's operating points, the row itself (its training-time threshold) among them, by threshold."""
    return sorted([r, *r["operating_points"]], key=lambda p: p["keep_threshold"])


def table(rows):
    lines = ["| run | starts from | distilled from | λ | τ | μ0 | predictor grad | predictor lr | dev acc | Δ acc (pts) | "
             "dev acc, every token kept | FLOPs speedup, no padding | FLOPs speedup, sequence 64 | measured CPU speedup | "
             "tokens kept per layer | train time |", "|---" * 16 + "|"]
    for r in rows:
        teacher = f"{r['teacher']} (coef {r['distill_coef']}, T {r['distill_temp']})" if r["teacher"] else "-"
        if r["frozen_at"]:  # λ, τ, μ0 and the predictor lr train predictors; these stayed as --model left them
            settings = f"- | - | - | frozen at T {r['frozen_at']} | -"
        else:
            settings = " | ".join(str(r[k]) if r["skim"] else "-"
                                  for k in ("skim_coef", "tau", "mu0", "predictor_grad", "predictor_lr"))
        every = "-" if r["encoder_only_accuracy"] is None else f"{100 * r['encoder_only_accuracy']:.1f}"
        measured = f"{r['measured_speedup']:.2f}x" if r["measured_speedup"] else "1.00x (is the reference)"
        lines.append(f"| {r['run']} | {r['starts_from']} | {teacher} | {settings} | {100 * r['accuracy']:.1f} | "
                     f"{delta(r['accuracy_change_points'], r['dense_reference'])} | {every} | "
                     f"{r['flops_speedup_no_padding']:.2f}x | {r['flops_speedup_sequence']:.2f}x | {measured} | "
                     f"{kept(r)} | {r['train_seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def grid(swept):
    """The operating points, a run per line and a threshold per column: FLOPs speedup (no padding), Δ acc."""
    thresholds = sorted({p["keep_threshold"] for r in swept for p in curve(r)})
    lines = ["| run (Δ vs) | " + " | ".join(f"T = {t}" for t in thresholds) + " |", "|---|" + "---|" * len(thresholds)]
    for r in swept:
        at = {p["keep_threshold"]: p for p in curve(r)}
        cells = ["" if t not in at else f"{at[t]['flops_speedup_no_padding']:.2f}x" + (
                 "" if at[t]["accuracy_change_points"] is None else f", {at[t]['accuracy_change_points']:+.1f}")
                 for t in thresholds]
        reference = short(r["dense_reference"]) if r["dense_reference"] else "no dense row"
        lines.append(f"| {short(r['run'])} ({reference}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_table(swept):
    lines = ["| run | keep threshold | dev acc | Δ acc (pts) | FLOPs speedup, no padding | FLOPs speedup, sequence 64 | "
             "measured CPU speedup | tokens kept per layer |", "|---" * 8 + "|"]
    for r in swept:
        for p in curve(r):
            threshold = f"{p['keep_threshold']}" + (" (the row above)" if p is r else "")
            measured = f"{p['measured_speedup']:.2f}x" if p["measured_speedup"] else "-"
            lines.append(f"| {r['run']} | {threshold} | {100 * p['accuracy']:.1f} | "
                         f"{delta(p['accuracy_change_points'], r['dense_reference'])} | "
                         f"{p['flops_speedup_no_padding']:.2f}x | {p['flops_speedup_sequence']:.2f}x | {measured} | "
                         f"{kept(p)} |")
    return "\n".join(lines)


def goal_text(rows):
    hits = [f"- {r['run']} at keep threshold {p['keep_threshold']}: {p['flops_speedup_no_padding']:.2f}x, "
            f"{p['accuracy_change_points']:+.1f} points" for r in rows for p in [r, *r["operating_points"]] if meets_goal(p)]
    head = (f"The goal: a FLOPs speedup (no padding) of at least {GOAL_SPEEDUP}x, with dev accuracy at most "
            f"{GOAL_DROP} point below the dense row of the same recipe.")
    return head + (" Met by:\n\n" + "\n".join(hits) if hits else " No row and no operating point meets it.")


def markdown(rows):
    swept = [r for r in rows if r["operating_points"]]
    text = ("# SST-2: Transkimmer vs the dense baseline\n\n"
            f"Made by `GLUE_DIR=/path/to/glue bash results/run_sst2.sh` then `python results/collect.py`, on {MACHINE}. "
            "\"Every token kept\" is the same model evaluated without its predictors: `python train.py --task sst2 "
            "--eval-only --no-skim --checkpoint runs/sst2-NAME --output-dir runs/sst2-NAME/encoder-only`.\n\n"
            + table(rows) + "\n\nCommands:\n\n" + "\n".join(f"- `{r['command']}`" for r in rows) + "\n")
    if swept:
        text += ("\n## Operating points: each model at other keep thresholds\n\nMade by `GLUE_DIR=/path/to/glue bash "
                 "results/sweep_thresholds.sh` then `python results/collect.py`. The same trained model, evaluated "
                 "with `train.py --eval-only --keep-threshold T` (a token is kept where its predictor's p(keep) > T; "
                 "the rows above use 0.5, the paper's argmax). Its Δ is against the row's dense reference. The "
                 "measured speedup is \"-\" where the sweep did not time the point (`TIMING_REPEATS=0`, its "
                 "default).\n\nFLOPs speedup (no padding) and Δ acc (points) at each threshold T:\n\n"
                 + grid(swept) + "\n\nIn full:\n\n" + points_table(swept) + "\n\nCommands: `"
                 + swept[0]["operating_points"][0]["command"] + "`, and so on for each run and threshold.\n")
    return text + "\n" + goal_text(rows) + "\n"

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--runs", default="runs", help="folder of sst2-NAME/ run folders (default: runs)")
    p.add_argument("--out", default="results", help="where sst2.json, sst2.md and the plots go (default: results)")
    p.add_argument("--no-plots", action="store_true", help="write the record and the tables only")
    args = p.parse_args(argv)
    out = Path(args.out)
    record = out / "sst2.json"
    rows = {r["run"]: r for r in (json.loads(record.read_text()) if record.is_file() else [])}
    for path in sorted(Path(args.runs).glob("sst2-*/metrics.json")):
        if not json.loads(path.read_text())["args"].get("holdout"):  # trained on fewer sentences: another table
            rows[path.parent.name] = row(path)
    if not rows:
        sys.exit(f"error: no {args.runs}/sst2-*/metrics.json and no {record}; run results/run_sst2.sh first")
    rows = list(rows.values())
    compare_to_dense(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(record, lambda p: Path(p).write_text(json.dumps(rows, indent=2) + "\n"))
    text = markdown(rows)
    atomic_write(out / "sst2.md", lambda p: Path(p).write_text(text))
    if not args.no_plots:
        import plots  # the pictures, from the record just written
        plots.main(["--json", str(record), "--out", str(out)])
    print(goal_text(rows))


if __name__ == "__main__":
    main()
