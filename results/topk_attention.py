"""
What static top-k's hand-written attention costs. To rank the tokens for the next layer, top-k needs the attention
each token received, which the fused kernel (F.scaled_dot_product_attention, in model.Layer.infer) does not return;
so its packed layers compute attention by hand (topk.infer_layer): the same matrix products, the probabilities
written out. This script measures how much of top-k's inference time that choice takes.

    GLUE_DIR=/path/to/glue python results/topk_attention.py runs/sst2-alt-topk20-seed42 [--out results/topk_attention.json]

On SST-2 dev, at each batch size, one pass of the saved model's infer records every input its layers receive
(the packed tokens each layer computes); then, on exactly those inputs, the layers are timed twice: as top-k runs
them (topk.infer_layer, which also returns the attention received) and with the fused kernel (Layer.infer, which
does not). Reported per batch size: seconds per pass over dev of each, of the whole infer, and the share of the
whole that the hand-written attention adds. The median of --repeats runs (benchmarks/timing.py's seconds_per_call).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "results"))
import compare  # noqa: E402
import methods  # noqa: E402
from benchmarks.timing import machine, seconds_per_call  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from data import inputs  # noqa: E402
from methods import topk  # noqa: E402


def recorded_inputs(model, batches):
    """Every (layer, packed x, lengths) topk.infer_layer receives in one pass of model.infer over batches."""
    seen, real = [], topk.infer_layer
    def record(layer, x, lengths):
        seen.append((layer, x.clone(), list(lengths)))
        return real(layer, x, lengths)
    topk.infer_layer = record
    try:
        for b in batches:
            model.infer(*inputs(b))
    finally:
        topk.infer_layer = real
    return seen


@torch.inference_mode()
def measure(model, batches, repeats):
    seen = recorded_inputs(model, batches)
    by_hand = seconds_per_call(lambda: [topk.infer_layer(layer, x, n) for layer, x, n in seen], 1, repeats, warmup=1)
    fused = seconds_per_call(lambda: [layer.infer(x, n) for layer, x, n in seen], 1, repeats, warmup=1)
    whole = seconds_per_call(lambda: [model.infer(*inputs(b)) for b in batches], 1, repeats, warmup=1)
    return {"layers_by_hand_seconds": round(by_hand, 4), "layers_fused_seconds": round(fused, 4),
            "infer_seconds": round(whole, 4), "calls": len(seen),
            "share_of_infer": round((by_hand - fused) / whole, 3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("model", help="a folder train.py saved with --method topk")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: $GLUE_DIR)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "results" / "topk_attention.json"))
    args = p.parse_args(argv)
    model = methods.load_saved(args.model).eval()
    if not isinstance(model, topk.TopK):
        sys.exit(f"error: {args.model} is not a top-k model (train.py --method topk)")
    data_dir, _ = compare.sst2_dev(args.data_dir)
    out = {"command": "python results/topk_attention.py " + " ".join(argv or sys.argv[1:]), "machine": machine(),
           "model": args.model, "results": {}}
    for bs in args.batch_sizes:
        out["results"][bs] = r = measure(model, compare.dev_batches(data_dir, bs), args.repeats)
        print(f"batch {bs}: layers by hand {r['layers_by_hand_seconds']:.3f} s, fused {r['layers_fused_seconds']:.3f} s, "
              f"whole infer {r['infer_seconds']:.3f} s: the hand-written attention adds {100 * r['share_of_infer']:.1f}% "
              f"of it")
    out["machine"]["loadavg_after"] = list(os.getloadavg())
    atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(out, indent=1) + "\n"))


if __name__ == "__main__":
    main()
