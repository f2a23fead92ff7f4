"""
Where the gradient of a Transkimmer training step goes (results/gradient_paths.json).

For BATCHES batches of 32 SST-2 train sentences, one forward pass in training mode per batch and mode,
with the same dropout and Gumbel noise (hence the same decisions) in both modes:
  - the norm of the task loss's gradient on the encoder when the predictors read the hidden states
    ("joint", the paper) and when they read a detached copy ("separate", --predictor-grad separate):
    the difference is the part of the encoder's gradient that arrives through the skim decisions;
  - the norm of the total loss's gradient on the predictors, and the factor by which one global
    clip to norm 1 (train.py with "joint") would scale the encoder's step.

    GLUE_DIR=/path/to/glue python results/gradient_paths.py [--checkpoints init runs/sst2-mu2] [--batches 20]
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
import skim  # noqa: E402
from checkpoint import ModelError, atomic_write  # noqa: E402


def norm(params):
    return torch.sqrt(sum((p.grad ** 2).sum() for p in params if p.grad is not None)).item()


def measure(model, batches, coef):
    rows = []
    for batch in batches:
        row = {}
        for mode in ("joint", "separate"):
            model.predictor_grad = mode
            model.zero_grad(set_to_none=True)
            torch.manual_seed(len(rows))  # the same noise, hence the same decisions, in both modes
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            task = F.cross_entropy(out.logits, batch["labels"])
            task.backward(retain_graph=True)
            row[f"task_to_encoder_{mode}"] = norm(model.bert.parameters())
            if mode == "joint":
                (coef * out.aux_loss).backward()
                total = norm(model.parameters())
                row["total_to_predictors"] = norm(model.predictors.parameters())
                row["joint_clip_scale"] = min(1.0, 1.0 / total)
        rows.append(row)
    summary = {k: {"median": statistics.median(r[k] for r in rows), "max": max(r[k] for r in rows)} for k in rows[0]}
    summary["steps_where_the_joint_clip_shrinks_the_step_over_10x"] = sum(r["joint_clip_scale"] < 0.1 for r in rows)
    return {"per_batch": rows, "summary": summary}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--checkpoints", nargs="+", default=["init"],
                   help="'init' (the embedded checkpoint, fresh predictors at --mu0) and/or folders saved by train.py")
    p.add_argument("--mu0", type=float, default=2.0)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--skim-coef", type=float, default=0.3)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--data-dir", default=None, help="folder holding SST-2/train.tsv (default: $GLUE_DIR)")
    p.add_argument("--out", default="results/gradient_paths.json")
    args = p.parse_args()
    task = data.get_task("sst2")
    examples = data.read_split(task, "train", data.find_data_dir(task, args.data_dir, download=False))
    result = {"command": "python results/gradient_paths.py " + " ".join(sys.argv[1:]), "tau": args.tau,
              "skim_coef": args.skim_coef, "batches": args.batches, "batch_size": 32, "runs": {}}
    for name in args.checkpoints:
        torch.manual_seed(42)  # the fresh predictors' init
        if name == "init":
            model = skim.Transkimmer.from_pretrained(None, num_labels=2, tau=args.tau, mu0=args.mu0)
        else:
            model = skim.Transkimmer.from_pretrained(name, tau=args.tau)
        model.train()
        encoded = data.encode(model.tokenizer, examples[: 32 * args.batches * 4], task.max_seq_length)
        batches = list(data.batches(encoded, 32, shuffle=True, seed=42))[: args.batches]
        key = f"init (mu0 {args.mu0})" if name == "init" else name
        result["runs"][key] = measure(model, batches, args.skim_coef)
        s = result["runs"][key]["summary"]
        print(f"{name}: task->encoder median {s['task_to_encoder_joint']['median']:.3g} (joint) vs "
              f"{s['task_to_encoder_separate']['median']:.3g} (separate), max {s['task_to_encoder_joint']['max']:.3g} vs "
              f"{s['task_to_encoder_separate']['max']:.3g}; predictors max {s['total_to_predictors']['max']:.3g}; "
              f"joint clip shrinks {s['steps_where_the_joint_clip_shrinks_the_step_over_10x']}/{args.batches} steps >10x")
    atomic_write(Path(args.out), lambda f: Path(f).write_text(json.dumps(result, indent=1) + "\n"))


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, ModelError) as e:
        sys.exit(f"error: {e}")
