"""
CPU wall-clock of Transkimmer's real pruning (skim.py, prune=True) against the dense BERT, beside
the FLOPs speedup that flops.py predicts for the same runs (Guan et al., ACL 2022, Sec. 5: the
paper reports FLOPs; this measures whether they turn into time).

    python bench.py                              # forced keep ratios 1.0, 0.5, 0.25, default checkpoint
    python bench.py --checkpoint out/sst2        # a trained Transkimmer: its predictors decide
    python bench.py --profile                    # + where the time goes, per layer

What is timed: one pass over the SST-2 dev inputs, tokenized and batched beforehand (max length 64,
each batch padded to its longest example, dev order), under torch.inference_mode. Each configuration
first makes one untimed warm-up pass (the pruned ones collect their masks for the FLOPs on it), then
--repeats timed passes; within a pass the configurations take turns batch by batch, so that a change
in machine load hits them alike. The median pass is reported (the fastest too, in the JSON). torch's
thread count is left at its default unless --threads is given (torch.get_num_threads() is recorded).
On a machine shared with other jobs the timings are noisy, and with more busy threads than cores each
parallel op can wait for a descheduled thread, so the load average before and after is recorded too.
The default run takes about 5 minutes on 2 cores (most of it batch 1).

Forced keep ratios (no --checkpoint): at layer 0 each example keeps its first ceil(r * n) real tokens
(n = its length; [CLS] is position 0, so it is kept) and every later layer keeps all of those, so
every layer processes a fraction r of every example, rounded up. skim.py does not run the predictors
when decisions are given, so the timed pruned pass does not include their cost, and the FLOPs side
leaves them out as well (FlopsCounter(predictors=False)). With --checkpoint the predictors decide;
their cost is then both timed and counted.

Columns: measured = dense time / pruned time. FLOPs = flops.py's speedup with no padding (each
example at its real length; the honest figure). executed = the FLOPs speedup of what the code really
computes: dense padded to each batch's longest example, pruned re-padded at each layer to the batch's
largest kept count (flops.padded_like_pruning). meas/FLOPs = measured / FLOPs.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import data
import flops
from model import ModelError, atomic_write
from skim import Transkimmer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--checkpoint", default=None, help="a Transkimmer saved by train.py (default: forced keep ratios "
                                                      "on the embedded all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="GLUE folder, holding SST-2/ (default: $GLUE_DIR)")
    p.add_argument("--task", default="sst2", help="GLUE task whose first dev split is used (default: sst2)")
    p.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                   help="forced fraction of tokens every layer keeps (ignored with --checkpoint)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dev examples")
    p.add_argument("--profile", action="store_true", help="also print where the time goes, per layer")
    p.add_argument("--out", default="results/bench_cpu.json")
    args = p.parse_args(argv)
    if min([args.repeats, *args.batch_sizes]) < 1 or any(v is not None and v < 1 for v in (args.limit, args.threads)):
        p.error("--repeats, --batch-sizes, --limit and --threads must be >= 1")
    if not all(0 < r <= 1 for r in args.keep_ratios):
        p.error("--keep-ratios must lie in (0, 1]")
    return args


def forced_decisions(attention_mask, ratio, num_layers):
    """L (B, N) decisions: layer 0 keeps the first ceil(ratio * n) real tokens of each example, later
    layers keep everything still there (skim.py applies the cumulative rule)."""
    B, N = attention_mask.shape
    kept = torch.tensor([math.ceil(ratio * n - 1e-9) for n in attention_mask.sum(1).tolist()])  # (B,)
    first = (torch.arange(N)[None, :] < kept[:, None]).float()                                   # (B, N)
    return [first] + [torch.ones_like(first)] * (num_layers - 1)


def label(name):
    return name if name == "dense" else "predicted" if name is None else f"keep {name}"


def one_pass(run, batches, device="cpu"):
    """Seconds to run every batch once (waiting for the GPU to finish, on cuda)."""
    start = time.perf_counter()
    for b in batches:
        run(b)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_pass(passes):
    """{name: (run, batches)} -> {name: seconds}: one pass of each, taking turns batch by batch."""
    seconds = dict.fromkeys(passes, 0.0)
    for i in range(len(next(iter(passes.values()))[1])):
        for name, (run, batches) in passes.items():
            start = time.perf_counter()
            run(batches[i])
            seconds[name] += time.perf_counter() - start
    return seconds


def module_times(model, run, batches):
    """Seconds spent inside the embeddings, each encoder layer, the predictors and the head during one
    pass (forward hooks); "other" is the rest: padding bias, and in pruned runs the gather/scatter
    and mask bookkeeping of skim.py."""
    parts = {"embeddings": [model.bert.embeddings], "predictors": list(model.predictors),
             "head": [model.bert.pooler, model.bert.classifier],
             **{f"layer {i}": [layer] for i, layer in enumerate(model.bert.layers)}}
    spent, started, hooks = dict.fromkeys(parts, 0.0), {}, []
    for name, modules in parts.items():
        for m in modules:
            def pre(m, args, name=name):
                started[name] = time.perf_counter()

            def post(m, args, out, name=name):
                spent[name] += time.perf_counter() - started[name]
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        total = one_pass(run, batches)
    finally:
        for h in hooks:
            h.remove()
    return {**spent, "other": total - sum(spent.values()), "total": total}


def cpu_name():
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def machine():
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_before": os.getloadavg()}


def count_flops(run, batches, config, seq_len, predictors):
    """Run each batch once (this is also the warm-up) and count the FLOPs from its masks: as flops.py
    defines them (each example at its real length), and as executed (re-padded; see the docstring)."""
    real, executed = (flops.FlopsCounter(config, seq_len, predictors) for _ in range(2))
    for b in batches:
        masks = run(b).masks
        real.add(masks, b["attention_mask"])
        executed.add(*flops.padded_like_pruning(masks, b["attention_mask"]))
    return real.summary(), executed.summary()


def bench(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    model = Transkimmer.from_pretrained(args.checkpoint).eval()
    if model.tokenizer is None:
        raise ModelError(f"{args.checkpoint}: the checkpoint has no tokenizer.json or vocab.txt")
    task = data.get_task(args.task)
    data_dir = data.find_data_dir(task, args.data_dir)
    examples = data.read_split(task, task.dev_splits[0], data_dir)
    encoded = data.encode(model.tokenizer, examples[:args.limit], task.max_seq_length)
    config, L = model.config, model.config.num_hidden_layers
    forced = args.checkpoint is None
    ratios = args.keep_ratios if forced else [None]  # None: the predictors decide

    def dense(b):
        return model.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    def pruned(b):
        return model(b["input_ids"], b["attention_mask"], b["token_type_ids"], prune=True, decisions=b["decisions"])

    results, profiles = [], {}
    for bs in args.batch_sizes:
        batches = list(data.batches(encoded, bs))
        passes = {"dense": (dense, batches)}  # name -> (run one batch, the batches)
        for r in ratios:
            passes[r] = (pruned, [dict(b, decisions=forced_decisions(b["attention_mask"], r, L) if forced else None)
                                  for b in batches])
        times = {name: [] for name in passes}
        with torch.inference_mode():
            one_pass(dense, batches)  # warm-up
            counts = {r: count_flops(pruned, passes[r][1], config, task.max_seq_length, not forced) for r in ratios}
            for rep in range(args.repeats):
                for name, t in interleaved_pass(passes).items():
                    times[name].append(t)
                print(f"batch {bs}, pass {rep + 1}/{args.repeats}: "
                      + ", ".join(f"{label(name)} {ts[-1]:.2f}s" for name, ts in times.items()),
                      file=sys.stderr, flush=True)
            if args.profile:
                profiles[bs] = {label(name): module_times(model, run, its_batches)
                                for name, (run, its_batches) in passes.items()}
        t_dense = statistics.median(times["dense"])
        for r in ratios:
            real, executed = counts[r]
            t_pruned = statistics.median(times[r])
            results.append({
                "batch_size": bs, "keep_ratio": r, "decisions": "forced" if forced else "predictors",
                "kept_fraction_mean": statistics.mean(real["kept_fraction"]),
                "dense_seconds": t_dense, "pruned_seconds": t_pruned,
                "measured_speedup": t_dense / t_pruned,
                "flops_speedup": real["none"]["speedup"],
                "measured_over_flops": t_dense / t_pruned / real["none"]["speedup"],
                "flops_speedup_executed": executed["none"]["speedup"],
                "flops_speedup_sequence": real["sequence"]["speedup"],
                "measured_speedup_fastest": min(times["dense"]) / min(times[r]),
                "dense_seconds_all": times["dense"], "pruned_seconds_all": times[r],
                "kept_fraction": real["kept_fraction"],
            })
    info["loadavg_after"] = os.getloadavg()
    return {"command": "python " + shlex.join(sys.argv), "machine": info,
            "checkpoint": args.checkpoint or "default (all-MiniLM-L6-v2, untrained head)",
            "task": task.name, "split": task.dev_splits[0], "data_dir": str(data_dir), "examples": len(encoded),
            "max_seq_length": task.max_seq_length, "repeats": args.repeats,
            "predictor_cost": "not run, not counted (forced decisions)" if forced else "timed and counted",
            "results": results, **({"profile": profiles} if args.profile else {})}


def print_report(report):
    m = report["machine"]
    print(f"{report['examples']} {report['task']} {report['split']} examples, {m['cpu']}, {m['threads']} threads, "
          f"torch {m['torch']}, load {m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}, "
          f"median of {report['repeats']}; predictors: {report['predictor_cost']}")
    print(f"{'batch':>5} {'keep':>6} {'dense s':>8} {'pruned s':>9} {'measured':>9} {'FLOPs':>7} {'executed':>9} "
          f"{'meas/FLOPs':>11}")
    for r in report["results"]:
        keep = f"{r['keep_ratio']:.2f}" if r["keep_ratio"] is not None else f"~{r['kept_fraction_mean']:.2f}"
        print(f"{r['batch_size']:>5} {keep:>6} {r['dense_seconds']:>8.3f} {r['pruned_seconds']:>9.3f} "
              f"{r['measured_speedup']:>8.2f}x {r['flops_speedup']:>6.2f}x {r['flops_speedup_executed']:>8.2f}x "
              f"{r['measured_over_flops']:>11.2f}")
    for bs, runs in report.get("profile", {}).items():
        print(f"\nwhere the time goes, batch {bs} (seconds per pass, one pass with forward hooks):")
        print(f"{'':>12}" + "".join(f"{name:>12}" for name in runs))
        for part in next(iter(runs.values())):
            print(f"{part:>12}" + "".join(f"{t[part]:>12.3f}" for t in runs.values()))


def main(argv=None):
    args = parse_args(argv)
    try:
        report = bench(args)
    except (data.DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: Path(p).write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
