"""
How a layer's time scales with the number of tokens it processes, at batch 1 and at batch 32: the
ceiling on what token pruning can save on this machine. Pruning halves a layer's tokens, hence its
FLOPs; it does not halve the weights the layer must read (1.77 M numbers, 7.1 MB in float32, for
all-MiniLM-L6-v2's 384-wide layers). When one sentence of ~25 tokens goes through, reading the
weights can cost as much as the arithmetic, and that part does not shrink.

    python results/token_scaling.py [--out results/token_scaling.json] [--threads N]

For each batch size B and each token count n, it times the 6 encoder layers of the default checkpoint
(model.Layer.infer, packed, no padding) on random inputs of B examples of n tokens each, (B n, 384): the
median of --repeats runs of --calls calls each, after a warm-up. Reported: ms per call, and for each n
the "ceiling" = t(n) / t(n/2) (about 2 if time is proportional to tokens): the most that keeping half
the tokens can gain, with no pruning overhead at all. bench.py's measured/FLOPs at keep 0.5 should be
read against ceiling / 2.
It also times one pass over the encoder's weights (a sum over every weight tensor): the memory floor.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import machine, seconds_per_call  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from model import BertForSequenceClassification  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--tokens", type=int, nargs="+", default=[3, 6, 12, 24, 48])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/token_scaling.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = BertForSequenceClassification.from_pretrained(None, num_labels=2).eval()
    layers = model.layers
    weights = [p for layer in layers for p in layer.parameters()]
    load = machine()
    rows = []
    with torch.inference_mode():
        floor = seconds_per_call(lambda: [w.sum() for w in weights], args.calls, args.repeats)
        for B in args.batch_sizes:
            for n in args.tokens:
                x = torch.randn(B * n, model.config.hidden_size)                  # packed: B examples of n tokens

                def encoder():
                    h = x
                    for layer in layers:
                        h = layer.infer(h, [n] * B)
                    return h
                rows.append({"batch_size": B, "tokens": n, "ms": 1e3 * seconds_per_call(encoder, args.calls,
                                                                                        args.repeats)})
    for r in rows:
        half = next((q for q in rows if q["batch_size"] == r["batch_size"] and 2 * q["tokens"] == r["tokens"]), None)
        r["ceiling_at_half"] = r["ms"] / half["ms"] if half else None
    report = {"command": "python " + " ".join(sys.argv), "machine": load, "loadavg_after": os.getloadavg(),
              "threads": torch.get_num_threads(), "weights_mb": sum(w.numel() for w in weights) * 4 / 2 ** 20,
              "weights_read_ms": 1e3 * floor, "rows": rows}
    atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(report, indent=1) + "\n"))
    print(f"{report['threads']} threads; one read of the 6 layers' weights ({report['weights_mb']:.1f} MB): "
          f"{report['weights_read_ms']:.2f} ms")
    print("batch  tokens  ms/call  t(n)/t(n/2)")
    for r in rows:
        ceiling = f"{r['ceiling_at_half']:.2f}" if r["ceiling_at_half"] else ""
        print(f"{r['batch_size']:5d}  {r['tokens']:6d}  {r['ms']:7.2f}  {ceiling}")


if __name__ == "__main__":
    main()
