"""
Speed of our encoder (model.Bert) against HF transformers' eager BertModel: forward + backward on the
same CPU batch (default 32 x 64 tokens, the embedded all-MiniLM-L6-v2), interleaved, after warm-up;
medians reported. It imports transformers, the reference, as results/ and tests/ may.

    python results/bench_encoder.py [--batch 32] [--length 64] [--repeats 20] [--out results/encoder_speed.json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import checkpoint  # noqa: E402
import model  # noqa: E402
from benchmarks.timing import machine  # noqa: E402


def step_seconds(forward, ids, mask, types):
    start = time.perf_counter()
    hidden = forward(ids, mask, types)
    hidden.float().pow(2).mean().backward()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="results/encoder_speed.json")
    args = p.parse_args()

    torch.manual_seed(0)
    ours = model.Bert.from_pretrained().train()
    hf = transformers.BertModel.from_pretrained(checkpoint.default_checkpoint_dir(), attn_implementation="eager").train()
    for m in (ours, hf):  # dropout off so both do the same arithmetic; autograd still runs
        for module in m.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    ids = torch.randint(1000, ours.config.vocab_size, (args.batch, args.length))
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    runners = {"ours": lambda i, m, t: ours(i, m, t)[0],
               "hf_eager": lambda i, m, t: hf(input_ids=i, attention_mask=m, token_type_ids=t).last_hidden_state}
    times = {name: [] for name in runners}
    for r in range(args.warmup + args.repeats):
        for name, run in runners.items():  # interleaved, so drifts in machine load hit both alike
            ours.zero_grad(set_to_none=True)
            hf.zero_grad(set_to_none=True)
            t = step_seconds(run, ids, mask, types)
            if r >= args.warmup:
                times[name].append(t)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        "command": "python " + " ".join(sys.argv),
        "batch": args.batch, "length": args.length, "repeats": args.repeats,
        "ours_seconds": round(median["ours"], 4), "hf_eager_seconds": round(median["hf_eager"], 4),
        "ratio_ours_over_hf": round(median["ours"] / median["hf_eager"], 3),
        "transformers": transformers.__version__, "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(result, indent=2) + "\n"))


if __name__ == "__main__":
    main()
