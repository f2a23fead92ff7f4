"""
The SST-2 pictures, drawn from the record results/sst2.json (results/collect.py writes it, then calls
this). Every picture plots the change in dev accuracy against the dense row trained with the same
recipe (so every dense row is the zero line) against the FLOPs speedup with no padding, and shades the
goal (collect.GOAL_SPEEDUP, collect.GOAL_DROP).

- sst2_headline.png, the README's: the recommended recipe (--headline runs) as curves of its operating
  points, hollow markers at the measured CPU speedup where a point was timed, and the paper's SST-2
  point for reference (BERT-base, 12 layers: not a like-for-like comparison).
- sst2_tradeoff.png: every skimming row, at the keep threshold it was trained for.
- sst2_operating_points.png: every swept model's operating points, one panel per number of stages.

    python results/plots.py [--json results/sst2.json] [--out results] [--headline RUN ...]
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from collect import GOAL_DROP, GOAL_SPEEDUP, curve, short  # noqa: E402
from model import atomic_write  # noqa: E402  (collect has put the repository on sys.path)

RESULTS = Path(__file__).resolve().parent
HEADLINE = ["sst2-third-sep-lam0.5-plr1e-4-ep1", "sst2-third-sep-lam0.5-plr1e-4-ep1-seed43"]  # the recommended recipe
HEADLINE_MAX_T = 0.7  # higher keep thresholds cost these models 5 to 10 points (results/sst2.md): off the headline
PAPER = (1.58, -0.7)  # Guan et al. (2022), Table 3, SST-2, no padding: 1.58x, 93.0 -> 92.3
STAGES = {1: "one stage", 2: "two stages", 3: "three stages (predictors frozen)"}
COLOURS = {"one stage": "tab:blue", "two stages": "tab:orange", "two stages, distilled": "tab:purple",
           "three stages (predictors frozen)": "tab:green"}
X, Y = "FLOPs speedup over dense (no padding)", "Δ dev accuracy vs the dense row of the same recipe (points)"


def group(r):
    return "two stages, distilled" if r["stage"] == 2 and r["teacher"] else STAGES[min(r["stage"], 3)]


def xy(p):
    return p["flops_speedup_no_padding"], p["accuracy_change_points"]


def finish(ax):
    """The dense rows' zero line and the goal's region, once the data have set the axes' limits."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax.axhline(0, color="black", lw=1.2, label="dense model, same recipe (1.00x)")
    ax.fill_between([GOAL_SPEEDUP, x1], -GOAL_DROP, y1, color="tab:green", alpha=0.1, lw=0,
                    label=f"goal: >= {GOAL_SPEEDUP:.0f}x FLOPs, <= {GOAL_DROP:.0f} point down")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=X)
    ax.grid(alpha=0.3)


def save(fig, path):
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def headline_points(row):
    """The curve the headline draws for a row: its operating points up to HEADLINE_MAX_T, by threshold."""
    return [p for p in curve(row) if p["keep_threshold"] <= HEADLINE_MAX_T]


def headline(rows, path):
    fig, ax = plt.subplots(figsize=(8, 5.6), dpi=100)
    for row, colour in zip(rows, ["tab:green", "tab:blue", "tab:orange", "tab:purple"]):
        ps = headline_points(row)
        ax.plot(*zip(*map(xy, ps)), "-o", color=colour, ms=5, lw=1.5,
                label=f"{short(row['run'])} (seed {row['seed']}), vs {short(row['dense_reference'])}")
        ax.plot(*xy(row), "o", color=colour, ms=10, zorder=3)
        for p in ps:
            if p["measured_speedup"]:
                ax.plot([p["measured_speedup"], xy(p)[0]], [xy(p)[1]] * 2, ":", color=colour, lw=1)
                ax.plot(p["measured_speedup"], xy(p)[1], "o", mfc="white", mec=colour, mew=1.5, ms=7, zorder=3)
        for p, dx, ha in ((ps[0], -7, "right"), (ps[-1], 7, "left")):  # the ends say which way T runs
            ax.annotate(f"T = {p['keep_threshold']}", xy(p), textcoords="offset points", xytext=(dx, -3), ha=ha,
                        fontsize=8, color=colour)
    ax.plot([], [], "o", mfc="white", mec="gray", mew=1.5, ms=7, label="measured CPU speedup, where timed")
    ax.plot([], [], "o", color="gray", ms=10, label="as trained (T = 0.5)")
    ax.plot(*PAPER, "*", color="tab:red", ms=13, label=f"paper, BERT-base ({PAPER[0]}x, {PAPER[1]})")
    ax.set_xlim(min(ax.get_xlim()[0], 1.35), ax.get_xlim()[1] + 0.15)
    ax.set_ylim(top=max(ax.get_ylim()[1], 1.8))
    finish(ax)
    ax.set(xlabel="speedup over the dense model (FLOPs, no padding; hollow: measured)",
           ylabel="Δ SST-2 dev accuracy (points)")
    ax.set_title(f"Transkimmer on all-MiniLM-L6-v2 (6 layers), SST-2 dev, at keep thresholds T <= {HEADLINE_MAX_T}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    save(fig, path)


def place_labels(fig, ax, items):
    """Label each (x, y, text) beside its dot, at the first of a few offsets where the label overlaps
    neither a label already placed nor a dot."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    dots, taken = [ax.transData.transform((x, y)) for x, y, _ in items], []
    for x, y, text in items:
        for dx, dy in [(5, 2), (5, -9), (-5, 2), (-5, -9), (5, 9), (-5, 9), (5, -16), (-5, -16)]:
            a = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=6.5,
                            ha="left" if dx > 0 else "right")
            box = a.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(t) for t in taken) and not any(box.contains(*d) for d in dots):
                break
            a.remove()
        else:  # nowhere free: the first place
            a = ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 2), fontsize=6.5)
            box = a.get_window_extent(renderer)
        taken.append(box)


def tradeoff(rows, path):
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    skimming = [r for r in rows if r["skim"] and r["accuracy_change_points"] is not None]
    for r in skimming:
        ax.scatter(*xy(r), color=COLOURS[group(r)], marker="o" if r["seed"] == 42 else "s", zorder=3)
    ax.set_xlim(0.8, max([2.2] + [xy(r)[0] + 0.5 for r in skimming]))
    finish(ax)
    place_labels(fig, ax, [(*xy(r), short(r["run"])) for r in skimming])
    for name, colour in COLOURS.items():
        ax.scatter([], [], color=colour, label=name)
    ax.scatter([], [], color="gray", marker="s", label="seed 43 (the others: seed 42)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set(ylabel=Y, title="SST-2 dev: every row, at the keep threshold it was trained for")
    save(fig, path)


def operating_points(swept, path):
    fig, axs = plt.subplots(1, 3, figsize=(15, 5), dpi=120, sharey=True)
    for ax, stage in zip(axs, STAGES):
        mine = [r for r in swept if min(r["stage"], 3) == stage and r["dense_reference"]]
        for r, colour in zip(mine, plt.get_cmap("tab10").colors):
            ax.plot(*zip(*map(xy, curve(r))), "-", marker=".", lw=1, color=colour, label=short(r["run"]))
            ax.scatter(*xy(r), color=colour, zorder=3)
        if mine:  # a recipe with no swept run leaves its panel empty, with no legend
            ax.legend(fontsize=7, loc="lower left")
        ax.set_title(STAGES[stage], fontsize=10)
    for ax in axs:  # once every panel has its data: the panels share the y-axis
        finish(ax)
    axs[0].set(ylabel=Y)
    fig.suptitle("SST-2 dev: each model at other keep thresholds (the larger dot: T = 0.5, as trained); green: the goal")
    save(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--json", default=RESULTS / "sst2.json", type=Path, help="the record (default: %(default)s)")
    p.add_argument("--out", default=RESULTS, type=Path, help="where the pictures go (default: %(default)s)")
    p.add_argument("--headline", nargs="+", default=HEADLINE, metavar="RUN", help="rows of the headline picture")
    args = p.parse_args(argv)
    rows = json.loads(args.json.read_text())
    by_run = {r["run"]: r for r in rows}
    tradeoff(rows, args.out / "sst2_tradeoff.png")
    swept = [r for r in rows if r["operating_points"]]
    if swept:
        operating_points(swept, args.out / "sst2_operating_points.png")
    missing = [r for r in args.headline if r not in by_run or by_run[r]["dense_reference"] is None]
    if missing:
        print(f"no headline picture: {args.json} has no row with a dense reference for {', '.join(missing)}",
              file=sys.stderr)
    else:
        headline([by_run[r] for r in args.headline], args.out / "sst2_headline.png")


if __name__ == "__main__":
    main()
