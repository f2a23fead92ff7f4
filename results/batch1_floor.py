"""
What sets the time of one sentence at batch 1 on this CPU: the floor below which pruning tokens saves
nothing. One encoder layer of the default checkpoint (all-MiniLM-L6-v2: d = 384, d_ff = 1536, 12 heads)
on n tokens, n from 1 to 64, timed as model.Layer.infer runs it (one example, packed), and taken apart:

    matmuls    each of its four weight matrices alone (F.linear: QKV 384 -> 1152, out 384 -> 384, up
               384 -> 1536, down 1536 -> 384), "hot" (the same weights every call, so they sit in the
               cache) and "cold" (the six layers' weights in turn, as inference reads them, 40.6 MB,
               more than this machine's cache holds); beside each, the FLOPs per second and the
               weight bytes read per second
    ops        the aten operations one Layer.infer call dispatches (counted with TorchDispatchMode),
               and the time of the cheapest op (a 1-element add) and of the cheapest F.linear
               (1 row, 8 -> 8): the fixed cost per op
    read       one pass that reads every weight of the six layers (a sum per tensor): the memory floor

    python results/batch1_floor.py [--threads N] [--dtype bfloat16] [--out results/batch1_floor.json]

Each time is the median of --repeats runs of --calls calls, after a warm-up, under torch.inference_mode.
The printed summary fits t(n) = a + b n to the layer's times and splits a into the parts above.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import machine, seconds_per_call  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from model import BertForSequenceClassification  # noqa: E402


class CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.ops = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def matrices(layer):
    """The layer's four weight matrices, as F.linear takes them: name -> (weight, bias)."""
    return {"qkv": (layer.attn.qkv.weight, layer.attn.qkv.bias), "out": (layer.attn.out.weight, layer.attn.out.bias),
            "up": (layer.ffn.up.weight, layer.ffn.up.bias), "down": (layer.ffn.down.weight, layer.ffn.down.bias)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the weights' and inputs' type (bfloat16: half the bytes per weight)")
    p.add_argument("--out", default="results/batch1_floor.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = BertForSequenceClassification.from_pretrained(None, num_labels=2).to(dtype).eval()
    layers, d = model.layers, model.config.hidden_size
    names = list(matrices(layers[0]))                                              # qkv, out, up, down
    info = machine()
    weights = [w for layer in layers for w in layer.parameters()]
    rows = []
    with torch.inference_mode():
        read = seconds_per_call(lambda: [w.sum() for w in weights], args.calls, args.repeats)
        tiny = torch.ones(1, dtype=dtype)
        add = seconds_per_call(lambda: tiny + tiny, 20 * args.calls, args.repeats)
        w8, b8, x8 = (torch.randn(*shape, dtype=dtype) for shape in ((8, 8), (8,), (1, 8)))
        linear8 = seconds_per_call(lambda: F.linear(x8, w8, b8), 20 * args.calls, args.repeats)
        with CountOps() as counter:
            layers[0].infer(torch.randn(16, d, dtype=dtype), [16])
        for n in args.tokens:
            x = torch.randn(n, d, dtype=dtype)
            row = {"tokens": n,
                   "layer_us": 1e6 * seconds_per_call(lambda: layers[0].infer(x, [n]), args.calls, args.repeats),
                   "six_layers_cold_us": 1e6 * seconds_per_call(lambda: [layer.infer(x, [n]) for layer in layers],
                                                                args.calls, args.repeats) / len(layers)}
            for name, (w, b) in matrices(layers[0]).items():
                xin = torch.randn(n, w.shape[1], dtype=dtype)
                hot = seconds_per_call(lambda: F.linear(xin, w, b), args.calls, args.repeats)
                every = [matrices(layer)[name] for layer in layers]
                cold = seconds_per_call(lambda: [F.linear(xin, wi, bi) for wi, bi in every], args.calls,
                                        args.repeats) / len(layers)
                flop, nbytes = 2 * n * w.numel(), w.numel() * w.element_size()
                row[name] = {"hot_us": 1e6 * hot, "cold_us": 1e6 * cold, "gflops_hot": flop / hot / 1e9,
                             "gflops_cold": flop / cold / 1e9, "weight_gb_per_s_cold": nbytes / cold / 1e9}
            row["matmuls_cold_us"] = sum(row[name]["cold_us"] for name in names)
            row["matmuls_hot_us"] = sum(row[name]["hot_us"] for name in names)
            rows.append(row)
    layer_bytes = sum(w.numel() * w.element_size() for w in layers[0].parameters())
    six_bytes = sum(w.numel() * w.element_size() for w in weights)
    n_ops = sum(counter.ops.values())
    # t(n) = a + b n, least squares over the layer's cold times
    ns = [r["tokens"] for r in rows]
    ts = [r["six_layers_cold_us"] for r in rows]
    mn, mt = statistics.mean(ns), statistics.mean(ts)
    slope = sum((a - mn) * (b - mt) for a, b in zip(ns, ts)) / sum((a - mn) ** 2 for a in ns)
    intercept = mt - slope * mn
    report = {"command": "python " + " ".join(sys.argv), "machine": info, "loadavg_after": os.getloadavg(),
              "threads": torch.get_num_threads(), "dtype": args.dtype, "layer_weight_mb": layer_bytes / 2 ** 20,
              "six_layers_weight_mb": six_bytes / 2 ** 20, "read_six_layers_us": 1e6 * read,
              "read_gb_per_s": six_bytes / read / 1e9,
              "add_1_element_us": 1e6 * add, "linear_8x8_us": 1e6 * linear8,
              "ops_per_layer": counter.ops, "ops_per_layer_total": n_ops,
              "fit_us": {"a": intercept, "b_per_token": slope}, "rows": rows}
    atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(report, indent=1) + "\n"))
    print(f"{report['threads']} threads, {args.dtype}. One layer: {layer_bytes / 2 ** 20:.1f} MB of weights; the six: "
          f"{report['six_layers_weight_mb']:.1f} MB, read once in {report['read_six_layers_us']:.0f} us "
          f"({report['read_gb_per_s']:.1f} GB/s)")
    print(f"fixed cost per op: a 1-element add {report['add_1_element_us']:.1f} us, F.linear 1x8x8 "
          f"{report['linear_8x8_us']:.1f} us; one Layer.infer dispatches {n_ops} aten ops")
    print(f"{'tokens':>6} {'layer us':>9} {'cold us':>8} {'matmuls cold':>13} {'hot':>6}   "
          + "  ".join(f"{m + ' cold us (GB/s)':>22}" for m in names))
    for r in rows:
        print(f"{r['tokens']:>6} {r['layer_us']:>9.0f} {r['six_layers_cold_us']:>8.0f} {r['matmuls_cold_us']:>13.0f} "
              f"{r['matmuls_hot_us']:>6.0f}   "
              + "  ".join(f"{r[m]['cold_us']:>14.0f} ({r[m]['weight_gb_per_s_cold']:>5.1f})" for m in names))
    print(f"fit over n: a layer takes {intercept:.0f} us + {slope:.1f} us per token (the six layers in turn); "
          f"{n_ops} ops x {report['linear_8x8_us']:.1f} us = {n_ops * report['linear_8x8_us']:.0f} us of dispatch at "
          f"most; reading its weights at {report['read_gb_per_s']:.1f} GB/s: "
          f"{layer_bytes / (report['read_gb_per_s'] * 1e9) * 1e6:.0f} us")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
