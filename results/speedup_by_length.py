"""
How a --target-speedup run's speedup moves with its inputs' lengths: a saved model's FLOPs speedup on dev's inputs
grouped by length. A run sets its keep threshold where the model meets the target on training inputs
(recipe.calibration_sample: its held-out slice where it held one out), and dev's inputs can be longer or shorter
than those: results/glue.md's "Targets" lines give both samples' lengths and each row's speedup on each.

    GLUE_DIR=/path/to/glue python results/speedup_by_length.py RUN_DIR [RUN_DIR ...] [--groups 4]
                                                                [--out results/speedup_by_length.json]

RUN_DIR: a folder train.py saved a --target-speedup run in (results/run_glue.sh leaves runs/glue-NAME). For each,
the speedup at the saved model's decisions (recipe.speedup_at: FLOPs with no padding, predictors counted, the
count its calibration and its report use) on its calibration inputs (the target, if the run ended there), on dev,
and on dev sorted by length and cut into --groups groups of equal size, with each group's mean tokens per input.
"""

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "results"))
import data  # noqa: E402
import glue  # noqa: E402
import methods  # noqa: E402
import recipe  # noqa: E402
from checkpoint import atomic_write  # noqa: E402


def by_length(run_dir, data_dir, groups):
    """{"run", "task", "target", "calibration": speedup, "dev": speedup, "calibration_inputs", "calibration_tokens",
    "dev_tokens", "groups": [{"tokens", "speedup", "inputs"}]}: tokens are mean tokens per input. The calibration
    inputs are the ones train.py drew (recipe.calibration_sample: the held-out slice where the run held one out)."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    args, task = m["args"], data.get_task(m["task"])
    if not args.get("target_speedup"):
        raise SystemExit(f"error: {run_dir}: not a --target-speedup run")
    model = methods.load_saved(run_dir).eval()
    folder = data.find_data_dir(task, data_dir, download=False)
    settings = types.SimpleNamespace(batch_size=args["batch_size"], device="cpu")
    encode = lambda examples: data.encode(model.bert.tokenizer, examples, args["max_seq_length"])  # noqa: E731
    train, held = data.training_rows(data.read_split(task, "train", folder), args.get("holdout"),
                                     args.get("max_train_samples"))
    calibration = recipe.calibration_sample(train, encode(train), held, encode(held), settings)
    calibration_tokens = glue.tokens_per_input(calibration)
    dev = encode(data.read_split(task, task.dev_splits[0], folder))

    def measure(rows):
        """(speedup, mean tokens per input) of rows, both from one batching of them."""
        batches = list(data.batches(rows, args["batch_size"]))
        return recipe.speedup_at(model, batches, model.keep_threshold), float(np.mean(glue.tokens_per_input(batches)))

    dev_speedup, dev_tokens = measure(dev)
    out = {"run": run_dir.name, "task": task.name, "target": args["target_speedup"],
           "calibration": recipe.speedup_at(model, calibration, model.keep_threshold), "dev": dev_speedup,
           "calibration_inputs": len(calibration_tokens), "calibration_tokens": float(np.mean(calibration_tokens)),
           "dev_tokens": dev_tokens, "groups": []}
    order = np.argsort([len(e["input_ids"]) for e in dev], kind="stable")
    for part in np.array_split(order, groups):
        rows = [dev[i] for i in part]
        speedup, tokens = measure(rows)
        out["groups"].append({"inputs": len(rows), "tokens": tokens, "speedup": speedup})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("runs", nargs="+", help="folders train.py saved --target-speedup runs in")
    p.add_argument("--groups", type=int, default=4, help="dev cut by length into this many groups of equal size")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--out", default=str(ROOT / "results" / "speedup_by_length.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "GLUE_DIR=/path/to/glue python results/speedup_by_length.py " + " ".join(argv or sys.argv[1:])
    try:
        runs = [by_length(run, args.data_dir, args.groups) for run in args.runs]
    except (data.DataError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    for r in runs:
        print(f"{r['run']}: target {r['target']:g}x; {r['calibration_inputs']} calibration inputs of "
              f"{r['calibration_tokens']:.1f} tokens {r['calibration']:.2f}x, dev of {r['dev_tokens']:.1f} tokens "
              f"{r['dev']:.2f}x; "
              "dev by length: " + ", ".join(f"{g['tokens']:.1f} tokens {g['speedup']:.2f}x" for g in r["groups"]))
    text = json.dumps({"command": command, "runs": runs}, indent=1) + "\n"
    atomic_write(args.out, lambda f: Path(f).write_text(text))


if __name__ == "__main__":
    main()
