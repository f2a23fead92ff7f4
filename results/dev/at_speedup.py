"""Saved SST-2 Transkimmers compared at one speedup: each model's keep threshold calibrated as a --holdout run
of train.py calibrates it (recipe.calibrate_threshold on the held-out rows that are whole sentences of the
training file), then held-out and dev accuracy at that threshold.

    GLUE_DIR=... python results/dev/at_speedup.py [--target 2] [--holdout 2000] --out OUT.json MODEL_DIR ...

Why: runs calibrated differently (before data.whole_sentences' context= fix, a --holdout run calibrated
on held-out phrases, which put dev at 2.24x where another run's is 2.0x) are only comparable at one
threshold rule. The rule here is the recipe's own, so each model is scored where the recipe would use it."""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import data  # noqa: E402
import evaluation  # noqa: E402
import methods  # noqa: E402
import recipe  # noqa: E402
from checkpoint import atomic_write  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--target", type=float, default=2.0)
    p.add_argument("--holdout", type=int, default=2000)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    task = data.get_task("sst2")
    args = argparse.Namespace(batch_size=32, device="cpu", max_seq_length=task.max_seq_length)  # what they read
    data_dir = data.find_data_dir(task, None, download=False)
    train_rows, held_rows = data.split_holdout(data.read_split(task, "train", data_dir), a.holdout)
    dev_rows = data.read_split(task, "dev", data_dir)
    results = {}
    for folder in a.models:
        model = methods.load_saved(folder)
        tok = model.bert.tokenizer
        encoded = {"holdout": data.encode(tok, held_rows, args.max_seq_length),
                   "dev": data.encode(tok, dev_rows, args.max_seq_length)}
        calibration = recipe.calibration_batches(held_rows, encoded["holdout"], args, context=train_rows + held_rows)
        threshold = recipe.calibrate_threshold(model, calibration, a.target)
        model.keep_threshold = threshold
        row = {"keep_threshold": threshold}
        for name, rows in encoded.items():
            m = evaluation.evaluate(model, rows, task, args)
            row[name] = {"accuracy": m["accuracy"], "flops_speedup": m["flops"]["none"]["speedup"],
                         "kept_fraction": m["flops"]["kept_fraction"], "predictions": m["predictions"]}
        results[folder] = row
        print(f"{folder}: threshold {threshold:.3f} | held-out {100 * row['holdout']['accuracy']:.2f} at "
              f"{row['holdout']['flops_speedup']:.2f}x | dev {100 * row['dev']['accuracy']:.2f} at "
              f"{row['dev']['flops_speedup']:.2f}x", flush=True)
    command = "python results/dev/at_speedup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write(a.out, lambda path: Path(path).write_text(json.dumps({"command": command, "models": results},
                                                                      indent=1) + "\n"))


if __name__ == "__main__":
    main()
