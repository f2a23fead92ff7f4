"""
Training speed: real tokens per second of train.py's training step against Hugging Face transformers'
BertForSequenceClassification on the same batches, in float32 and under bfloat16 autocast, on random and on
length-grouped batches; and the padding ratio of each GLUE task's training batches, random and grouped.

    GLUE_DIR=/path/to/glue .venv/bin/python results/bench_train.py          # SST-2, 30 timed steps each (minutes)
    GLUE_DIR=... .venv/bin/python results/bench_train.py --steps 3 --tasks rte --out /tmp/smoke   # a smoke run
    GLUE_DIR=... .venv/bin/python results/bench_train.py --compile          # + our dense step under torch.compile
    GLUE_DIR=... .venv/bin/python results/bench_train.py --allocators glibc glibc-keep jemalloc --models ours \\
        --out results/bench_train_allocators                                 # the allocators, taking turns

What is timed: one optimizer step as train.py's loop takes it (forward under train.autocast, the task loss from
float32 logits, + lambda * the method's loss, backward, gradient clipping to norm 1, AdamW from
train.optimizer_for) at batch --batch-size on the first batches of --task's training set (the default tokenizer,
the task's maximum length), drawn as train.py draws its first epoch's (data.batches, seed 42): at random, or
grouped by length. The models, each with its own AdamW, all from the default checkpoint's weights:
    ours    train.py's dense stage: model.BertForSequenceClassification behind methods.Dense
    hf      transformers' BertForSequenceClassification with the same weights (saved and loaded the HF way), its
            default attention; the reference users train today (an import of transformers outside tests/: the
            reference is the point here)
    skim    train.py's skim stage: the same BERT under Transkimmer (skim.py; every position computed, the
            predictors too), and the FLOPs count its speedup controller makes after every step
    ours-compiled (--compile, not adopted: measured here first) ours under torch.compile(dynamic=True); the
            compilation happens in the warm-up steps, whose seconds the JSON records
Each configuration (model x precision x batching) first trains --warmup untimed steps; then the configurations
take turns step by step (step i: each one on batch i of its batching), so that a change in machine load hits
them alike. Reported per configuration: the median seconds of a step, real tokens per second (the timed
batches' real tokens over their summed seconds: padding computed is time spent on no token) and the share of
its CPU time the kernel took (system time, resource.getrusage around each step: page faults when the
allocator returns memory to the system and takes it back).

--allocators runs the timed part once per allocator in a process of its own, the allocators taking turns for
--rounds rounds (an allocator is chosen when a process starts): glibc (as the environment has it), glibc-keep
(glibc keeping what it frees: MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set high, MALLOC_ARENA_MAX 2),
jemalloc and tcmalloc (LD_PRELOADed, where the system has them: apt-get install libjemalloc2 libtcmalloc-minimal4).

The padding ratio: positions computed / real tokens over one epoch of a task's training batches (each padded
to its longest sentence, as data.batches pads), for each task in --tasks whose data is found.
Writes OUT.json and OUT.md (default results/bench_train); the machine is named in both.
"""

import argparse
import copy
import ctypes.util
import datetime
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import checkpoint  # noqa: E402
import data  # noqa: E402
import flags  # noqa: E402
import flops  # noqa: E402
import methods  # noqa: E402
import skim  # noqa: E402
import train  # noqa: E402
from model import BertForSequenceClassification, Output  # noqa: E402

SEED = 42  # train.py's default seed: the batches timed are the first of its first epoch
COEF = 0.3  # lambda in the skim model's loss (SST-2's, paper Table 2): any value costs the same
GLIBC_KEEP = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2 ** 20), "MALLOC_TRIM_THRESHOLD_": str(2 ** 30),
              "MALLOC_ARENA_MAX": "2"}


def padding_ratio(lengths, batch_size, group_by_length, seed=SEED):
    """Positions computed / real tokens over one epoch of training batches of examples of these lengths
    (data.batch_rows, shuffled by seed), each batch padded to its longest example."""
    lengths = np.asarray(lengths)
    rows = data.batch_rows(lengths, batch_size, shuffle=True, seed=seed, group_by_length=group_by_length)
    return sum(len(r) * int(lengths[r].max()) for r in rows) / int(lengths.sum())


def training_set(name, data_dir, tokenizer):
    """A task's training file, encoded as train.py encodes it (its maximum length), or None if not found."""
    task = data.get_task(name)
    try:
        folder = data.find_data_dir(task, data_dir, download=False)
    except data.DataError:
        return None
    return data.encode(tokenizer, data.read_split(task, "train", folder), task.max_seq_length)


class HF(nn.Module):
    """transformers' BertForSequenceClassification behind the method interface (methods/), for train.py's step."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, input_ids, attention_mask, token_type_ids):
        logits = self.hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        return Output(logits, [])

    def added_parameters(self):
        return []


def build_models(names, num_labels, device):
    """{name: model in training mode}, each from the default checkpoint's weights (the new classifier drawn
    from seed 0)."""
    torch.manual_seed(0)
    bert = BertForSequenceClassification.from_pretrained(None, num_labels=num_labels)
    made = {}
    for name in names:
        if name in ("ours", "ours-compiled"):
            made[name] = methods.Dense(copy.deepcopy(bert))
        elif name == "skim":
            made[name] = skim.Transkimmer.wrap(copy.deepcopy(bert), SimpleNamespace(
                tau=skim.TAU, mu0=skim.MU0, predictor_grad="separate"))
        elif name == "hf":
            import transformers
            transformers.logging.set_verbosity_error()
            with tempfile.TemporaryDirectory() as folder:
                bert.save_pretrained(folder)
                made[name] = HF(transformers.BertForSequenceClassification.from_pretrained(folder))
    made = {name: m.to(device).train() for name, m in made.items()}
    if "ours-compiled" in made:
        made["ours-compiled"] = torch.compile(made["ours-compiled"], dynamic=True)
    return made


def train_step(model, optimizer, batch, precision, task, counted):
    """train.py's training step on one batch (one process): forward under the precision, loss (Eq. 7), backward,
    clipping, AdamW; with `counted`, the FLOPs fraction its speedup controller reads."""
    settings = SimpleNamespace(device=batch["input_ids"].device.type, precision=precision)
    with train.autocast(settings):
        out = model(*data.inputs(batch))
    loss = skim.total_loss(train.task_loss(out.logits.float(), batch["labels"], task), out.aux_loss, COEF)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
    optimizer.step()
    if counted:
        train.flops_fraction(model, out.masks, batch, 1)
    return loss.item()


def time_steps(args, train_set, task):
    """The configurations taking turns step by step -> {config name: its figures}."""
    device = args.device
    batches = {b: [train.to_device(x, device) for x in itertools.islice(data.batches(
        train_set, args.batch_size, shuffle=True, seed=SEED, group_by_length=b == "grouped"), args.warmup + args.steps)]
        for b in args.batchings}
    models = build_models(args.models, task.num_labels, device)
    settings = SimpleNamespace(predictor_lr=None, weight_decay=0.01)  # what optimizer_for reads
    optimizers = {name: train.optimizer_for(m, settings, 5e-5) for name, m in models.items()}
    configs = [(m, p, b) for m in args.models for p in args.precisions for b in args.batchings]
    figures = {c: {"seconds": [], "user": 0.0, "system": 0.0, "tokens": 0, "positions": 0} for c in configs}
    warmup = {c: 0.0 for c in configs}
    for i in range(args.warmup + args.steps):
        for c in configs:
            name, precision, batching = c
            batch = batches[batching][i]
            flops.synchronize(device)
            cpu, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            train_step(models[name], optimizers[name], batch, precision, task, counted=name == "skim")
            flops.synchronize(device)
            seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
            if i < args.warmup:
                warmup[c] += seconds
                continue
            f = figures[c]
            f["seconds"].append(seconds)
            f["user"] += after.ru_utime - cpu.ru_utime
            f["system"] += after.ru_stime - cpu.ru_stime
            f["tokens"] += int(batch["attention_mask"].sum())
            f["positions"] += batch["attention_mask"].numel()
    out = {}
    for (name, precision, batching), f in figures.items():
        total = sum(f["seconds"])
        out[f"{name} {precision} {batching}"] = {
            "model": name, "precision": precision, "batching": batching, "steps": len(f["seconds"]),
            "median_step_ms": round(1000 * statistics.median(f["seconds"]), 1) if f["seconds"] else None,
            "tokens_per_second": round(f["tokens"] / total, 1) if total else None,
            "positions_per_token": round(f["positions"] / f["tokens"], 3) if f["tokens"] else None,
            "system_share": round(f["system"] / (f["user"] + f["system"]), 3) if f["user"] + f["system"] else None,
            "warmup_seconds": round(warmup[(name, precision, batching)], 2)}
    return out


def allocator_env(name):
    """The environment a process of this allocator starts with, or None where the system lacks it."""
    env = dict(os.environ)
    if name == "glibc":
        return env
    if name == "glibc-keep":
        return env | GLIBC_KEEP
    library = ctypes.util.find_library({"jemalloc": "jemalloc", "tcmalloc": "tcmalloc_minimal"}[name])
    if library is None:
        return None
    return env | {"LD_PRELOAD": " ".join(filter(None, [env.get("LD_PRELOAD"), library]))}


def time_allocators(args, argv):
    """--allocators: the timed part in one process per allocator, taking turns for --rounds rounds ->
    {allocator: {config: figures, with each round's tokens per second}}."""
    child = [a for a in argv if a != "--allocators" and a not in args.allocators]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in args.allocators:
                env = allocator_env(name)
                if env is None:
                    results[name] = "not found on this system"
                    continue
                out = Path(tmp) / f"{name}-{r}"
                subprocess.run([sys.executable, __file__, *child, "--tasks", "--rounds", "1", "--out", str(out)],
                               env=env, check=True, stdout=subprocess.DEVNULL)
                timed = json.loads(out.with_suffix(".json").read_text())["timing"]
                for config, f in timed.items():
                    row = results.setdefault(name, {}).setdefault(config, f | {"rounds_tokens_per_second": []})
                    row["rounds_tokens_per_second"].append(f["tokens_per_second"])
    for name, rows in results.items():
        for f in rows.values() if isinstance(rows, dict) else []:
            f["tokens_per_second"] = statistics.median(f["rounds_tokens_per_second"])
    return results


def machine(device):
    return {"machine": flops.machine_line(device), "cpu": flops.cpu_name(), "cpu_count": os.cpu_count(),
            "native_bf16": flops.native_bf16(device), "torch": torch.__version__,
            "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_before": os.getloadavg()}


def markdown(result):
    m, lines = result["machine"], []
    if "timing" in result:
        t = result["timing"]
        lines += [f"## Training step: {result['task']} batches of {result['batch_size']}, {m['machine']}",
                  "", "| model | precision | batches | ms/step (median) | real tokens/s | positions/token | system time "
                  "| warm-up s |", "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {f['model']} | {f['precision']} | {f['batching']} | {f['median_step_ms']} | "
                  f"{f['tokens_per_second']:,.0f} | {f['positions_per_token']:.2f} | {100 * f['system_share']:.0f}% | "
                  f"{f['warmup_seconds']:.1f} |"
                  for f in t.values()]
        vs_hf, grouping, bf16 = [], [], []
        for f in t.values():
            name, precision, batching, speed = f["model"], f["precision"], f["batching"], f["tokens_per_second"]
            if name != "hf" and f"hf {precision} {batching}" in t:
                vs_hf.append(f"{name} {precision} {batching} {speed / t[f'hf {precision} {batching}']['tokens_per_second']:.2f}x")
            if batching == "grouped" and f"{name} {precision} random" in t:
                grouping.append(f"{name} {precision} {speed / t[f'{name} {precision} random']['tokens_per_second']:.2f}x")
            if precision == "bf16" and f"{name} fp32 {batching}" in t:
                bf16.append(f"{name} {batching} {speed / t[f'{name} fp32 {batching}']['tokens_per_second']:.2f}x")
        lines += [""] + [f"- {what}: {', '.join(items)}" for what, items in (
            ("against HF's step (real tokens/s over HF's, same batches and precision)", vs_hf),
            ("what grouping buys (grouped over random)", grouping), ("what bf16 buys (bf16 over fp32)", bf16)) if items]
    if result.get("allocators"):
        lines += ["", "## Allocators (real tokens/s, median of the rounds; system time of the first round)", "",
                  "| allocator | configuration | real tokens/s | system time |", "|---|---|---:|---:|"]
        for name, rows in result["allocators"].items():
            if isinstance(rows, str):
                lines.append(f"| {name} | {rows} | | |")
                continue
            lines += [f"| {name} | {config} | {f['tokens_per_second']:,.0f} | {100 * f['system_share']:.0f}% |"
                      for config, f in rows.items()]
    if result["padding"]:
        lines += ["", f"## Padding: positions computed / real tokens, one epoch of training batches of "
                  f"{result['batch_size']}", "", "| task | max length | examples | mean tokens | random | grouped |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {p['max_seq_length']} | {p['examples']:,} | {p['mean_tokens']:.1f} | "
                  f"{p['random']:.2f}x | {p['grouped']:.2f}x |" for name, p in result["padding"].items()]
    lines += ["", f"Load average {m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after; "
              f"{m['cpu_count']} CPUs; bf16 matrix units: {'yes' if m['native_bf16'] else 'no'}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2", help="whose training batches are timed (default sst2, make train's)")
    p.add_argument("--tasks", nargs="*", default=list(data.TASKS),
                   help="the tasks whose padding ratio is counted (default: all nine, where the data is found)")
    p.add_argument("--data-dir", default=None, help="folder holding <TASK>/train.tsv (default: $GLUE_DIR)")
    p.add_argument("--batch-size", type=int, default=32, help="train.py's default")
    p.add_argument("--steps", type=int, default=30, help="timed steps per configuration (0: padding only)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration first")
    p.add_argument("--models", nargs="+", default=["ours", "hf", "skim"],
                   choices=["ours", "hf", "skim", "ours-compiled"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batchings", nargs="+", default=["random", "grouped"], choices=["random", "grouped"])
    p.add_argument("--compile", action="store_true", help="add ours-compiled to --models")
    p.add_argument("--allocators", nargs="+", default=None, choices=["glibc", "glibc-keep", "jemalloc", "tcmalloc"],
                   help="time under each allocator in a process of its own, taking turns (see above)")
    p.add_argument("--rounds", type=int, default=2, help="with --allocators: the turns each allocator takes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=str(ROOT / "results" / "bench_train"), help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    if args.compile and "ours-compiled" not in args.models:
        args.models.append("ours-compiled")
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = checkpoint.load_tokenizer()
    result = {"machine": machine(args.device), "task": args.task, "batch_size": args.batch_size, "seed": SEED,
              "command": "results/bench_train.py " + " ".join(argv), "padding": {}}
    for name in args.tasks:
        encoded = training_set(name, args.data_dir, tokenizer)
        if encoded is None:
            continue
        lengths = [len(e["input_ids"]) for e in encoded]
        result["padding"][name] = {"max_seq_length": data.get_task(name).max_seq_length, "examples": len(lengths),
                                   "mean_tokens": float(np.mean(lengths)),
                                   "random": round(padding_ratio(lengths, args.batch_size, False), 3),
                                   "grouped": round(padding_ratio(lengths, args.batch_size, True), 3)}
    if args.steps and args.allocators:
        result["allocators"] = time_allocators(args, argv)
    elif args.steps:
        train_set = training_set(args.task, args.data_dir, tokenizer)
        if train_set is None:
            sys.exit(f"error: no {args.task} training data found: pass --data-dir DIR or set GLUE_DIR")
        result["timing"] = time_steps(args, train_set, data.get_task(args.task))
    result["machine"]["loadavg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
