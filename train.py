"""
Fine-tune and evaluate Transkimmer (skim.py) on a GLUE task.

    python train.py --task sst2                       # the recipe: dense, then skim at 2x FLOPs, then frozen
    python train.py --task sst2 --target-speedup 3    # the same recipe, at another speedup
    python train.py --task sst2 --skim-coef           # the paper's recipe: one stage, lambda of its Table 2
    python train.py --task sst2 --no-skim --output-dir out/dense       # a dense model (one epoch)
    python train.py --task sst2 --stages dense:2 --keep-layers 3       # a dense model of the first 3 layers
    python train.py --task sst2 --eval-only --checkpoint out/sst2 --keep-threshold 0.8   # skim more, no retraining
    python train.py --resume out/sst2                 # go on with a run stopped by Ctrl-C

Flags follow HF's run_glue.py. A run is a list of stages (--stages), each one the same loop: AdamW
with linear warm-up and decay to the stage's own peak lr, loss = task loss + lambda * skim loss
(Eq. 7). A dense stage trains the BERT alone; a skim stage adds a predictor before every layer
(Eq. 2, 9) and trains both; a frozen stage fixes the predictors' decisions and trains the encoder
under them. With --target-speedup the skim stage steers lambda towards that FLOPs speedup
(skim.SpeedupController) and the keep threshold is calibrated on whole training sentences
(skim.calibrate_threshold). Each evaluation reports the task metric, the FLOPs speedup (flops.py; no
padding and sequence padding), the measured CPU speedup of real pruning over the dense model on the
dev set, and the fraction of tokens each layer keeps.
--output-dir receives the model, metrics.json (every stage recorded) and two pictures, each file
written atomically; while training, also resume.pt, the state --resume continues from.

Not in the paper, and why (docs/method.md, results/README.md): the stages, the target speedup and
the calibrated threshold; --mu0 2, not 5 (at tau 0.1 and mu0 5 the straight-through gradient
underflows and nothing is skimmed); --predictor-grad separate, not joint; --teacher (distillation),
--keep-threshold, --freeze-predictors and --keep-layers.
"""

import argparse
import itertools
import json
import math
import signal
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
from model import (BertConfig, BertForSequenceClassification, ModelError, atomic_write, keep_layers, read_config,
                   resolve_checkpoint)


class UsageError(Exception):
    """An impossible flag combination; one line."""


MU0 = 2.0  # train.py's unbalanced init; the paper's (skim.MU0 = 5) skims nothing at tau 0.1 (README)
LR = 5e-5  # of a stage that names none; the default recipe's stages name theirs
TARGET_SPEEDUP = 2.0
STAGE_KINDS = ("dense", "skim", "frozen")
# the default recipe, KIND:EPOCHS:LR (results/README.md, "The dense reference, and the recipe in one command"):
# 2e-4, the dense learning rate picked on held-out sentences; the frozen stage at 5e-5, picked on them too
DEFAULT_STAGES = "dense:1:2e-4,skim:0.5:2e-4,frozen:0.5:5e-5"
CALIBRATION_EXAMPLES = 512  # train inputs (no labels) on which a --target-speedup run calibrates its keep threshold
DISTILL_COEF, DISTILL_TEMP = 0.5, 2.0  # with --teacher: conventional values (Hinton et al., 2015), not tuned here


def lambda_or_task(text):
    """--skim-coef's value: a number, or "task" (a bare --skim-coef: argparse passes the const through the
    type too), which check_args turns into the task's lambda."""
    return text if text == "task" else float(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the task, the model and the paper's training recipe")
    g.add_argument("--task", default="sst2", help=f"GLUE task: {', '.join(data.TASKS)}")
    g.add_argument("--model", default=None, help="checkpoint folder or hub id (default: embedded all-MiniLM-L6-v2)")
    g.add_argument("--data-dir", default=None, help="folder holding <TASK>/train.tsv (default: $GLUE_DIR, else download)")
    g.add_argument("--output-dir", default=None, help="where the model, metrics.json and plots go (default: out/TASK)")
    g.add_argument("--max-seq-length", type=int, default=None, help="default: the task's, paper Table 2 (SST-2: 64)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of every stage that names none in --stages (default {LR}; the default "
                        f"recipe's stages name theirs)")
    g.add_argument("--epochs", type=float, default=None,
                   help="length of a one-stage run (--skim-coef, --no-skim, --freeze-predictors; default 1); the "
                        "default recipe's stages are set with --stages")
    g.add_argument("--warmup", type=float, default=0.06, help="fraction of each stage's steps spent warming up the lr")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--skim-coef", type=lambda_or_task, nargs="?", const="task", default=None, metavar="LAMBDA",
                   help="the paper's recipe: one skimming stage with a fixed lambda (Eq. 7), instead of a target "
                        "speedup; with no value, the task's lambda from the paper's Table 2 (SST-2: 0.3)")
    g.add_argument("--tau", type=float, default=skim.TAU, help="Gumbel-softmax temperature (Eq. 5)")
    g.add_argument("--mu0", type=float, default=MU0,
                   help=f"unbalanced init of the predictors (Eq. 9; default {MU0}, the paper's is {skim.MU0})")
    g.add_argument("--no-skim", action="store_true", help="train the dense baseline (no predictors); with --eval-only, "
                   "evaluate a Transkimmer checkpoint without its predictors (every token kept)")

    g = p.add_argument_group("not in the paper")
    g.add_argument("--target-speedup", type=float, default=None, metavar="S",
                   help=f"the FLOPs speedup (no padding) to reach: lambda is steered during training "
                        f"(skim.SpeedupController) and the keep threshold calibrated on training sentences "
                        f"(default {TARGET_SPEEDUP} unless --skim-coef)")
    g.add_argument("--steer-every", type=int, default=0, metavar="N",
                   help="with --target-speedup: every N steps of a skim stage, score the calibration sentences at "
                        "the keep threshold and steer lambda on them, not on the training batches alone (SST-2's "
                        "are short phrases, skimmed less than its sentences); 0 (default): steer on the batches")
    g.add_argument("--stages", default=None, metavar="SPEC",
                   help=f"the stages, in order, as KIND:EPOCHS[:LR], KIND one of dense, skim, frozen, LR the "
                        f"stage's own peak learning rate (default {DEFAULT_STAGES}): dense fine-tuning, then "
                        f"skimming at the target, then the encoder trained on under frozen decisions")
    g.add_argument("--keep-layers", default=None, metavar="K|I,J,..",
                   help="a smaller dense model: only these encoder layers of the checkpoint (3: the first three; "
                        "0,2,4: those three)")
    g.add_argument("--predictor-lr", type=float, default=None, help="learning rate of the skim predictors (default: their stage's)")
    g.add_argument("--predictor-grad", default="separate", choices=["joint", "separate"],
                   help="separate (default): the decisions' straight-through gradient trains the predictors only, "
                        "and the encoder's and the predictors' gradients are clipped separately; joint (the paper): "
                        "it also trains the encoder through the predictors' input")
    g.add_argument("--keep-threshold", type=float, default=None,
                   help=f"evaluation: keep a token where its predictor's p(keep) exceeds this (default "
                        f"{skim.KEEP_THRESHOLD}, the paper's argmax); lower keeps more, higher skims more; "
                        f"not saved with the model")
    g.add_argument("--freeze-predictors", type=float, nargs="?", const=skim.KEEP_THRESHOLD, default=None, metavar="T",
                   help="a frozen stage from a saved Transkimmer (--model): its predictors stop learning and "
                        "decide in training as at evaluation, at keep threshold T (default "
                        f"{skim.KEEP_THRESHOLD}), while the encoder trains on; T is folded into the saved "
                        "predictors, so the new model decides at 0.5 as the old one did at T")
    g.add_argument("--teacher", default=None, help="a fine-tuned model folder to distil from: the task loss becomes "
                   "(1 - a) * loss on the labels + a * loss on the teacher's outputs")
    g.add_argument("--distill-coef", type=float, default=None, help="a, the distillation loss's weight (default 0.5)")
    g.add_argument("--distill-temp", type=float, default=None,
                   help="the distillation softmax's temperature (default 2; regression tasks have no softmax)")
    g.add_argument("--max-grad-norm", type=float, default=1.0,
                   help="clip the gradient's norm to this before each step, as BERT does (0: no clipping)")

    g = p.add_argument_group("running")
    g.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="hold N train examples out of training (the same N whatever --seed) and report the metric "
                        "on them too: settings are chosen on these, not on dev")
    g.add_argument("--max-train-samples", type=int, default=None, help="train on the first N examples only")
    g.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on the first N examples only")
    g.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint, no training")
    g.add_argument("--checkpoint", default=None, help="a folder saved by train.py, for --eval-only")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted run whose --output-dir was DIR, from its last saved state")
    g.add_argument("--save-every", type=float, default=5.0, metavar="MIN",
                   help="save a resumable state every MIN minutes of training (and on Ctrl-C); 0: only on Ctrl-C")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    g.add_argument("--timing-repeats", type=int, default=3, help="passes over dev for the measured speedup (0: skip)")
    args = p.parse_args(argv)
    if args.resume:  # everything else comes from the saved state
        given = [a for a in (argv if argv is not None else sys.argv[1:])
                 if a.startswith("--") and a.split("=")[0] != "--resume"]
        if given:
            raise UsageError(f"--resume DIR continues a run with the flags it was started with; drop {given[0]}")
        return args
    check_args(args)
    return args


def check_args(args):
    task = data.get_task(args.task)  # unknown task -> DataError
    if args.skim_coef == "task":  # --skim-coef with no value: the task's lambda from the paper's Table 2
        args.skim_coef = task.skim_coef
    positive = {"--batch-size": args.batch_size, "--tau": args.tau}
    for flag, value in {"--lr": args.lr, "--predictor-lr": args.predictor_lr, "--distill-temp": args.distill_temp,
                        "--epochs": args.epochs}.items():
        if value is not None:
            positive[flag] = value
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.max_grad_norm < 0:
        raise UsageError(f"--max-grad-norm must be positive, or 0 for no clipping, got {args.max_grad_norm}")
    if args.save_every < 0:
        raise UsageError(f"--save-every is in minutes, positive, or 0 to save only on Ctrl-C; got {args.save_every}")
    if args.target_speedup is not None and not args.target_speedup > 1:
        raise UsageError(f"--target-speedup S: S is a speedup over the dense model, above 1, got {args.target_speedup}")
    for flag, value in {"--max-train-samples": args.max_train_samples, "--max-eval-samples": args.max_eval_samples,
                        "--holdout": args.holdout, "--max-seq-length": args.max_seq_length}.items():
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
    if args.skim_coef is not None and args.target_speedup is not None:
        raise UsageError("--skim-coef fixes lambda, --target-speedup steers it towards a speedup: give one of them")
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
        if args.target_speedup is not None:
            raise UsageError("--freeze-predictors T sets the keep threshold; --target-speedup would calibrate it: "
                             "give one of them")
        if args.stages is not None:
            raise UsageError("--freeze-predictors T is a one-stage run from a saved Transkimmer; in --stages, a frozen "
                             "stage's threshold is calibrated to --target-speedup")
        for flag, value in {"--skim-coef": args.skim_coef, "--predictor-lr": args.predictor_lr}.items():
            if value is not None:
                raise UsageError(f"{flag} trains the skim predictors; --freeze-predictors keeps them fixed")
    if args.teacher and args.eval_only:
        raise UsageError("--teacher is for training; --eval-only trains nothing")
    if args.eval_only and not args.checkpoint:
        raise UsageError("--eval-only needs --checkpoint DIR (a folder saved by train.py)")
    if args.checkpoint and not args.eval_only:
        raise UsageError("--checkpoint is for --eval-only; to fine-tune a checkpoint further, pass it as --model")
    if args.eval_only and args.holdout is not None:
        raise UsageError("--holdout sets train examples aside during training; --eval-only trains nothing")
    if args.eval_only and args.keep_layers:
        raise UsageError("--keep-layers builds a smaller model to train; --eval-only trains nothing")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    args.stages = resolve_stages(args)
    kinds = [kind for kind, _, _ in args.stages]
    if args.target_speedup is None and args.skim_coef is None and args.freeze_predictors is None and "skim" in kinds:
        args.target_speedup = TARGET_SPEEDUP
    if args.target_speedup is not None and not {"skim", "frozen"} & set(kinds):
        raise UsageError("--target-speedup needs a skim or frozen stage; a dense model processes every token")
    if args.keep_threshold is not None and kinds and not {"skim", "frozen"} & set(kinds):
        raise UsageError("--keep-threshold sets where skim predictors keep tokens; these stages train a dense model")
    if args.steer_every < 0:
        raise UsageError(f"--steer-every N: N is a number of steps, at least 0, got {args.steer_every}")
    if args.steer_every and (args.target_speedup is None or "skim" not in kinds):
        raise UsageError("--steer-every steers a skim stage towards --target-speedup; this run has no such stage")
    if args.skim_coef is not None and "skim" not in kinds:
        raise UsageError("--skim-coef weighs the skim loss of a skim stage; this run has none")
    args.keep_layers = parse_layers(args.keep_layers) if args.keep_layers is not None else None
    args.max_seq_length = args.max_seq_length or task.max_seq_length
    if args.teacher:
        args.distill_coef = DISTILL_COEF if args.distill_coef is None else args.distill_coef
        args.distill_temp = args.distill_temp or DISTILL_TEMP
    args.output_dir = Path(args.output_dir or Path("out") / task.name)


def resolve_stages(args):
    """The stages this run trains, as [(kind, epochs, lr)]: --stages; or one stage, for --no-skim (dense),
    --freeze-predictors (frozen) and --skim-coef (the paper's recipe: skim); or the default recipe. A stage
    that names no learning rate trains at --lr (default LR)."""
    if args.eval_only:
        return []
    if args.stages is not None:
        if args.epochs is not None:
            raise UsageError("--epochs sets the length of a one-stage run; with --stages give each stage's as KIND:EPOCHS")
        if args.no_skim:
            raise UsageError("--no-skim is one dense stage; with --stages write it as dense:EPOCHS")
        stages = parse_stages(args.stages)
    elif args.no_skim or args.freeze_predictors is not None or args.skim_coef is not None:
        one_stage = "dense" if args.no_skim else "frozen" if args.freeze_predictors is not None else "skim"
        stages = [(one_stage, args.epochs or 1.0, None)]
    else:
        if args.epochs is not None:
            raise UsageError(f"--epochs: the default recipe has stages ({DEFAULT_STAGES}); give their lengths with "
                             "--stages, or --skim-coef LAMBDA for the paper's one-stage recipe")
        if args.lr is not None:
            raise UsageError(f"--lr: the default recipe's stages set their own learning rates ({DEFAULT_STAGES}); "
                             "give --stages to train at others")
        stages = parse_stages(DEFAULT_STAGES)
    default = LR if args.lr is None else args.lr
    return [(kind, epochs, default if lr is None else lr) for kind, epochs, lr in stages]


def parse_stages(spec):
    """'dense:1:2e-4,skim:0.5,frozen:0.5' -> [('dense', 1.0, 2e-4), ('skim', 0.5, None), ('frozen', 0.5, None)]
    (None: no learning rate of its own), checked: dense stages come first (a later one would drop the
    predictors), and no skim stage follows a frozen one."""
    stages = []
    for part in spec.split(","):
        kind, epochs, lr, *extra = part.strip().split(":") + [None, None]
        try:
            epochs, lr = float(epochs), None if lr is None else float(lr)
        except (TypeError, ValueError):
            epochs = math.nan
        if kind not in STAGE_KINDS or not epochs > 0 or (lr is not None and not lr > 0) or any(extra):
            raise UsageError(f"--stages: {part.strip()!r} is not KIND:EPOCHS or KIND:EPOCHS:LR with KIND one of "
                             f"{', '.join(STAGE_KINDS)}, EPOCHS > 0 and LR > 0")
        stages.append((kind, epochs, lr))
    kinds = [kind for kind, _, _ in stages]
    for before, after in zip(kinds, kinds[1:]):
        if after == "dense" and before != "dense" or (before, after) == ("frozen", "skim"):
            raise UsageError(f"--stages: a {after} stage cannot follow a {before} stage (the order is dense, skim, frozen)")
    return stages


def parse_layers(spec):
    """--keep-layers: 'K' -> the first K layers [0, ..., K-1]; 'I,J,...' -> those layers, in increasing order."""
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    layers = list(range(values[0])) if len(values) == 1 else values
    if not layers or min(layers) < 0 or layers != sorted(set(layers)):
        raise UsageError(f"--keep-layers {spec}: give K (the first K layers, K >= 1) or increasing layer indices "
                         "I,J,... (from 0)")
    return layers


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
    """The model the first stage trains, from --model: the dense BertForSequenceClassification (cut to
    --keep-layers) for a dense stage, else a Transkimmer (new predictors, Eq. 9, on a plain checkpoint; its
    own on a saved one). With --eval-only, the saved model in --checkpoint (see load_saved)."""
    if args.eval_only:
        model = load_saved(args.checkpoint, every_token=args.no_skim)
        if isinstance(model, skim.Transkimmer):
            model.keep_threshold = args.keep_threshold = args.keep_threshold or skim.KEEP_THRESHOLD
        elif args.keep_threshold is not None:  # given, even at the default: a dense model has nothing to set
            raise UsageError(f"--keep-threshold: {args.checkpoint} is a dense model, it has no skim predictors")
        return model
    first = args.stages[0][0]
    has_predictors = "skim" in read_config(resolve_checkpoint(args.model))
    name = args.model or "all-MiniLM-L6-v2"
    if first == "frozen" and not has_predictors:
        raise UsageError(f"--freeze-predictors: --model {name} has no trained skim predictors to freeze; give a "
                         "Transkimmer folder train.py saved")
    if first != "dense" and has_predictors:
        if args.keep_layers:
            raise UsageError(f"--keep-layers: --model {name} has trained skim predictors, one per layer; give a plain "
                             "BERT checkpoint")
        return skim.Transkimmer.from_pretrained(args.model, num_labels=task.num_labels, tau=args.tau, mu0=args.mu0)
    bert = BertForSequenceClassification.from_pretrained(args.model, num_labels=task.num_labels)
    if args.keep_layers:
        L = bert.config.num_hidden_layers
        if args.keep_layers[-1] >= L:
            raise UsageError(f"--keep-layers: {name} has {L} layers, numbered 0 to {L - 1}")
        args.checkpoint_layers = L
        keep_layers(bert, args.keep_layers)
    return bert if first == "dense" else skim.Transkimmer(bert, tau=args.tau, mu0=args.mu0)


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

def optimizer_for(model, args, lr):
    """AdamW at the stage's peak learning rate lr; as in BERT, no weight decay on biases and LayerNorm
    weights (the 1-d parameters). The skim predictors, new parameters, learn at --predictor-lr (default:
    the stage's lr), unless they are frozen."""
    parts = [(model, lr)]
    if isinstance(model, skim.Transkimmer):
        parts = [(model.bert, lr)] + ([] if model.predictors_frozen else [(model.predictors, args.predictor_lr or lr)])
    groups = []
    for part, part_lr in parts:
        groups += [{"params": [p for p in part.parameters() if p.dim() >= 2], "weight_decay": args.weight_decay,
                    "lr": part_lr},
                   {"params": [p for p in part.parameters() if p.dim() < 2], "weight_decay": 0.0, "lr": part_lr}]
    return torch.optim.AdamW(groups)


def clip_groups(model):
    """The parameter groups whose gradient norm is clipped to --max-grad-norm (1, as in BERT). One group, except with
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


class Interrupted(Exception):
    """Ctrl-C during training: the state was saved; the message says how to resume. One line."""


class StopOnCtrlC:
    """While active, the first Ctrl-C (SIGINT) only asks training to stop after the step in progress, so
    the saved state is that of a whole step; a second one stops at once."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self.ask)
        return self

    def ask(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def args_record(args):
    """The flags as plain values (paths as strings), for metrics.json and the resumable state."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def resume_path(output_dir):
    return Path(output_dir) / "resume.pt"


def save_state(args, model, stage, step, optimizer, schedule, controller, records, record):
    """Everything a run needs to go on exactly where it is: its flags, the stage and step, the model, the
    optimizer, the lr schedule, the speedup controller, torch's random state and the stage records."""
    state = {"args": args_record(args),
             "stage": stage, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "controller": controller.state_dict() if controller else None,
             "rng": torch.get_rng_state(), "records": records, "record": record}
    atomic_write(resume_path(args.output_dir), lambda p: torch.save(state, p))


def load_state(directory):
    path = resume_path(directory)
    if not path.is_file():
        raise UsageError(f"--resume {directory}: no {path.name} there; it is written while a run trains "
                         "(every --save-every minutes and on Ctrl-C) and removed when the run ends")
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line
        raise UsageError(f"--resume {directory}: {path.name} cannot be read ({type(e).__name__})") from None


def calibration_batches(examples, encoded, args, context=None):
    """A fixed sample of training inputs (their labels are not used) on which a --target-speedup run sets
    its keep threshold: whole sentences (data.whole_sentences), because a model is used on sentences, and
    the same threshold skims a short phrase less than a sentence (SST-2 trains on phrases, 13 tokens long
    on average, and is scored on sentences of 25; calibrated to 2x on its phrases, one model ran at 2.25x
    on dev). Examples and encoded: the same rows; context: the texts that decide what is whole (default:
    the examples; for held-out examples, the whole training file)."""
    whole = data.whole_sentences(examples, context)
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(whole, size=min(CALIBRATION_EXAMPLES, len(whole)), replace=False))
    return [to_device(b, args.device) for b in data.batches([encoded[i] for i in picked], args.batch_size)]


def enter_stage(model, kind, args, calibration, record, calibrated=None):
    """The model a stage trains. A skim stage puts new predictors (Eq. 9) before the layers of a dense
    model. A frozen stage fixes the decisions (skim.Transkimmer.freeze_predictors) at --freeze-predictors
    T, or at the threshold calibrated to --target-speedup on `calibration` (None when resuming: the saved
    state holds the folded threshold; `calibrated`: already calibrated on it, for this model), or at 0.5."""
    if kind == "skim" and not isinstance(model, skim.Transkimmer):
        model = skim.Transkimmer(model, tau=args.tau, mu0=args.mu0).to(args.device)
    if isinstance(model, skim.Transkimmer):
        model.predictor_grad = args.predictor_grad
    if kind == "frozen":
        threshold = args.freeze_predictors or skim.KEEP_THRESHOLD
        if args.target_speedup and calibration is not None:
            threshold = calibrated if calibrated is not None else \
                skim.calibrate_threshold(model, calibration, args.target_speedup)
        model.freeze_predictors(threshold)
        record.setdefault("keep_threshold", threshold)
    return model


def run_stages(model, train_set, task, args, teacher, calibration, dev_set, state=None):
    """Train every stage of args.stages in turn; with `state` (from --resume), go on where it was saved.
    Each stage but the last is evaluated on dev when it ends (the last one is the run's own evaluation),
    so a run's dense stage is also the dense model to compare its skimming model with, sentence by
    sentence; a skim stage of a --target-speedup run is also evaluated at the threshold calibrated to
    the target ("dev_at_target"), where the run would leave it if it stopped there. A --target-speedup
    run ends by calibrating the keep threshold once more (the frozen decisions drift a little as the
    encoder trains) and folding it into the model.
    -> (model, the stages' records)."""
    records = state["records"] if state else []
    calibrated = None  # the keep threshold calibrated after a skim stage, for the frozen stage after it
    for i, (kind, epochs, _) in enumerate(args.stages):
        if state and i < state["stage"]:  # done before the interruption: rebuild its structure only
            model = enter_stage(model, kind, args, None, {})
            continue
        resumed = state if state and i == state["stage"] else None
        record = resumed["record"] if resumed else {"stage": kind, "epochs": epochs}
        model = enter_stage(model, kind, args, None if resumed else calibration, record, calibrated)
        train_stage(model, i, train_set, task, args, teacher, records, record, resumed, calibration)
        if i < len(args.stages) - 1:
            record["dev"] = stage_evaluation(model, dev_set, task, args)
            if kind == "skim" and args.target_speedup:
                calibrated = skim.calibrate_threshold(model, calibration, args.target_speedup)
                model.keep_threshold = calibrated
                record["dev_at_target"] = stage_evaluation(model, dev_set, task, args) | {"keep_threshold": calibrated}
                model.keep_threshold = skim.KEEP_THRESHOLD
        records.append(record)
    if args.target_speedup and isinstance(model, skim.Transkimmer):
        threshold = skim.calibrate_threshold(model, calibration, args.target_speedup)
        model.fold_threshold(threshold)
        records[-1]["final_keep_threshold"] = threshold
        records[-1]["calibrated_speedup"] = skim.speedup_at(model, calibration, skim.KEEP_THRESHOLD)
    model.eval()
    return model, records


def stage_evaluation(model, dev_set, task, args):
    """What a stage's record keeps of an evaluation on dev."""
    result = evaluate(model, dev_set, task, args, timing=False)
    return {k: result[k] for k in (task.main_metric, "predictions")} | {
        "flops_speedup": result["flops"]["none"]["speedup"], "kept_fraction": result["flops"]["kept_fraction"]}


def train_stage(model, index, train_set, task, args, teacher, records, record, resumed=None, calibration=None):
    """One stage: AdamW with its own linear warm-up and decay, loss = task loss + lambda * skim loss (Eq. 7).
    lambda is --skim-coef, or steered by skim.SpeedupController in a skim stage with --target-speedup, or 0
    (dense and frozen stages: no skim loss to weigh). With --steer-every N the controller is rescaled every
    N steps to the FLOPs fraction of the `calibration` sentences over that of the last N batches. Saves a
    resumable state every --save-every minutes and on Ctrl-C (then raises Interrupted)."""
    from tqdm import tqdm

    kind, epochs, lr = args.stages[index]
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total_steps = max(1, round(steps_per_epoch * epochs))
    optimizer = optimizer_for(model, args, lr)
    clipped = clip_groups(model)
    schedule = linear_schedule(optimizer, total_steps, round(args.warmup * total_steps))
    controller = skim.SpeedupController(args.target_speedup, total_steps) if kind == "skim" and args.target_speedup \
        else None
    coef = args.skim_coef if kind == "skim" and args.skim_coef is not None else 0.0
    steer_every = getattr(args, "steer_every", 0)  # a state saved before the flag existed has none
    step = 0
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        if controller:
            controller.load_state_dict(resumed["controller"])
        torch.set_rng_state(resumed["rng"])
        step = resumed["step"]
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=f"stage {index + 1}/{len(args.stages)}: {kind} {task.name}",
               unit="step", dynamic_ncols=True)
    t0, saved_at = time.time() - record.get("train_seconds", 0.0), time.time()
    with StopOnCtrlC() as ctrl_c:
        while step < total_steps:
            epoch, done = divmod(step, steps_per_epoch)
            for batch in itertools.islice(data.batches(train_set, args.batch_size, shuffle=True, seed=args.seed + epoch),
                                          done, None):
                batch = to_device(batch, args.device)
                logits, masks, skim_loss = run(model, batch)
                loss_task = fit = task_loss(logits, batch["labels"], task)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(batch["input_ids"], batch["attention_mask"],
                                                 batch["token_type_ids"])  # (B, labels)
                    loss_kd = distill_loss(logits, teacher_logits, task, args.distill_temp)
                    fit = (1 - args.distill_coef) * loss_task + args.distill_coef * loss_kd
                if controller:
                    coef = controller.coef
                loss = skim.total_loss(fit, skim_loss, coef)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if args.max_grad_norm:
                    for group in clipped:
                        torch.nn.utils.clip_grad_norm_(group, args.max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                shown = {"task": f"{loss_task.item():.3f}"}
                if teacher is not None:
                    shown["kd"] = f"{loss_kd.item():.3f}"
                if kind != "dense":
                    shown["kept"] = f"{skim_loss.item():.2f}"  # Eq. 6: the fraction of tokens the layers process
                if controller:  # the batch's FLOPs fraction, counted as the evaluation counts it, steers lambda
                    fraction = flops.fraction(masks, batch["attention_mask"], model.config)
                    trace = record.setdefault("trace", {"flops_fraction": [], "skim_coef": []})
                    trace["flops_fraction"].append(round(fraction, 4))
                    trace["skim_coef"].append(round(coef, 4))
                    shown.update(speedup=f"{1 / fraction:.2f}x", target=f"{1 / controller.target():.2f}x",
                                 **{"lambda": f"{controller.update(fraction):.2f}"})
                    if steer_every and step % steer_every == 0 and step < total_steps:
                        sentences = 1 / skim.speedup_at(model, calibration, model.keep_threshold)
                        controller.rescale(sentences, statistics.fmean(trace["flops_fraction"][-steer_every:]))
                        trace.setdefault("sentence_fraction", []).append(round(sentences, 4))
                    if steer_every:
                        shown["sentences"] = f"{1 / (fraction * controller.scale):.2f}x"
                bar.set_postfix(shown)
                bar.update()
                if ctrl_c.requested or (args.save_every and time.time() - saved_at > 60 * args.save_every):
                    record["train_seconds"] = round(time.time() - t0, 1)
                    save_state(args, model, index, step, optimizer, schedule, controller, records, record)
                    saved_at = time.time()
                if ctrl_c.requested:
                    bar.close()
                    raise Interrupted(f"interrupted in stage {index + 1}/{len(args.stages)} ({kind}) at step {step}/"
                                      f"{total_steps}; the state is saved: continue with python train.py --resume "
                                      f"{args.output_dir}")
                if step >= total_steps:
                    break
    bar.close()
    record.update(train_steps=step, train_seconds=round(time.time() - t0, 1))
    if controller:
        record.update(target_speedup=args.target_speedup, final_skim_coef=round(controller.coef, 4))

# -----------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def evaluate(model, dev_set, task, args, timing=True):
    """Task metric, each example's prediction, FLOPs (flops.py), kept fraction per layer, and (with
    timing) the measured speedup of real pruning."""
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
    preds = np.concatenate(preds)
    result = {"task": task.name, "eval_samples": len(dev_set), **metrics, "flops": summary,
              "predictions": preds.tolist()}  # per example, in file order: for paired comparisons of runs
    if timing and args.timing_repeats and isinstance(model, skim.Transkimmer):
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
    return {"dense_seconds": round(t_dense, 6), "pruned_seconds": round(t_pruned, 6),
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

def describe(args):
    """One line on what this run trains."""
    stages = " -> ".join(f"{kind} ({epochs:g} epoch{'s' if epochs != 1 else ''}, lr {lr:g})"
                         for kind, epochs, lr in args.stages)
    if args.target_speedup:
        stages += f"; target speedup {args.target_speedup:g}x"
    if "skim" in [kind for kind, _, _ in args.stages]:
        stages += (f"; lambda {args.skim_coef:g}" if args.skim_coef is not None else "") + (
            f"; tau {args.tau:g}, mu0 {args.mu0:g}, predictor-grad {args.predictor_grad}") + (
            f", predictor lr {args.predictor_lr:g}" if args.predictor_lr else "")
    if args.freeze_predictors is not None:
        stages += f"; predictors frozen at keep threshold {args.freeze_predictors:g}"
    if args.keep_layers:
        stages += f"; layers {','.join(map(str, args.keep_layers))} of the checkpoint"
    if args.teacher:
        stages += f"; distilled from {args.teacher} (coef {args.distill_coef}, temperature {args.distill_temp})"
    return f"seed {args.seed}: {stages}"


def main(argv=None):
    args = parse_args(argv)
    state = None
    if args.resume:
        state = load_state(args.resume)
        args = argparse.Namespace(**{**state["args"], "resume": args.resume})
        args.output_dir, args.stages = Path(args.output_dir), [tuple(s) for s in args.stages]
    task = data.get_task(args.task)
    check_writable(args.output_dir)
    data_dir = data.find_data_dir(task, args.data_dir)  # all input is checked before the model loads
    args.data_dir = str(data_dir)  # saved with a resumable state: the same data when the run goes on
    dev_split = task.dev_splits[0]
    dev_examples = data.read_split(task, dev_split, data_dir)[: args.max_eval_samples]
    train_examples = [] if args.eval_only else data.read_split(task, "train", data_dir)
    held_examples = []
    if args.holdout:
        train_examples, held_examples = data.split_holdout(train_examples, args.holdout)
    train_examples = train_examples[: args.max_train_samples]
    # the teacher first: its flags fail before the student loads, and building it draws no random numbers
    # after the seed is set, so --distill-coef 0 trains exactly the model that no --teacher does
    teacher = load_teacher(args, task).to(args.device) if args.teacher else None
    torch.manual_seed(args.seed)
    model = load_model(args, task).to(args.device)
    tokenizer = dense_of(model).tokenizer
    if tokenizer is None:
        raise ModelError(f"{args.checkpoint or args.model}: the checkpoint has no tokenizer.json or vocab.txt")
    dev_set = data.encode(tokenizer, dev_examples, args.max_seq_length)
    held_set = data.encode(tokenizer, held_examples, args.max_seq_length)

    train_info = {}
    if not args.eval_only:
        train_set = data.encode(tokenizer, train_examples, args.max_seq_length)
        calibration = None
        if args.target_speedup:  # held-out sentences if any, judged whole against every training row
            calibration = (calibration_batches(held_examples, held_set, args, context=train_examples + held_examples)
                           if held_examples else calibration_batches(train_examples, train_set, args))
        print(f"{task.name}: {len(train_set)} train / {len(dev_set)} {dev_split} examples; {describe(args)}"
              + (f"; resumed from {resume_path(args.output_dir)}" if state else ""), file=sys.stderr)
        model, records = run_stages(model, train_set, task, args, teacher, calibration, dev_set, state)
        train_info = {"stages": records, "train_steps": sum(r["train_steps"] for r in records),
                      "train_seconds": round(sum(r["train_seconds"] for r in records), 1)}
        if isinstance(model, skim.Transkimmer):
            model.keep_threshold = args.keep_threshold = args.keep_threshold or skim.KEEP_THRESHOLD
        model.save_pretrained(args.output_dir, tokenizer)

    metrics = evaluate(model, dev_set, task, args)
    if getattr(args, "checkpoint_layers", None):  # --keep-layers: the speedup over the whole checkpoint
        f = metrics["flops"]
        whole = (f["none"]["dense"] - f["head"]) * args.checkpoint_layers / len(args.keep_layers) + f["head"]
        metrics["flops_speedup_over_checkpoint"] = whole / f["none"]["dense"]
    if held_examples:
        held = evaluate(model, held_set, task, args, timing=False)
        metrics["holdout"] = {k: v for k, v in held.items() if k != "predictions"}
    metrics.update(train_info, split=dev_split, args=args_record(args))
    atomic_write(args.output_dir / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2) + "\n"))
    kept = metrics["flops"]["kept_fraction"]
    plot_retention(kept, args.output_dir / "retention.png", f"{task.name} dev: tokens processed per layer")
    skim_picture(model, tokenizer, dev_examples, args, args.output_dir / "skimmed_tokens.html")
    resume_path(args.output_dir).unlink(missing_ok=True)  # the run is complete

    f = metrics["flops"]
    speedup = (f"{metrics['flops_speedup_over_checkpoint']:.2f}x over the {args.checkpoint_layers}-layer checkpoint"
               if "flops_speedup_over_checkpoint" in metrics else
               f"{f['none']['speedup']:.2f}x (no padding), {f['sequence']['speedup']:.2f}x (sequence {args.max_seq_length})")
    print(f"{task.name} {dev_split}: {task.main_metric} {metrics[task.main_metric]:.4f} | FLOPs speedup {speedup}"
          + (f" | measured {metrics['measured_speedup']:.2f}x" if "measured_speedup" in metrics else "")
          + (f" | held-out {task.main_metric} {metrics['holdout'][task.main_metric]:.4f}" if held_examples else "")
          + f" | kept per layer {' '.join(f'{k:.2f}' for k in kept)} | -> {args.output_dir}")
    return metrics


def cli(argv=None):
    """main() as the command line runs it: a problem the user can fix is one line on stderr and exit code 2;
    Ctrl-C in training saves the state, says how to resume, and exits with 130 (the shell's code for it)."""
    try:
        main(argv)
    except (data.DataError, ModelError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(e, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
