"""
Seconds, for bench.py and the micro-benchmarks of results/: one pass over batches, the median time of a call,
where a pass spends its time (per module), whether a call synchronises with a GPU, and the machine a benchmark
ran on. The one function that measures a method's speedup, the figure train.py prints, is flops.measure_speedup.
"""

import datetime
import os
import platform
import statistics
import time

import torch

from flops import cpu_name, synchronize


def one_pass(run, batches, device="cpu"):
    """Seconds to run every batch once (waiting for the GPU to finish, on cuda)."""
    synchronize(device)
    start = time.perf_counter()
    for b in batches:
        run(b)
    synchronize(device)
    return time.perf_counter() - start


def seconds_per_call(fn, calls, repeats, warmup=3):
    """The median over `repeats` runs of the mean seconds of one call of fn() in a run of `calls`, after
    `warmup` untimed calls: for the micro-benchmarks of results/ (a CPU op, a layer), not for a speedup."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def module_times(model, run, batches, device="cpu"):
    """Seconds spent inside the embeddings, each encoder layer, the predictors and the head during one
    pass; "other" is the rest: padding bias, and in pruned runs the gather/scatter and mask
    bookkeeping of skim.py. Each part's forward and infer (the fast paths call Layer.infer, which
    forward hooks do not see) are replaced by timed wrappers for the pass, then restored."""
    parts = {"embeddings": [model.bert.embeddings], "predictors": list(model.predictors),
             "head": [model.bert.pooler, model.bert.classifier],
             **{f"layer {i}": [layer] for i, layer in enumerate(model.bert.layers)}}
    spent, wrapped = dict.fromkeys(parts, 0.0), []

    def timed(method, name):
        def wrapper(*args, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            out = method(*args, **kwargs)
            synchronize(device)
            spent[name] += time.perf_counter() - start
            return out
        return wrapper

    for name, modules in parts.items():
        for m in modules:
            for method in ("forward", "infer"):
                if hasattr(m, method):
                    setattr(m, method, timed(getattr(m, method), name))  # an instance attribute, over the class's
                    wrapped.append((m, method))
    try:
        total = one_pass(run, batches, device)
    finally:
        for m, method in wrapped:
            delattr(m, method)
    return {**spent, "other": total - sum(spent.values()), "total": total}


def host_syncs(run, batch, device):
    """Whether one call run(batch) synchronises with the host, on cuda (torch.cuda.set_sync_debug_mode
    "error": an op that waits for the GPU raises): "none", or the first line of the error."""
    if device != "cuda":
        return "not checked (cpu)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        run(batch)
        return "none"
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)


def machine(device="cpu"):
    gpu = ({"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32} if device == "cuda" else {})
    return {"torch": torch.__version__, "device": device, **gpu, "threads": torch.get_num_threads(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_before": os.getloadavg()}
