"""
Wall-clock timing, and the one function that measures a method's speedup: the figure train.py prints
after its evaluation ("measured"), bench.py reports for a saved model and results/compare.py tabulates.

What measure_speedup times: the method's inference path, `method.infer` (the skipped work removed, the
last layer computing [CLS]'s output alone), against its dense model run the same way, `method.bert.infer`,
on the same batches (tokenized and padded beforehand), under torch.inference_mode. One untimed warm-up
pass of each, then `repeats` timed passes; within a pass the two take turns batch by batch, so that a
change in machine load hits both alike. The median pass of each is reported, with what was measured
(path, device, batch size, passes, threads), since a CPU's figure depends on all of them.
"""

import platform
import statistics
import time

import torch


def cpu_name():
    """The processor's model name (/proc/cpuinfo), or what platform knows of it."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of the x86 instructions that multiply bfloat16


def cpu_flags():
    """The processor's feature flags (/proc/cpuinfo), an empty set where there is no such file (macOS, Windows)."""
    try:
        return set(next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")))
    except (OSError, StopIteration):
        return set()


def native_bf16(device="cpu", flags=None):
    """Does the machine multiply bfloat16 matrices in hardware (train.py --precision auto takes bf16 there)?
    A CUDA GPU that supports bfloat16 (Ampere and later); a CPU with AMX or AVX512-BF16 (`flags`: its
    feature flags, default cpu_flags()). Another CPU has no bfloat16 arithmetic of its own (oneDNN converts
    to float32 on the fly), so nothing is to be gained there."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else set(flags)))


def machine_line(device="cpu"):
    """What a run trains or is timed on, in one line: the processor (or GPU), the threads, torch. Two machines'
    arithmetic differs in rounding, so a seed trained on each is not the same run."""
    where = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else cpu_name()
    return describe_machine(where, torch.get_num_threads(), torch.__version__)


def describe_machine(where, threads, torch_version):
    """machine_line's words, also for a machine recorded earlier (bench.py's JSON)."""
    return f"{where}, {threads} threads, torch {torch_version}"


def synchronize(device):
    """Wait for the GPU's queued work (on cuda; nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def one_pass(run, batches, device="cpu"):
    """Seconds to run every batch once (waiting for the GPU to finish, on cuda)."""
    synchronize(device)
    start = time.perf_counter()
    for b in batches:
        run(b)
    synchronize(device)
    return time.perf_counter() - start


def interleaved_pass(passes, device="cpu"):
    """{name: (run, batches)} -> {name: seconds}: one pass of each, taking turns batch by batch."""
    seconds = dict.fromkeys(passes, 0.0)
    for i in range(len(next(iter(passes.values()))[1])):
        for name, (run, batches) in passes.items():
            synchronize(device)
            start = time.perf_counter()
            run(batches[i])
            synchronize(device)
            seconds[name] += time.perf_counter() - start
    return seconds


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


def inputs(b):
    return b["input_ids"], b["attention_mask"], b["token_type_ids"]


@torch.inference_mode()
def measure_speedup(method, batches, repeats=3, device="cpu", dense=None):
    """Dense over pruned seconds of `method` (methods/) on `batches` (dicts of input_ids, attention_mask,
    token_type_ids on `device`): see the module docstring. dense: the model to measure against (default
    method.bert; results/compare.py times smaller models against the whole one). -> a dict for metrics.json."""
    if repeats < 1:
        raise ValueError(f"repeats is a number of timed passes, at least 1, got {repeats}")
    method.eval()
    dense = method.bert if dense is None else dense
    passes = {"dense": (lambda b: dense.infer(*inputs(b)), batches),
              "pruned": (lambda b: method.infer(*inputs(b)), batches)}
    interleaved_pass(passes, device)                                               # warm-up
    times = [interleaved_pass(passes, device) for _ in range(repeats)]
    dense, pruned = (statistics.median(t[name] for t in times) for name in ("dense", "pruned"))
    return {"dense_seconds": round(dense, 6), "pruned_seconds": round(pruned, 6),
            "measured_speedup": round(dense / pruned, 3), "machine": machine_line(device),
            "timing": f"infer path against the dense infer, {device}, batch {len(batches[0]['input_ids'])}, "
                      f"median of {repeats} passes over {sum(len(b['input_ids']) for b in batches)} examples, "
                      f"{torch.get_num_threads()} threads"}
