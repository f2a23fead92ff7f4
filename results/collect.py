"""
Collect the SST-2 runs (runs/sst2-*/metrics.json, made by results/run_sst2.sh) into results/sst2.json,
the table results/sst2.md, and the paper's Fig. 3-style plot of accuracy against FLOPs speedup. Where
results/sweep_thresholds.sh has re-evaluated a run's model at other keep thresholds
(runs/sst2-*/threshold-*/metrics.json), those operating points go in a second table and plot.

    python results/collect.py [--runs runs] [--out results]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import atomic_write  # noqa: E402
from skim import KEEP_THRESHOLD  # noqa: E402
from train import parse_args  # noqa: E402

PRETRAINED = "all-MiniLM-L6-v2"  # what train.py fine-tunes unless --model names another
RECIPE_FLAGS = {"lr": "--lr", "epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed"}
TRAIN_DEFAULTS = vars(parse_args([]))  # a command names a recipe setting only where it is not train.py's default
GOAL_SPEEDUP, GOAL_DROP = 2.0, 1.0  # issue 5: FLOPs speedup (no padding) >= 2x at <= 1 point below the dense row


def measures(m):
    """What an evaluation's metrics.json says of a model's operating point."""
    return {
        "keep_threshold": m["args"].get("keep_threshold") or KEEP_THRESHOLD,  # absent before --keep-threshold
        "accuracy": m["accuracy"],
        "flops_speedup_no_padding": m["flops"]["none"]["speedup"],
        "flops_speedup_sequence": m["flops"]["sequence"]["speedup"],
        "measured_speedup": m.get("measured_speedup"),
        "kept_fraction": m["flops"]["kept_fraction"],
    }


def operating_point(path):
    """One threshold-T/metrics.json: the run's model evaluated with train.py --eval-only --keep-threshold T."""
    m = json.loads(path.read_text())
    a = m["args"]
    return {**measures(m), "command": f"python train.py --task sst2 --eval-only --checkpoint {a['checkpoint']} "
                                      f"--keep-threshold {a['keep_threshold']} --output-dir {a['output_dir']}"}


def row(path):
    m = json.loads(path.read_text())
    encoder_only = path.parent / "encoder-only" / "metrics.json"  # train.py --eval-only --no-skim on this run
    a = m["args"]
    frozen_at = a.get("freeze_predictors")  # absent before --freeze-predictors
    grad = "frozen" if frozen_at else a.get("predictor_grad", "joint")  # runs made before the flag were all "joint"
    predictor_lr = a.get("predictor_lr") or a["lr"]  # None (= --lr) in runs made before train.py resolved it
    if frozen_at:  # a further stage: the predictors as --model trained them, the encoder alone learning
        flags = f"--freeze-predictors {frozen_at}"
    elif a["no_skim"]:
        flags = "--no-skim"
    else:
        flags = f"--skim-coef {a['skim_coef']} --tau {a['tau']} --mu0 {a['mu0']}"
        if predictor_lr != a["lr"]:
            flags += f" --predictor-lr {predictor_lr}"
        flags += f" --predictor-grad {grad}"
    if a["model"]:  # a second stage, fine-tuning a model another run saved
        flags = f"--model {a['model']} {flags}"
    flags += "".join(f" {flag} {a[key]}" for key, flag in RECIPE_FLAGS.items() if a[key] != TRAIN_DEFAULTS[key])
    teacher = a.get("teacher")  # absent in runs made before train.py had --teacher
    if teacher:
        flags += f" --teacher {teacher} --distill-coef {a['distill_coef']} --distill-temp {a['distill_temp']}"
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


def short(run):
    """A run's name without the task prefix, for the table's references and the plot's labels."""
    return run.replace("sst2-", "")


def recipe(r, by_run):
    """Rows trained with the same recipe: same teacher (if any), epochs, lr, batch size and seed, starting
    from the same model or from models that were themselves trained with the same recipe (so a further
    stage from a skimming run is compared with the same stage from its dense reference)."""
    start = r["starts_from"]
    return (recipe(by_run[start], by_run) if start in by_run else start, r["teacher"], r["distill_coef"],
            r["distill_temp"], r["epochs"], r["lr"], r["batch_size"], r["seed"])


def stage(r, by_run):
    """1 for a run fine-tuned from the pre-trained checkpoint, 2 for one fine-tuned from such a run, ..."""
    return 1 + stage(by_run[r["starts_from"]], by_run) if r["starts_from"] in by_run else 1


def compare_to_dense(rows, by_run):
    """Each row's reference is the dense row trained with the same recipe; the accuracy change is in points.
    A row's operating points are compared with the same dense row."""
    recipes = {r["run"]: recipe(r, by_run) for r in rows}
    for r in rows:
        dense = next((d for d in rows if not d["skim"] and recipes[d["run"]] == recipes[r["run"]]), None)
        r["dense_reference"] = dense["run"] if dense else None
        for point in [r, *r["operating_points"]]:
            point["accuracy_change_points"] = round(100 * (point["accuracy"] - dense["accuracy"]), 2) if dense else None


def meets_goal(point):
    change = point["accuracy_change_points"]
    return change is not None and point["flops_speedup_no_padding"] >= GOAL_SPEEDUP and change >= -GOAL_DROP


def goal_lines(rows):
    """The rows and operating points that meet issue 5's goal, or a line saying none does."""
    hits = [f"{r['run']} at keep threshold {p['keep_threshold']}: {p['flops_speedup_no_padding']:.2f}x, "
            f"{p['accuracy_change_points']:+.1f} points" for r in rows for p in [r, *r["operating_points"]]
            if meets_goal(p)]
    head = (f"Issue 5's goal: FLOPs speedup (no padding) >= {GOAL_SPEEDUP}x at most {GOAL_DROP} point below the "
            f"dense row of the same recipe.")
    return head + (" Met by:\n\n" + "\n".join(f"- {h}" for h in hits) if hits else
                   " No row and no operating point meets it.")


def delta_text(change, dense_reference):
    """A table's Δ cell: the accuracy change in points and the dense row it is measured against."""
    return "n/a (no dense row)" if change is None else f"{change:+.1f} vs {short(dense_reference)}"


def markdown(rows):
    lines = ["| run | starts from | distilled from | λ | τ | μ0 | predictor grad | predictor lr | dev acc | Δ acc (pts) | "
             "dev acc, every token kept | FLOPs speedup, no padding | FLOPs speedup, sequence 64 | measured CPU speedup | "
             "tokens kept per layer | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        change = r["accuracy_change_points"]
        delta = delta_text(change, r["dense_reference"])
        measured = f"{r['measured_speedup']:.2f}x" if r["measured_speedup"] else "1.00x (is the reference)"
        teacher = f"{r['teacher']} (coef {r['distill_coef']}, T {r['distill_temp']})" if r["teacher"] else "-"
        every_token = "-" if r["encoder_only_accuracy"] is None else f"{100 * r['encoder_only_accuracy']:.1f}"
        if r["frozen_at"]:  # λ, τ, μ0 and the predictor lr train predictors; these stayed as --model left them
            skim_settings = f"- | - | - | frozen at T {r['frozen_at']} | -"
        else:
            skim_settings = " | ".join(str(r[k]) if r["skim"] else "-"
                                       for k in ("skim_coef", "tau", "mu0", "predictor_grad", "predictor_lr"))
        lines.append(
            f"| {r['run']} | {r['starts_from']} | {teacher} | {skim_settings} | {100 * r['accuracy']:.1f} | {delta} | {every_token} | "
            f"{r['flops_speedup_no_padding']:.2f}x | {r['flops_speedup_sequence']:.2f}x | {measured} | "
            f"{' '.join(f'{k:.2f}' for k in r['kept_fraction'])} | {r['train_seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def curve(r):
    """A row's operating points with the row itself (its training-time threshold) among them, by threshold."""
    return sorted([r, *r["operating_points"]], key=lambda p: p["keep_threshold"])


def markdown_operating_points(swept):
    lines = ["| run | keep threshold | dev acc | Δ acc (pts) | FLOPs speedup, no padding | FLOPs speedup, sequence 64 | "
             "measured CPU speedup | tokens kept per layer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in swept:
        for p in curve(r):
            change = p["accuracy_change_points"]
            delta = delta_text(change, r["dense_reference"])
            measured = f"{p['measured_speedup']:.2f}x" if p["measured_speedup"] else "-"
            threshold = f"{p['keep_threshold']}" + (" (the row above)" if p is r else "")
            lines.append(f"| {r['run']} | {threshold} | {100 * p['accuracy']:.1f} | {delta} | "
                         f"{p['flops_speedup_no_padding']:.2f}x | {p['flops_speedup_sequence']:.2f}x | {measured} | "
                         f"{' '.join(f'{k:.2f}' for k in p['kept_fraction'])} |")
    return "\n".join(lines)


def markdown_operating_points_compact(swept):
    """The same points, a run per line and a threshold per column: FLOPs speedup (no padding), Δ acc."""
    thresholds = sorted({p["keep_threshold"] for r in swept for p in curve(r)})
    lines = ["| run (Δ vs) | " + " | ".join(f"T = {t}" for t in thresholds) + " |",
             "|---|" + "---|" * len(thresholds)]
    for r in swept:
        at = {p["keep_threshold"]: p for p in curve(r)}
        cells = [f"{at[t]['flops_speedup_no_padding']:.2f}x, {at[t]['accuracy_change_points']:+.1f}"
                 if t in at and at[t]["accuracy_change_points"] is not None else
                 f"{at[t]['flops_speedup_no_padding']:.2f}x" if t in at else "" for t in thresholds]
        reference = short(r["dense_reference"]) if r["dense_reference"] else "no dense row"
        lines.append(f"| {short(r['run'])} ({reference}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLOURS = {"joint": "tab:blue", "separate": "tab:orange", "frozen": "tab:green"}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(plt, fig, ax, title, path):
    """Both plots: accuracy against FLOPs speedup, written atomically."""
    ax.set(xlabel="FLOPs speedup over dense (no padding)", ylabel="SST-2 dev accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def draw_goal(ax, rows, references=None):
    """Issue 5's goal: at least 2x, at most 1 point below the dense row of the same recipe; a line for each
    dense row in `references` (default: every dense row a skimming row is compared with)."""
    ax.axvline(GOAL_SPEEDUP, color="gray", ls=":", lw=1)
    references = references or {r["dense_reference"] for r in rows if r["skim"]}
    names = {}  # dense rows with the same accuracy share one line and one label
    for r in sorted((r for r in rows if r["run"] in references), key=lambda r: r["run"]):
        names.setdefault(r["accuracy"], []).append(short(r["run"]))
    for i, accuracy in enumerate(sorted(names)):  # lines a few tenths apart: labels in two columns, at the right
        ax.axhline(100 * accuracy - GOAL_DROP, color="gray", ls=":", lw=1)
        ax.annotate(f"goal, vs {', '.join(names[accuracy])}", (1, 100 * accuracy - GOAL_DROP),
                    xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(-3 - 90 * (i % 2), 1),
                    ha="right", fontsize=6, color="gray")


def plot_operating_points(rows, swept, path):
    """Each swept model as a curve of its operating points; its training-time threshold is the larger dot."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    colours = plt.get_cmap("tab20").colors
    for i, r in enumerate(swept):
        points = curve(r)
        xs = [p["flops_speedup_no_padding"] for p in points]
        ys = [100 * p["accuracy"] for p in points]
        ax.plot(xs, ys, "-", marker=".", color=colours[i % len(colours)], lw=1, label=short(r["run"]))
        ax.scatter(r["flops_speedup_no_padding"], 100 * r["accuracy"], color=colours[i % len(colours)], zorder=3)
    draw_goal(ax, rows, {r["dense_reference"] for r in swept})
    ax.legend(fontsize=6, loc="lower left", ncol=2)
    save(plt, fig, ax, "One model, several keep thresholds (train.py --keep-threshold)", path)


def plot(rows, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for r in rows:
        marker = "D" if r["teacher"] else {1: "o", 2: "^"}.get(r["stage"], "v")
        color = COLOURS[r["predictor_grad"]] if r["skim"] else "black"
        ax.scatter(r["flops_speedup_no_padding"], 100 * r["accuracy"], marker=marker, color=color)
        if r["skim"]:
            ax.annotate(short(r["run"]), (r["flops_speedup_no_padding"], 100 * r["accuracy"]), textcoords="offset points",
                        fontsize=7, xytext=(5, -11) if r["predictor_grad"] == "separate" else (5, 4))
    # the dense rows all sit at 1.00x, some a tenth apart: their labels are stacked, lowest first, each
    # at least 0.22 points above the last, with a line to its dot
    label_y = -float("inf")
    for r in sorted((r for r in rows if not r["skim"]), key=lambda r: r["accuracy"]):
        label_y = max(100 * r["accuracy"], label_y + 0.22)
        ax.annotate(short(r["run"]), (1.0, 100 * r["accuracy"]), xytext=(1.06, label_y - 0.07), fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5})
    draw_goal(ax, rows)
    for grad, colour in COLOURS.items():
        if any(r["skim"] and r["predictor_grad"] == grad for r in rows):
            ax.scatter([], [], marker="s", color=colour, label="Transkimmer, predictors frozen" if grad == "frozen"
                       else f"Transkimmer, predictor grad {grad}")
    ax.scatter([], [], marker="s", color="black", label="dense")
    ax.scatter([], [], marker="o", color="gray", label=f"fine-tuned from {PRETRAINED}")
    ax.scatter([], [], marker="^", color="gray", label="fine-tuned from the dense run")
    if any(r["teacher"] for r in rows):
        ax.scatter([], [], marker="D", color="gray", label="the same, distilled from it")
    if any(r["stage"] > 2 for r in rows):
        ax.scatter([], [], marker="v", color="gray", label="a third stage, from a second-stage run")
    ax.legend(fontsize=6.5, loc="lower left")
    save(plt, fig, ax, "Accuracy vs. speedup (all-MiniLM-L6-v2, SST-2)", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="results")
    args = p.parse_args()
    paths = sorted(Path(args.runs).glob("sst2-*/metrics.json"))
    if not paths:
        sys.exit(f"error: no {args.runs}/sst2-*/metrics.json; run results/run_sst2.sh first")
    rows = [row(p) for p in paths]
    by_run = {r["run"]: r for r in rows}
    for r in rows:
        r["stage"] = stage(r, by_run)
    rows.sort(key=lambda r: (r["stage"], r["teacher"] is not None, r["skim"], r["flops_speedup_no_padding"]))
    compare_to_dense(rows, by_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sst2.json", lambda p: Path(p).write_text(json.dumps(rows, indent=2) + "\n"))
    table = markdown(rows)
    text = ("# SST-2: Transkimmer vs the dense baseline\n\nMade by `GLUE_DIR=../shared/data/glue bash results/run_sst2.sh` "
            "then `python results/collect.py`; see the README for the machine. \"Every token kept\" is the same model "
            "evaluated without its predictors: `python train.py --task sst2 --eval-only --no-skim --checkpoint "
            "runs/sst2-NAME --output-dir runs/sst2-NAME/encoder-only`.\n\n" + table + "\n\nCommands:\n\n"
            + "\n".join(f"- `{r['command']}`" for r in rows) + "\n")
    swept = [r for r in rows if r["operating_points"]]
    if swept:
        text += ("\n## Operating points: each model at other keep thresholds\n\nMade by `GLUE_DIR=../shared/data/glue "
                 "bash results/sweep_thresholds.sh` then `python results/collect.py`. The same trained model, evaluated "
                 "with `train.py --eval-only --keep-threshold T` (a token is kept where its predictor's p(keep) > T; "
                 "the rows above use 0.5, the paper's argmax). Its Δ is against the row's dense reference. The "
                 "measured speedup is \"-\" where the sweep did not time the point (`TIMING_REPEATS=0`, its "
                 "default).\n\nFLOPs speedup (no padding) and Δ acc (points) at each threshold T:\n\n"
                 + markdown_operating_points_compact(swept) + "\n\nIn full:\n\n"
                 + markdown_operating_points(swept) + "\n\nCommands: `"
                 + swept[0]["operating_points"][0]["command"] + "`, and so on for each run and threshold.\n")
        plot_operating_points(rows, swept, out / "sst2_operating_points.png")
    goal = goal_lines(rows)
    text += "\n" + goal + "\n"
    atomic_write(out / "sst2.md", lambda p: Path(p).write_text(text))
    plot(rows, out / "sst2_tradeoff.png")
    print(table)
    print(goal)


if __name__ == "__main__":
    main()
