"""
Fine-tune and evaluate Transkimmer (skim.py) on a GLUE task.

    python train.py --task sst2                      # Transkimmer on the embedded all-MiniLM-L6-v2
    python train.py --task sst2 --no-skim --output-dir out/dense   # the dense baseline, same recipe
    python train.py --task sst2 --mu0 5 --predictor-grad joint   # the paper's own settings
    python train.py --task sst2 --eval-only --checkpoint out/sst2
    python train.py --task sst2 --eval-only --checkpoint out/sst2 --keep-threshold 0.8   # skim more, no retraining
    python train.py --task sst2 --model out/dense --teacher out/dense   # second stage, distilled from the dense model
    python train.py --task sst2 --model out/sst2 --freeze-predictors 0.7 --epochs 0.5   # the encoder adapts to fixed decisions

Flags follow HF's run_glue.py. The loop is the whole of it: AdamW with linear warm-up and decay,
loss = task loss + lambda * skim loss (Eq. 7). Each evaluation reports the task metric, the FLOPs
speedup (flops.py; no padding and sequence padding), the measured CPU speedup of real pruning
over the dense model on the dev set, and the fraction of tokens each layer keeps. --output-dir
receives the model, metrics.json and two pictures, each file written atomically.

Two defaults depart from the paper, chosen by the SST-2 runs in the README: --mu0 2, not 5 (at
tau 0.1 and mu0 5 the straight-through gradient underflows and nothing is skimmed), and
--predictor-grad separate, not joint (a little more speedup at the same accuracy there).
--teacher adds knowledge distillation, which the paper does not use (off unless asked for).
--keep-threshold, also not in the paper, moves a trained model's operating point at evaluation:
a token is kept where its predictor's p(keep) exceeds it (0.5, the default, is the paper's argmax).
--freeze-predictors T, not in the paper either, trains a saved Transkimmer's encoder further under
fixed decisions at threshold T (the prune-then-fine-tune step of the pruning literature).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bench
import data
import flops
import skim
from model import BertConfig, BertForSequenceClassification, ModelError, atomic_write, read_config, resolve_checkpoint


class UsageError(Exception):
    """An impossible flag combination; one line."""


MU0 = 2.0  # train.py's unbalanced init; the paper's (skim.MU0 = 5) skims nothing at tau 0.1 (README)
DISTILL_COEF, DISTILL_TEMP = 0.5, 2.0  # with --teacher: conventional values (Hinton et al., 2015), not tuned here


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2", help=f"GLUE task: {', '.join(data.TASKS)}")
    p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None, help="folder holding <TASK>/train.tsv (default: $GLUE_DIR, else download)")
    p.add_argument("--output-dir", default=None, help="where the model, metrics.json and plots go (default: out/TASK)")
    p.add_argument("--max-seq-length", type=int, default=None, help="default: the task's, paper Table 2 (SST-2: 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of the steps spent warming up the lr")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skim-coef", type=float, default=None, help="lambda of Eq. 7 (default: the task's, Table 2)")
    p.add_argument("--tau", type=float, default=skim.TAU, help="Gumbel-softmax temperature (Eq. 5)")
    p.add_argument("--mu0", type=float, default=MU0,
                   help=f"unbalanced init of the predictors (Eq. 9; default {MU0}, the paper's is {skim.MU0})")
    p.add_argument("--predictor-lr", type=float, default=None, help="learning rate of the skim predictors (default: --lr)")
    p.add_argument("--predictor-grad", default="separate", choices=["joint", "separate"],
                   help="separate (default): the decisions' straight-through gradient trains the predictors only, "
                        "and the encoder's and the predictors' gradients are clipped separately; joint (the paper): "
                        "it also trains the encoder through the predictors' input")
    p.add_argument("--keep-threshold", type=float, default=None,
                   help=f"evaluation: keep a token where its predictor's p(keep) exceeds this (default "
                        f"{skim.KEEP_THRESHOLD}, the paper's argmax); lower keeps more, higher skims more; "
                        f"not saved with the model (not in the paper)")
    p.add_argument("--freeze-predictors", type=float, nargs="?", const=skim.KEEP_THRESHOLD, default=None, metavar="T",
                   help="a further stage from a saved Transkimmer (--model): its predictors stop learning and "
                        "decide in training as at evaluation, at keep threshold T (default "
                        f"{skim.KEEP_THRESHOLD}), while the encoder trains on; T is folded into the saved "
                        "predictors, so the new model decides at 0.5 as the old one did at T (not in the paper)")
    p.add_argument("--teacher", default=None, help="a fine-tuned model folder to distil from (not in the paper): "
                   "the task loss becomes (1 - a) * loss on the labels + a * loss on the teacher's outputs")
    p.add_argument("--distill-coef", type=float, default=None, help="a, the distillation loss's weight (default 0.5)")
    p.add_argument("--distill-temp", type=float, default=None,
                   help="the distillation softmax's temperature (default 2; regression tasks have no softmax)")
    p.add_argument("--max-train-samples", type=int, default=None, help="train on the first N examples only")
    p.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on the first N examples only")
    p.add_argument("--no-skim", action="store_true", help="train the dense baseline (no predictors); with --eval-only, "
                   "evaluate a Transkimmer checkpoint without its predictors (every token kept)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint, no training")
    p.add_argument("--checkpoint", default=None, help="a folder saved by train.py, for --eval-only")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--timing-repeats", type=int, default=3, help="passes over dev for the measured speedup (0: skip)")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args):
    task = data.get_task(args.task)  # unknown task -> DataError
    positive = {"--batch-size": args.batch_size, "--lr": args.lr, "--epochs": args.epochs, "--tau": args.tau}
    for flag, value in {"--predictor-lr": args.predictor_lr, "--distill-temp": args.distill_temp}.items():
        if value is not None:
            positive[flag] = value
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    for flag, value in {"--max-train-samples": args.max_train_samples, "--max-eval-samples": args.max_eval_samples,
                        "--max-seq-length": args.max_seq_length}.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if not 0 <= args.warmup < 1:
        raise UsageError(f"--warmup is a fraction of the steps in [0, 1), got {args.warmup}")
    if args.distill_coef is not None and not 0 <= args.distill_coef <= 1:
        raise UsageError(f"--distill-coef weighs two losses, so it lies in [0, 1], got {args.distill_coef}")
    if not args.teacher and (args.distill_coef is not None or args.distill_temp is not None):
        raise UsageError("--distill-coef and --distill-temp need --teacher DIR, the model to distil from")
    if args.keep_threshold is not None and not 0 < args.keep_threshold < 1:
        raise UsageError(f"--keep-threshold is a probability in (0, 1), got {args.keep_threshold}")
    if args.keep_threshold is not None and args.no_skim:
        raise UsageError("--keep-threshold sets where skim predictors keep tokens; --no-skim keeps every token")
    if args.freeze_predictors is not None:
        if not 0 < args.freeze_predictors < 1:
            raise UsageError(f"--freeze-predictors T: T is a keep threshold in (0, 1), got {args.freeze_predictors}")
        if args.no_skim:
            raise UsageError("--freeze-predictors trains a Transkimmer's encoder; --no-skim has no predictors")
        if args.eval_only:
            raise UsageError("--freeze-predictors trains a Transkimmer's encoder; --eval-only trains nothing")
        if args.keep_threshold is not None:  # it would move the frozen decisions a second time
            raise UsageError("--freeze-predictors T already sets the keep threshold, for training and the evaluation "
                             "after it; evaluate at another with --eval-only --keep-threshold")
        for flag, value in {"--skim-coef": args.skim_coef, "--predictor-lr": args.predictor_lr}.items():
            if value is not None:
                raise UsageError(f"{flag} trains the skim predictors; --freeze-predictors keeps them fixed")
    if args.teacher and args.eval_only:
        raise UsageError("--teacher is for training; --eval-only trains nothing")
    if args.eval_only and not args.checkpoint:
        raise UsageError("--eval-only needs --checkpoint DIR (a folder saved by train.py)")
    if args.checkpoint and not args.eval_only:
        raise UsageError("--checkpoint is for --eval-only; to fine-tune a checkpoint further, pass it as --model")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    args.max_seq_length = args.max_seq_length or task.max_seq_length
    args.skim_coef = task.skim_coef if args.skim_coef is None else args.skim_coef
    args.predictor_lr = args.predictor_lr or args.lr
    if args.teacher:
        args.distill_coef = DISTILL_COEF if args.distill_coef is None else args.distill_coef
        args.distill_temp = args.distill_temp or DISTILL_TEMP
    if args.no_skim:
        args.skim_coef = 0.0  # the dense model processes every token; its skim loss is a constant 1
    if args.freeze_predictors is not None:
        args.skim_coef = 0.0  # fixed decisions: the skim loss has no gradient left to give
    args.output_dir = Path(args.output_dir or Path("out") / task.name)


def check_writable(directory):
    """Fail before training, not after: the output folder must exist (or be creatable) and be writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / ".write-test", lambda p: Path(p).write_text("ok"))
        (directory / ".write-test").unlink()
    except OSError as e:
        raise UsageError(f"--output-dir {directory} is not writable ({e.strerror or e})") from None

# -----------------------------------------------------------------------------
# model

def load_model(args, task):
    """Transkimmer (or, with --no-skim, the dense BertForSequenceClassification) from --model, or the
    saved model in --checkpoint (see load_saved)."""
    if args.eval_only:
        model = load_saved(args.checkpoint, every_token=args.no_skim)
    elif args.no_skim:
        return BertForSequenceClassification.from_pretrained(args.model, num_labels=task.num_labels)
    else:
        if args.freeze_predictors is not None and "skim" not in read_config(resolve_checkpoint(args.model)):
            raise UsageError(f"--freeze-predictors: --model {args.model or 'all-MiniLM-L6-v2'} has no trained skim "
                             "predictors to freeze; give a Transkimmer folder train.py saved")
        model = skim.Transkimmer.from_pretrained(args.model, num_labels=task.num_labels, tau=args.tau, mu0=args.mu0)
        model.predictor_grad = args.predictor_grad
        if args.freeze_predictors is not None:
            model.freeze_predictors(args.freeze_predictors)
    if isinstance(model, skim.Transkimmer):
        model.keep_threshold = args.keep_threshold = args.keep_threshold or skim.KEEP_THRESHOLD
    elif args.keep_threshold is not None:  # given, even at the default: a dense model has nothing to set
        raise UsageError(f"--keep-threshold: {args.checkpoint} is a dense model, it has no skim predictors")
    return model


def load_saved(path, every_token=False):
    """A model train.py saved: a Transkimmer if its config has skim settings (with every_token, that
    Transkimmer's encoder and classifier alone, every token kept), else the dense model."""
    folder = resolve_checkpoint(path)
    if "skim" not in read_config(folder):
        return BertForSequenceClassification.from_pretrained(folder)
    model = skim.Transkimmer.from_pretrained(folder)
    return dense_of(model) if every_token else model


def load_teacher(args, task):
    """--teacher: a model fine-tuned on the task (a Transkimmer teaches with every token kept). It must
    have a classifier for the task's labels and share the student's (--model's) vocabulary, since both
    read the same token ids. Checked from the config files, before either model is built."""
    def config_of(path):
        folder = resolve_checkpoint(path)
        raw = read_config(folder)
        return raw, BertConfig.from_dict(raw, source=str(folder / "config.json"))

    raw, config = config_of(args.teacher)
    if "BertForSequenceClassification" not in raw.get("architectures", []):
        raise UsageError(f"--teacher {args.teacher}: not a fine-tuned classifier (its config.json names "
                         f"{raw.get('architectures')}); give a folder train.py saved")
    if config.num_labels != task.num_labels:
        raise UsageError(f"--teacher {args.teacher}: {config.num_labels} output(s), but {task.name} has "
                         f"{task.num_labels}")
    vocab = config_of(args.model)[1].vocab_size
    if config.vocab_size != vocab:
        raise UsageError(f"--teacher {args.teacher}: vocabulary of {config.vocab_size} tokens, the student's "
                         f"has {vocab}; both must read the same token ids")
    return load_saved(args.teacher, every_token=True).eval().requires_grad_(False)


def run(model, batch, prune=False):
    """-> (logits, masks, skim_loss); the dense model processes every real token at every layer."""
    if isinstance(model, skim.Transkimmer):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], prune=prune)
        return out.logits, out.masks, out.skim_loss
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    masks = [batch["attention_mask"].to(logits.dtype)] * model.config.num_hidden_layers
    return logits, masks, skim.skim_loss(masks, batch["attention_mask"])


def dense_of(model):
    return model.bert if isinstance(model, skim.Transkimmer) else model


def task_loss(logits, labels, task):
    if task.labels is None:  # regression (STS-B)
        return F.mse_loss(logits.squeeze(-1), labels)
    return F.cross_entropy(logits, labels)


def distill_loss(logits, teacher_logits, task, temperature):
    """(B, labels) student and teacher logits -> a scalar. Knowledge distillation (Hinton et al., 2015):
    KL(teacher || student) between the two softmaxes at `temperature`, times temperature^2 so that its
    gradient keeps its size as the temperature changes. Regression (STS-B): the squared error to the
    teacher's prediction."""
    if task.labels is None:
        return F.mse_loss(logits, teacher_logits)
    t = temperature
    return t * t * F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                            reduction="batchmean", log_target=True)


def predictions(logits, task):
    return logits.squeeze(-1).numpy() if task.labels is None else logits.argmax(-1).numpy()


def to_device(batch, device):
    return {k: v.to(device) for k, v in batch.items()}

# -----------------------------------------------------------------------------
# training

def optimizer_for(model, args):
    """AdamW; as in BERT, no weight decay on biases and LayerNorm weights (the 1-d parameters). The skim
    predictors, new parameters, learn at --predictor-lr (default: --lr), unless they are frozen."""
    parts = [(model, args.lr)]
    if isinstance(model, skim.Transkimmer):
        parts = [(model.bert, args.lr)] + ([] if model.predictors_frozen else [(model.predictors, args.predictor_lr)])
    groups = []
    for part, lr in parts:
        groups += [{"params": [p for p in part.parameters() if p.dim() >= 2], "weight_decay": args.weight_decay, "lr": lr},
                   {"params": [p for p in part.parameters() if p.dim() < 2], "weight_decay": 0.0, "lr": lr}]
    return torch.optim.AdamW(groups)


def clip_groups(model):
    """The parameter groups whose gradient norm is clipped to 1 (as in BERT). One group, except with
    --predictor-grad separate: then a spike in the predictors' straight-through gradient (it scales
    with 1/tau) no longer shrinks the encoder's step."""
    if isinstance(model, skim.Transkimmer) and model.predictor_grad == "separate":
        return [list(model.bert.parameters()), list(model.predictors.parameters())]
    return [list(model.parameters())]


def linear_schedule(optimizer, total_steps, warmup_steps):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model, train_set, task, args, teacher=None):
    from tqdm import tqdm

    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total_steps = max(1, round(steps_per_epoch * args.epochs))
    optimizer = optimizer_for(model, args)
    clipped = clip_groups(model)
    schedule = linear_schedule(optimizer, total_steps, round(args.warmup * total_steps))
    model.train()
    bar = tqdm(total=total_steps, desc=f"train {task.name}", unit="step", dynamic_ncols=True)
    step, epoch, t0 = 0, 0, time.time()
    while step < total_steps:
        for batch in data.batches(train_set, args.batch_size, shuffle=True, seed=args.seed + epoch):
            batch = to_device(batch, args.device)
            logits, masks, skim_loss = run(model, batch)
            loss_task = fit = task_loss(logits, batch["labels"], task)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(batch["input_ids"], batch["attention_mask"],
                                             batch["token_type_ids"])  # (B, labels)
                loss_kd = distill_loss(logits, teacher_logits, task, args.distill_temp)
                fit = (1 - args.distill_coef) * loss_task + args.distill_coef * loss_kd
            loss = skim.total_loss(fit, skim_loss, args.skim_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in clipped:
                torch.nn.utils.clip_grad_norm_(group, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            kept = sum((m * batch["attention_mask"]).sum() for m in masks) / (len(masks) * batch["attention_mask"].sum())
            bar.set_postfix(loss=f"{loss.item():.3f}", task=f"{loss_task.item():.3f}", skim=f"{skim_loss.item():.3f}",
                            kept=f"{kept.item():.2f}", **({"kd": f"{loss_kd.item():.3f}"} if teacher is not None else {}))
            bar.update()
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    model.eval()
    return {"train_steps": step, "train_seconds": round(time.time() - t0, 1)}

# -----------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def evaluate(model, dev_set, task, args):
    """Task metric, FLOPs (flops.py), kept fraction per layer, and the measured speedup of real pruning."""
    model.eval()
    counter = flops.FlopsCounter(dense_of(model).config, seq_len=args.max_seq_length,
                                 predictors=isinstance(model, skim.Transkimmer))
    preds, labels = [], []
    for batch in data.batches(dev_set, args.batch_size):
        batch = to_device(batch, args.device)
        logits, masks, _ = run(model, batch)
        counter.add(masks, batch["attention_mask"])
        preds.append(predictions(logits.cpu(), task))
        labels.append(batch["labels"].cpu().numpy())
    metrics = data.compute_metrics(task, np.concatenate(preds), np.concatenate(labels))
    summary = counter.summary()
    result = {"task": task.name, "eval_samples": len(dev_set), **metrics, "flops": summary}
    if args.timing_repeats and isinstance(model, skim.Transkimmer):
        result.update(measure_speedup(model, dev_set, args))
    return result


def measure_speedup(model, dev_set, args):
    """Wall-clock of dense vs prune=True inference over the dev set: one warm-up pass, then the
    median of --timing-repeats passes each."""
    batches = [to_device(b, args.device) for b in data.batches(dev_set, args.batch_size)]

    def seconds(fn):
        bench.one_pass(fn, batches, args.device)  # warm-up
        return statistics.median(bench.one_pass(fn, batches, args.device) for _ in range(args.timing_repeats))

    dense = dense_of(model)
    with torch.inference_mode():
        t_dense = seconds(lambda b: dense(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
        t_pruned = seconds(lambda b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"], prune=True))
    return {"dense_seconds": round(t_dense, 4), "pruned_seconds": round(t_pruned, 4),
            "measured_speedup": round(t_dense / t_pruned, 3),
            "timing": f"{args.device}, batch {args.batch_size}, median of {args.timing_repeats}, "
                      f"{torch.get_num_threads()} threads"}

# -----------------------------------------------------------------------------
# pictures

def plot_retention(kept_per_layer, path, title):
    """Paper Fig. 4 style: the fraction of real tokens each layer processes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(len(kept_per_layer))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.bar(layers, kept_per_layer, color="tab:blue", label="Transkimmer")
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="dense BERT")
    ax.set(xlabel="layer", ylabel="fraction of tokens processed", ylim=(0, 1.05), xticks=layers, title=title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def skim_layers(masks, length):
    """For each of the first `length` tokens: the first layer that did not process it (L if none)."""
    stacked = torch.stack([m[:length] for m in masks])                             # (L, n)
    return [int(stacked[:, j].eq(0).nonzero()[0]) if stacked[:, j].eq(0).any() else len(masks) for j in range(length)]


def layer_span(text, layer, L):
    """One HTML span coloured by the layer at which a token was skimmed (L: processed by every layer)."""
    import html
    lightness = 95 - 60 * layer / L                                                # darker = processed longer
    title = f"skimmed before layer {layer}" if layer < L else "processed by every layer"
    return (f'<span title="{title}" style="background:hsl(210,70%,{lightness:.0f}%);'
            f'color:{"#fff" if lightness < 60 else "#000"}">{html.escape(text)}</span>')


@torch.no_grad()
def skim_picture(model, tokenizer, examples, args, path, count=8):
    """Paper Table 5 style, as HTML: each token coloured by the layer at which it was skimmed."""
    L = dense_of(model).config.num_hidden_layers
    rows = []
    encoded = data.encode(tokenizer, examples[:count], args.max_seq_length)
    for item in encoded:
        batch = next(data.batches([item], 1))
        _, masks, _ = run(model, to_device(batch, args.device))
        layers = skim_layers([m[0].cpu() for m in masks], len(item["input_ids"]))
        spans = [layer_span(tokenizer.id_to_token(t), layer, L) for t, layer in zip(item["input_ids"], layers)]
        rows.append("<p>" + " ".join(spans) + "</p>")
    legend = " ".join(layer_span(f"skimmed before layer {i}" if i < L else "kept to the end", i, L) for i in range(L + 1))
    page = (f"<!doctype html><meta charset='utf-8'><title>What Transkimmer skims</title>"
            f"<style>body{{font-family:sans-serif;max-width:60em}} span{{padding:1px 3px;border-radius:3px;line-height:2}}</style>"
            f"<h3>{args.task}: each token coloured by the layer at which it was skimmed (darker = processed longer)</h3>"
            f"<p>{legend}</p>{''.join(rows)}")
    atomic_write(path, lambda p: Path(p).write_text(page, encoding="utf-8"))

# -----------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    task = data.get_task(args.task)
    check_writable(args.output_dir)
    data_dir = data.find_data_dir(task, args.data_dir)  # all input is checked before the model loads
    dev_split = task.dev_splits[0]
    dev_examples = data.read_split(task, dev_split, data_dir)[: args.max_eval_samples]
    train_examples = [] if args.eval_only else data.read_split(task, "train", data_dir)[: args.max_train_samples]
    # the teacher first: its flags fail before the student loads, and building it draws no random numbers
    # after the seed is set, so --distill-coef 0 trains exactly the model that no --teacher does
    teacher = load_teacher(args, task).to(args.device) if args.teacher else None
    torch.manual_seed(args.seed)
    model = load_model(args, task).to(args.device)
    tokenizer = dense_of(model).tokenizer
    if tokenizer is None:
        raise ModelError(f"{args.checkpoint or args.model}: the checkpoint has no tokenizer.json or vocab.txt")
    dev_set = data.encode(tokenizer, dev_examples, args.max_seq_length)

    train_info = {}
    if not args.eval_only:
        train_set = data.encode(tokenizer, train_examples, args.max_seq_length)
        what = "dense baseline" if args.no_skim else (
            f"Transkimmer, predictors frozen at keep threshold {args.freeze_predictors}, encoder training"
            if args.freeze_predictors is not None else
            f"Transkimmer, lambda={args.skim_coef}, tau={args.tau}, mu0={args.mu0}, "
            f"predictor lr {args.predictor_lr}, predictor-grad {args.predictor_grad}")
        if teacher is not None:
            what += f"; distilled from {args.teacher} (coef {args.distill_coef}, temperature {args.distill_temp})"
        print(f"{task.name}: {len(train_set)} train / {len(dev_set)} {dev_split} examples; {what}", file=sys.stderr)
        train_info = train(model, train_set, task, args, teacher)
        model.save_pretrained(args.output_dir, tokenizer)

    metrics = evaluate(model, dev_set, task, args)
    metrics.update(train_info, split=dev_split, args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    atomic_write(args.output_dir / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2) + "\n"))
    kept = metrics["flops"]["kept_fraction"]
    plot_retention(kept, args.output_dir / "retention.png", f"{task.name} dev: tokens processed per layer")
    skim_picture(model, tokenizer, dev_examples, args, args.output_dir / "skimmed_tokens.html")

    f = metrics["flops"]
    print(f"{task.name} {dev_split}: {task.main_metric} {metrics[task.main_metric]:.4f} | FLOPs speedup "
          f"{f['none']['speedup']:.2f}x (no padding), {f['sequence']['speedup']:.2f}x (sequence {args.max_seq_length})"
          + (f" | measured {metrics['measured_speedup']:.2f}x" if "measured_speedup" in metrics else "")
          + f" | kept per layer {' '.join(f'{k:.2f}' for k in kept)} | -> {args.output_dir}")
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, ModelError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
