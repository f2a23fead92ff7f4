"""
How to run attention on a packed batch (model.pack: the batch's tokens in one (T, d) tensor, example
after example, no padding), where each example must attend over its own tokens alone. The projections
and the feed-forward run on the T rows whatever is chosen here; only attention needs the examples apart.
The ways, timed on the same q, k, v:

    loop      one F.scaled_dot_product_attention call per example, on its own rows
              (model.packed_attention, what model.SelfAttention.infer runs): exactly sum(n_b^2)
              scores, B calls
    loop 3-d  the same with each example's heads as a 3-d (nh, n, hs) input instead of
              model.packed_attention's 4-d (1, nh, n, hs)
    grouped   one call per distinct length, on the examples of that length gathered into a (g, m, d)
              batch, scattered back: sum(n_b^2) scores, as many calls as distinct lengths
    padded    scatter the rows into a (B, n_max, d) batch, one call with a padding mask, gather back:
              B n_max^2 scores, one call, two copies
    block     one call over all T rows with a block-diagonal mask: T^2 scores, most of them masked
    nested    torch.nested jagged tensors (layout=torch.jagged) through one call

    python results/packed_attention.py [--threads N] [--out results/packed_attention.json]

Each way's index tensors and masks are made beforehand and not timed (the loop needs none), so the
comparison flatters the others. The token counts are those of real batches: the SST-2 dev sentences
(the default checkpoint's tokenizer, max length 64, dev order) in batches of 8 and 32, every token kept
(keep 1.0), or the first half (keep 0.5) or 15% (keep 0.15) of each example's, as bench.py's forced
ratios keep them. Reported per batch size and keep: ms per pass over the dev set, each way's largest
difference to the loop's output, and the scores each computes relative to the loop's. The median of
--repeats passes, the ways taking turns batch by batch.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import machine  # noqa: E402
import data  # noqa: E402
from checkpoint import atomic_write  # noqa: E402
from model import BertForSequenceClassification, packed_attention  # noqa: E402


def attend_3d(q, k, v, nh):
    m, d = q.shape
    q, k, v = (t.view(-1, nh, d // nh).transpose(0, 1) for t in (q, k, v))        # (nh, m or n, hs)
    return F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(m, d)   # (m, d)


def loop_3d(q, k, v, lengths, nh):
    return torch.cat([attend_3d(qi, ki, vi, nh) for qi, ki, vi in zip(q.split(lengths), k.split(lengths),
                                                                          v.split(lengths))])


def grouped(q, k, v, lengths, nh, groups):
    """groups: [(m, rows (g m,))]: the examples of m tokens, their rows; one call per distinct length."""
    T, d = q.shape
    y = torch.empty_like(q)
    for m, rows in groups:
        qg, kg, vg = (t.index_select(0, rows).view(-1, m, nh, d // nh).transpose(1, 2)  # (g, nh, m, hs)
                      for t in (q, k, v))
        y.index_copy_(0, rows, F.scaled_dot_product_attention(qg, kg, vg).transpose(1, 2).reshape(-1, d))
    return y


def padded(q, k, v, lengths, nh, rows, real):
    """rows (T,): each packed row's place b * n_max + i in the padded batch; real (B, n_max)."""
    B, n = real.shape
    T, d = q.shape
    qkv = torch.cat([q, k, v], 1)                                                  # (T, 3d)
    x = qkv.new_zeros(B * n, 3 * d).index_copy_(0, rows, qkv).view(B, n, 3 * d)   # (B, n, 3d)
    qp, kp, vp = (t.view(B, n, nh, d // nh).transpose(1, 2) for t in x.split(d, 2))  # (B, nh, n, hs)
    bias = (~real)[:, None, None, :].to(q.dtype) * torch.finfo(q.dtype).min        # (B, 1, 1, n)
    y = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=bias)                # (B, nh, n, hs)
    return y.transpose(1, 2).reshape(B * n, d).index_select(0, rows)               # (T, d)


def block(q, k, v, lengths, nh, segment_bias):
    T, d = q.shape
    qb, kb, vb = (t.view(1, T, nh, d // nh).transpose(1, 2) for t in (q, k, v))    # (1, nh, T, hs)
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=segment_bias)        # (1, nh, T, hs)
    return y.transpose(1, 2).reshape(T, d)


def nested(q, k, v, lengths, nh, offsets):
    T, d = q.shape

    def jagged(t):
        return torch.nested.nested_tensor_from_jagged(t, offsets=offsets).unflatten(-1, (nh, d // nh)).transpose(1, 2)
    y = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v))           # (B, nh, j, hs)
    return y.transpose(1, 2).flatten(-2).values()                                  # (T, d)


def prepared(lengths, d, nh, seed):
    """One batch's q, k, v (T, d) and each way's extra inputs, made before the clock starts."""
    g = torch.Generator().manual_seed(seed)
    T, B, n = sum(lengths), len(lengths), max(lengths)
    q, k, v = (torch.randn(T, d, generator=g) for _ in range(3))
    lens = torch.tensor(lengths)
    real = torch.arange(n)[None, :] < lens[:, None]                                # (B, n)
    rows = real.reshape(-1).nonzero()[:, 0]                                        # (T,)
    segment = torch.repeat_interleave(torch.arange(B), lens)                       # (T,)
    segment_bias = (segment[:, None] != segment[None, :]).float() * torch.finfo(torch.float32).min  # (T, T)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    starts = offsets[:-1]
    groups = [(m, torch.cat([torch.arange(int(s), int(s) + m) for s, n in zip(starts, lengths) if n == m]))
              for m in sorted(set(lengths))]
    heads = [t.view(T, nh, d // nh) for t in (q, k, v)]                           # 3 x (T, nh, hs)
    return {"loop": lambda: packed_attention(*heads, lengths, lengths),
            "loop 3-d": lambda: loop_3d(q, k, v, lengths, nh),
            "grouped": lambda: grouped(q, k, v, lengths, nh, groups),
            "padded": lambda: padded(q, k, v, lengths, nh, rows, real),
            "block": lambda: block(q, k, v, lengths, nh, segment_bias),
            "nested": lambda: nested(q, k, v, lengths, nh, offsets)}, {
            "loop": sum(m * m for m in lengths), "loop 3-d": sum(m * m for m in lengths),
            "grouped": sum(m * m for m in lengths), "padded": B * n * n, "block": T * T,
            "nested": sum(m * m for m in lengths)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.5, 0.15])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results/packed_attention.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = BertForSequenceClassification.from_pretrained(None, num_labels=2)
    d, nh = model.config.hidden_size, model.config.num_attention_heads
    task = data.get_task("sst2")
    examples = data.read_split(task, "dev", data.find_data_dir(task, args.data_dir))
    encoded = data.encode(model.tokenizer, examples, task.max_seq_length)
    info = machine()
    rows = []
    with torch.no_grad():  # nested tensors refuse inference_mode in torch 2.13
        for bs in args.batch_sizes:
            for r in args.keep_ratios:
                batches = [[math.ceil(r * n - 1e-9) for n in b["attention_mask"].sum(1).tolist()]
                           for b in data.batches(encoded, bs)]
                ways = [prepared(lengths, d, nh, seed=i) for i, lengths in enumerate(batches)]
                reference = [runs["loop"]() for runs, _ in ways]
                diff = {name: max(float((runs[name]() - ref).abs().max()) for (runs, _), ref in zip(ways, reference))
                        for name in ways[0][0]}
                scores = {name: sum(s[name] for _, s in ways) / sum(s["loop"] for _, s in ways) for name in ways[0][1]}
                seconds = {name: [] for name in ways[0][0]}
                for _ in range(args.repeats):
                    spent = dict.fromkeys(seconds, 0.0)
                    for runs, _ in ways:
                        for name, run in runs.items():
                            start = time.perf_counter()
                            run()
                            spent[name] += time.perf_counter() - start
                    for name, s in spent.items():
                        seconds[name].append(s)
                rows.append({"batch_size": bs, "keep_ratio": r, "batches": len(batches),
                             "tokens": sum(map(sum, batches)),
                             "ms": {name: 1e3 * statistics.median(s) for name, s in seconds.items()},
                             "max_abs_diff_to_loop": diff, "scores_over_loop": scores})
    report = {"command": "python " + " ".join(sys.argv), "machine": info, "loadavg_after": os.getloadavg(),
              "threads": torch.get_num_threads(), "hidden_size": d, "heads": nh, "rows": rows}
    atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(report, indent=1) + "\n"))
    names = list(rows[0]["ms"])
    print(f"{report['threads']} threads; attention alone, ms per pass over SST-2 dev "
          f"(scores computed relative to the loop's in brackets)")
    print(f"{'batch':>5} {'keep':>5} " + "".join(f"{n:>16}" for n in names))
    for row in rows:
        print(f"{row['batch_size']:>5} {row['keep_ratio']:>5.2f} "
              + "".join(f"{row['ms'][n]:>9.1f} ({row['scores_over_loop'][n]:>4.1f})" for n in names))
    print("largest difference to the loop's output: "
          + ", ".join(f"{n} {max(r['max_abs_diff_to_loop'][n] for r in rows):.1e}" for n in names))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
