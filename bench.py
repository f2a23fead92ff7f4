"""
Wall-clock of Transkimmer's real pruning (skim.py) against the dense BERT, on the CPU or a CUDA GPU,
beside the FLOPs speedup that flops.py predicts for the same runs (Guan et al., ACL 2022, Sec. 5: the
paper reports FLOPs; this measures whether they turn into time).

    python bench.py                              # forced keep ratios 1.0, 0.5, 0.25, default checkpoint
    python bench.py --checkpoint out/sst2        # a trained Transkimmer: its predictors decide
    python bench.py --profile                    # + where the time goes, per layer
    python bench.py --device cuda --batch-sizes 1 32 256     # on a GPU (writes results/bench_cuda.json)

Three pruned paths, each against the dense model run the same way, each with its FLOPs convention:
    prune   Transkimmer(..., prune=True) against model.Bert's forward: every layer computes every
            kept token's output, skimmed tokens' states are written back (Eq. 3). flops.py's "all".
    infer   Transkimmer.infer against BertForSequenceClassification.infer: the packed path (each
            batch's tokens in one tensor, no padding anywhere: model.pack), and the last layer
            computes [CLS]'s output alone, in both. flops.py's "cls".
    fixed   gpu/fixed.py's infer_fixed against model.Bert's forward: the GPU path, in shapes fixed before the
            data is seen (no host synchronisation), each layer on C_i columns of every example, padded;
            capacities r per layer at keep ratio r, or, with --checkpoint, `fixed.capacity_for` the timed batches
            themselves (so nothing overflows; a deployment would set them on training sentences). flops.py's
            "all". On cuda each path is also run once under torch.cuda.set_sync_debug_mode("error"), and the
            JSON says whether it synchronised with the host ("host_syncs").
With --checkpoint, each batch size also gets "measured": flops.measure_speedup, the one function behind
the "measured" figure train.py prints, on the same batches (the infer path against the dense infer).
The dense model is also timed as Hugging Face transformers' eager BertForSequenceClassification,
the model users run today, with our weights (saved and loaded the HF way) on the same inputs, when
`transformers` is installed (the test extras). This is the one import of transformers outside
tests/: it is the reference, and the run goes on without it.

What is timed: one pass over the SST-2 dev inputs, tokenized and batched beforehand (max length 64,
each batch padded to its longest example, dev order), under torch.inference_mode. Each configuration
first makes one untimed warm-up pass (the pruned ones collect their masks for the FLOPs on it), then
--repeats timed passes; within a pass the configurations take turns batch by batch, so that a change
in machine load hits them alike. The median pass is reported (the fastest too, in the JSON). torch's
thread count is left at its default unless --threads is given (torch.get_num_threads() is recorded).
On a machine shared with other jobs the timings are noisy, and with more busy threads than cores each
parallel op can wait for a descheduled thread, so the load average before and after is recorded too.
Weights and activations are in --dtype, float32 by default (bfloat16 halves the bytes every weight
read moves). On cuda the model and the batches sit on the GPU beforehand (TF32 as torch's default leaves
it: off for matrix products), and each timed batch waits for the GPU to finish (torch.cuda.synchronize)
before its clock stops, so a time is the latency of that batch; --profile synchronizes around each part.
Batch 1 takes most of the time of a run; --paths and --batch-sizes shorten it.

Forced keep ratios (no --checkpoint): at layer 0 each example keeps its first ceil(r * n) real tokens
(n = its length; [CLS] is position 0, so it is kept) and every later layer keeps all of those, so
every layer processes a fraction r of every example, rounded up. skim.py does not run the predictors
when decisions are given, so the timed pruned pass does not include their cost, and the FLOPs side
leaves them out as well (FlopsCounter(predictors=False)). With --checkpoint the predictors decide;
their cost is then both timed and counted.

Columns: measured = dense time / pruned time, the dense model run as the path says. FLOPs = flops.py's
speedup with no padding (each example at its real length; the honest figure), under the path's
last-layer convention. executed = the FLOPs speedup of what the code really computes: on the prune
path, dense padded to each batch's longest example and pruned re-padded at each layer to the batch's
largest kept count (flops.padded_like_pruning); on the fixed path its columns (fixed.padded_to_columns); the infer path computes no padding on either side, so
there it is the FLOPs speedup itself. meas/FLOPs = measured / FLOPs. With forced ratios, two more columns split
the gap: no-overhead = dense time / the same dense pass's time on the kept tokens alone (cut_to_kept:
exactly what the pruned pass computes, with no pruning work at all), the most pruning could measure on
this machine, set by how the layers' time scales with their token count; overhead = pruned time / that
time, the cost of pruning itself (gathering, re-padding, masks). The dense table: ours/HF = our time /
HF eager's time (below 1: ours is faster), for our forward and for our fast path.
"""

import argparse
import json
import math
import os
import shlex
import statistics
import sys
from pathlib import Path

import torch

import data
import flops
from benchmarks.passes import count_flops, cut_to_kept, forced_decisions, hf_eager, label
from benchmarks.timing import host_syncs, machine, module_times, one_pass
from checkpoint import ModelError, atomic_write, read_config, resolve_checkpoint, why_not_writable
from gpu import fixed
from skim import Transkimmer


# the pruned paths: name -> (last-layer convention in flops.py, the dense pass it is measured against)
PATHS = {"prune": ("all", "dense"), "infer": ("cls", "dense fast"), "fixed": ("all", "dense")}
# --dtype: name -> torch dtype
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# the dense passes: name -> key prefix in the JSON
DENSE = {"HF eager": "hf_eager", "dense": "dense", "dense fast": "dense_fast"}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag or value as one line and exit code 2, as train.py's, not a usage dump."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--checkpoint", default=None, help="a Transkimmer saved by train.py (default: forced keep ratios "
                                                      "on the embedded all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="GLUE folder, holding SST-2/ (default: $GLUE_DIR)")
    p.add_argument("--task", default="sst2", help="GLUE task whose first dev split is used (default: sst2)")
    p.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                   help="forced fraction of tokens every layer keeps (ignored with --checkpoint)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                   help="the pruned paths to time (see the module docstring; default: all three)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dev examples")
    p.add_argument("--profile", action="store_true", help="also print where the time goes, per layer")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=list(DTYPES),
                   help="the weights' and activations' type, dense and pruned alike (default: float32)")
    p.add_argument("--out", default=None, help="JSON file to write (default: out/bench_DEVICE.json; the committed "
                                               "results/bench_*.json were written with --out)")
    args = p.parse_args(argv)
    args.out = args.out or f"out/bench_{args.device}.json"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available here")
    if min([args.repeats, *args.batch_sizes]) < 1 or any(v is not None and v < 1 for v in (args.limit, args.threads)):
        p.error("--repeats, --batch-sizes, --limit and --threads must be >= 1")
    if not all(0 < r <= 1 for r in args.keep_ratios):
        p.error("--keep-ratios must lie in (0, 1]")
    return args


def bench(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine(args.device)
    saved = read_config(resolve_checkpoint(args.checkpoint)) if args.checkpoint is not None else {}
    if args.checkpoint is not None and Transkimmer.config_key not in saved:
        raise ModelError(f"--checkpoint {args.checkpoint} is a dense model: it has no skim predictors, so there is "
                         "nothing to prune (leave --checkpoint out to time forced keep ratios)")
    if saved.get("finetuning_task") not in (None, data.get_task(args.task).name):
        raise ModelError(f"--checkpoint {args.checkpoint} was trained on {saved['finetuning_task']}, not "
                         f"{args.task}: time it with --task {saved['finetuning_task']}")
    dtype = DTYPES[args.dtype]
    model = Transkimmer.from_pretrained(args.checkpoint).to(args.device, dtype).eval()
    if model.tokenizer is None:
        raise ModelError(f"{args.checkpoint}: the checkpoint has no tokenizer.json or vocab.txt")
    task = data.get_task(args.task)
    data_dir = data.find_data_dir(task, args.data_dir)
    examples = data.read_split(task, task.dev_splits[0], data_dir)
    encoded = data.encode(model.tokenizer, examples[:args.limit], task.max_seq_length)
    config, L = model.config, model.config.num_hidden_layers
    forced = args.checkpoint is None
    ratios = args.keep_ratios if forced else [None]  # None: the predictors decide

    runs = {  # name -> run one batch (a pruned one also reads b["decisions"])
        "dense": lambda b: model.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
        "dense fast": lambda b: model.bert.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
        "prune": lambda b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"], prune=True,
                                 decisions=b["decisions"]),
        "infer": lambda b: model.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                       decisions=b["decisions"]),
        "fixed": lambda b: fixed.infer_fixed(model, b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                             b["capacity"], b["decisions"])[0],
    }

    def on_device(batch):
        """The batch's tensors (and forced decisions, a list of them, in --dtype) on args.device."""
        return {k: (v.to(args.device) if torch.is_tensor(v) else [d.to(args.device, dtype) for d in v]
                    if k == "decisions" and v else v) for k, v in batch.items()}

    hf = hf_eager(model.bert, on_device(next(data.batches(encoded, 8))), args.device, dtype)
    if hf is not None:
        runs["HF eager"] = hf[0]
    dense_names = [name for name in DENSE if name in runs]

    dense_results, results, profiles, measured = [], [], {}, []
    interrupted = None  # a Ctrl-C keeps the batch sizes measured before it
    for bs in args.batch_sizes:
        try:
            cpu_batches = list(data.batches(encoded, bs))
            batches = [on_device(b) for b in cpu_batches]
            passes = {name: (runs[name], batches) for name in dense_names}  # name -> (run one batch, the batches)
            fitted = None if forced else fixed.capacity_for(model, batches)  # no layer of these batches overflows
            for r in ratios:
                decided = [on_device(dict(b, decisions=forced_decisions(b["attention_mask"], r, L) if forced else None,
                                          capacity=[r] * L if forced else fitted)) for b in cpu_batches]
                passes.update({(path, r): (runs[path], decided) for path in args.paths})
                if forced and r < 1:
                    cut = [on_device(cut_to_kept(b, r)) for b in cpu_batches]
                    passes.update({("cut", path, r): (runs[PATHS[path][1]], cut) for path in args.paths})
            times = {name: [] for name in passes}
            with torch.inference_mode():
                for name in dense_names:
                    one_pass(runs[name], batches, args.device)  # warm-up
                counts = {(path, r): count_flops(runs[path], passes[path, r][1], lambda: flops.FlopsCounter(
                                  config, task.max_seq_length, not forced, PATHS[path][0]), path)
                          for path in args.paths for r in ratios}
                syncs = {(path, r): host_syncs(runs[path], passes[path, r][1][0], args.device)
                         for path in args.paths for r in ratios}
                for rep in range(args.repeats):
                    for name, t in flops.interleaved_pass(passes, args.device).items():
                        times[name].append(t)
                    print(f"batch {bs}, pass {rep + 1}/{args.repeats}: "
                          + ", ".join(f"{label(name)} {ts[-1]:.2f}s" for name, ts in times.items()),
                          file=sys.stderr, flush=True)
                if args.profile:
                    profiles[bs] = {label(name): module_times(model, run, its_batches, args.device)
                                    for name, (run, its_batches) in passes.items() if name != "HF eager"}
                if not forced:  # the figure train.py prints for this model: the one timing function, on these batches
                    measured.append({"batch_size": bs, **flops.measure_speedup(model, batches, args.repeats, args.device)})
            median = {name: statistics.median(ts) for name, ts in times.items()}
            dense_results.append({
                "batch_size": bs, **{f"{DENSE[name]}_seconds": median[name] for name in dense_names},
                **({"ours_over_hf": median["dense"] / median["HF eager"],
                    "fast_over_hf": median["dense fast"] / median["HF eager"]} if hf else {}),
                **{f"{DENSE[name]}_seconds_all": times[name] for name in dense_names},
            })
            for path in args.paths:
                last_layer, dense = PATHS[path]
                for r in ratios:
                    real, executed = counts[path, r]
                    t_dense, t_pruned = median[dense], median[path, r]
                    results.append({
                        "batch_size": bs, "keep_ratio": r, "path": path, "last_layer": last_layer,
                        "host_syncs": syncs[path, r], **({"capacity": passes[path, r][1][0]["capacity"]}
                                                         if path == "fixed" else {}),
                        "decisions": "forced" if forced else "predictors",
                        "kept_fraction_mean": statistics.mean(real["kept_fraction"]),
                        "dense_seconds": t_dense, "pruned_seconds": t_pruned,
                        "measured_speedup": t_dense / t_pruned,
                        "flops_speedup": real["none"]["speedup"],
                        "measured_over_flops": t_dense / t_pruned / real["none"]["speedup"],
                        "flops_speedup_executed": executed["none"]["speedup"],
                        "flops_speedup_sequence": real["sequence"]["speedup"],
                        "measured_speedup_fastest": min(times[dense]) / min(times[path, r]),
                        **({"cut_seconds": median["cut", path, r], "no_overhead_speedup": t_dense / median["cut", path, r],
                            "overhead": t_pruned / median["cut", path, r]} if ("cut", path, r) in median else {}),
                        "dense_seconds_all": times[dense], "pruned_seconds_all": times[path, r],
                        "kept_fraction": real["kept_fraction"],
                    })
        except KeyboardInterrupt:
            done = [d["batch_size"] for d in dense_results]
            if not done:
                raise
            interrupted = f"by Ctrl-C during batch size {bs}: batch sizes {', '.join(map(str, done))} are measured"
            measured = [m for m in measured if m["batch_size"] in done]
            break
    info["loadavg_after"] = os.getloadavg()
    return {"command": "python " + shlex.join(sys.argv), "machine": info, "dtype": args.dtype,
            "checkpoint": args.checkpoint or "default (all-MiniLM-L6-v2, untrained head)",
            "task": task.name, "split": task.dev_splits[0], "data_dir": str(data_dir), "examples": len(encoded),
            "max_seq_length": task.max_seq_length, "repeats": args.repeats,
            "predictor_cost": "not run, not counted (forced decisions)" if forced else "timed and counted",
            "hf_eager": {"transformers": hf[1], "max_abs_logit_diff": hf[2]} if hf else "transformers not installed",
            **({"interrupted": interrupted} if interrupted else {}),
            "dense": dense_results, "results": results, **({"measured": measured} if measured else {}),
            **({"profile": profiles} if args.profile else {})}


def print_report(report):
    m = report["machine"]
    where = f"{m['gpu']} (cuda {m['cuda']})" if m.get("device") == "cuda" else f"{m['cpu']}, {m['threads']} threads"
    print(f"{report['examples']} {report['task']} {report['split']} examples, {where}, {report.get('dtype', 'float32')}, "
          f"torch {m['torch']}, load {m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}, "
          f"median of {report['repeats']}; predictors: {report['predictor_cost']}")
    hf = report["hf_eager"]
    print("\ndense: " + (f"HF transformers {hf['transformers']} eager against ours (logits differ by at most "
                          f"{hf['max_abs_logit_diff']:.1e})" if isinstance(hf, dict) else f"ours only ({hf})"))
    print(f"{'batch':>5} {'HF eager s':>11} {'dense s':>8} {'fast s':>8} {'ours/HF':>8} {'fast/HF':>8}")
    for d in report["dense"]:
        print(f"{d['batch_size']:>5} {d.get('hf_eager_seconds', math.nan):>11.3f} {d['dense_seconds']:>8.3f} "
              f"{d['dense_fast_seconds']:>8.3f} {d.get('ours_over_hf', math.nan):>8.2f} "
              f"{d.get('fast_over_hf', math.nan):>8.2f}")
    print("\npruned, against the dense model run the same way (path: prune = forward(prune=True), last layer "
          "\"all\"; infer = the packed path, last layer \"cls\"; fixed = infer_fixed, fixed shapes, \"all\")")
    print(f"{'batch':>5} {'keep':>6} {'path':>6} {'dense s':>8} {'pruned s':>9} {'measured':>9} {'FLOPs':>7} "
          f"{'executed':>9} {'meas/FLOPs':>11} {'no-overhead':>12} {'overhead':>9}")
    for r in report["results"]:
        keep = f"{r['keep_ratio']:.2f}" if r["keep_ratio"] is not None else f"~{r['kept_fraction_mean']:.2f}"
        cut = f"{r['no_overhead_speedup']:>11.2f}x {r['overhead']:>9.2f}" if "overhead" in r else ""
        print(f"{r['batch_size']:>5} {keep:>6} {r['path']:>6} {r['dense_seconds']:>8.3f} {r['pruned_seconds']:>9.3f} "
              f"{r['measured_speedup']:>8.2f}x {r['flops_speedup']:>6.2f}x {r['flops_speedup_executed']:>8.2f}x "
              f"{r['measured_over_flops']:>11.2f} {cut}")
    for m in report.get("measured", []):
        print(f"batch {m['batch_size']}: measured {m['measured_speedup']:.2f}x ({m['timing']}), as train.py measures it")
    for bs, runs in report.get("profile", {}).items():
        print(f"\nwhere the time goes, batch {bs} (seconds per pass, one pass, each part timed):")
        print(f"{'':>12}" + "".join(f"{name:>17}" for name in runs))
        for part in next(iter(runs.values())):
            print(f"{part:>12}" + "".join(f"{t[part]:>17.3f}" for t in runs.values()))


def check_out(out):
    """Fail before the benchmark, not after it: --out must be a file in a folder that can be written
    (checkpoint.why_not_writable)."""
    if out.is_dir():
        raise ModelError(f"--out {out} is a folder; give the JSON file to write")
    if (why := why_not_writable(out.parent, f".{out.name}.write-test")) is not None:
        raise ModelError(f"--out {out}: its folder is not writable ({why})")


def main(argv=None):
    """The command line: a problem the user can fix is one line and exit code 2; Ctrl-C writes what was measured
    before it (the batch sizes done), or says that nothing was, and exits with 130."""
    args = parse_args(argv)
    out = Path(args.out)
    try:
        check_out(out)
        report = bench(args)
        print_report(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda p: Path(p).write_text(json.dumps(report, indent=2) + "\n"))
    except (data.DataError, ModelError, OSError) as e:  # OSError: WriteFailed, the disk filled up meanwhile
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted before a batch size was measured: nothing was written", file=sys.stderr)
        sys.exit(130)
    print(f"wrote {out}" + (f" (interrupted {report['interrupted']})" if "interrupted" in report else ""))


if __name__ == "__main__":
    main()
