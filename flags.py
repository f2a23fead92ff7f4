"""
train.py's command line: the flags, checked and resolved once into one frozen Settings, which the run
reads and never changes, and which metrics.json ("args") and the resumable state record as they are.

Every check that can be made before training is made here, in one place, each failing with one line
(UsageError): the flags alone first, then against the output folder, the data and the checkpoints'
config files (nothing is trained or loaded before they pass). Flags follow HF's run_glue.py where they
overlap; the recipe's flags (stages, target speedup) are described in recipe.py.
"""

import argparse
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import data
import methods
import recipe
import flops
import skim
from checkpoint import default_checkpoint_dir, read_config, resolve_checkpoint, why_not_writable
from model import BertConfig


class UsageError(Exception):
    """A flag, or a combination of them, that cannot be; one line."""


LR, TARGET_SPEEDUP = 5e-5, 2.0  # LR: of a stage that names none (the default recipe's stages name theirs)
DISTILL_COEF, DISTILL_TEMP = 0.5, 2.0  # with --teacher: conventional values (Hinton et al., 2015), not tuned here


@dataclass(frozen=True)
class Settings:
    """One run, resolved: every flag's value as the run uses it (the defaults filled in). Paths are strings."""
    task: str
    model: str | None                 # None: the embedded all-MiniLM-L6-v2
    data_dir: str                     # the folder the data was found in (resolved, so a resumed run reads the same)
    output_dir: str
    overwrite: bool                   # the run replaces one already in output_dir (whose files it removes first)
    max_seq_length: int
    batch_size: int
    stages: tuple                     # ((kind, epochs, lr), ...), recipe.py; () for --eval-only
    min_steps: int                    # the stages were lengthened to this many optimizer steps in all, if shorter
    method: str                       # what a skim stage trains: a name in methods.METHODS
    lr: float | None
    epochs: float | None
    warmup: float
    weight_decay: float
    seed: int
    skim_coef: float | None           # a fixed lambda (the paper's recipe), or None
    target_speedup: float | None      # steer lambda to this FLOPs speedup, or None
    steer_every: int
    tau: float
    mu0: float
    predictor_lr: float | None
    predictor_grad: str
    keep_threshold: float | None      # the evaluation's; None for a dense model
    freeze_predictors: float | None
    keep_layers: tuple | None
    checkpoint_layers: int | None     # with keep_layers: the layers of the checkpoint they are cut from
    teacher: str | None
    distill_coef: float | None
    distill_temp: float | None
    max_grad_norm: float
    holdout: int | None
    max_train_samples: int | None
    max_eval_samples: int | None
    no_skim: bool
    eval_only: bool
    checkpoint: str | None
    save_every: float
    device: str
    timing_repeats: int
    recipe: str = "ours"              # "released": the hyperparameters of the authors' script (methods/released.py)
    # a state saved before these two existed trained as their defaults say: random batches, in float32
    group_by_length: bool = False     # training batches of sentences of about one length (data.batch_rows)
    precision: str = "fp32"           # the training forward's: "fp32", or "bf16" (bfloat16 autocast)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors (an unknown flag, a value that is not a number) as one UsageError line."""

    def error(self, message):
        raise UsageError(message)


def lambda_or_task(text):
    """--skim-coef's value: a number, or "task" (a bare --skim-coef: argparse passes the const through)."""
    return text if text == "task" else float(text)


def parser():
    p = Parser(prog="train.py", formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Fine-tune and evaluate Transkimmer on a GLUE task. A run is a list of stages (--stages; the "
                           "default: dense, skim, frozen; recipe.py):\n\n" + recipe.__doc__.split("\n\n")[1])
    g = p.add_argument_group("the task, the model and the paper's training recipe")
    g.add_argument("--task", default="sst2", help=f"GLUE task: {', '.join(data.TASKS)} (default %(default)s)")
    g.add_argument("--model", default=None, help="checkpoint folder or hub id (default: embedded all-MiniLM-L6-v2)")
    g.add_argument("--data-dir", default=None, help="folder holding <TASK>/train.tsv (default: $GLUE_DIR, else download)")
    g.add_argument("--output-dir", default=None, help="where the model, metrics.json and plots go (default: out/TASK)")
    g.add_argument("--max-seq-length", type=int, default=None, help="default: the task's, paper Table 2 (SST-2: 64)")
    g.add_argument("--batch-size", type=int, default=32, help="the global batch, shared out among torchrun's processes (default %(default)s)")
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of every stage that names none in --stages (default {LR}; the default "
                        f"recipe's stages name theirs)")
    g.add_argument("--epochs", type=float, default=None,
                   help="length of a one-stage run (--skim-coef, --no-skim, --freeze-predictors; default 1); the "
                        "default recipe's stages are set with --stages")
    g.add_argument("--warmup", type=float, default=0.06, help="fraction of each stage's steps spent warming up the lr (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's, on the weights of 2 or more dimensions "
                                                                    "(default %(default)s)")
    g.add_argument("--seed", type=int, default=42, help="the random seed of the run (default %(default)s)")
    g.add_argument("--skim-coef", type=lambda_or_task, nargs="?", const="task", default=None, metavar="LAMBDA",
                   help="the paper's recipe: one skimming stage with a fixed lambda (Eq. 7), instead of a target "
                        "speedup; with no value, the task's lambda from the paper's Table 2 (SST-2: 0.3)")
    g.add_argument("--tau", type=float, default=skim.TAU, help="Gumbel-softmax temperature (Eq. 5; default %(default)s)")
    g.add_argument("--mu0", type=float, default=skim.MU0,
                   help=f"unbalanced init of the predictors (Eq. 9; default {skim.MU0}, the paper's is {skim.MU0_PAPER})")
    g.add_argument("--recipe", default="ours", choices=["ours", "released"],
                   help="released: the authors' released training script, theirs, not ours (one skim stage from the "
                        "checkpoint, lambda 0.5, batch 64, lr 2e-5, no weight decay, warm-up or clipping, tau 1, "
                        "mu0 5, joint gradient, random batches in float32; 3 epochs, 5 on MRPC and WNLI); with "
                        "--method released, also their forward (methods/released.py), else our honest Transkimmer (default: "
                        "ours, the recipe below)")
    g.add_argument("--no-skim", action="store_true", help="train the dense baseline (no predictors); with --eval-only, "
                   "evaluate a Transkimmer checkpoint without its predictors (every token kept)")

    g = p.add_argument_group("not in the paper")
    g.add_argument("--method", default="transkimmer", choices=sorted(methods.METHODS),
                   help="the way of saving compute the run trains (methods/): transkimmer; topk (static top-k "
                        "pruning, methods/topk.py: dense, then under its schedule, calibrated to --target-speedup); "
                        "skipmiddle (gates that close the middle layers to a token, methods/skipmiddle.py: Lawson et al. "
                        "2025); or released (the authors' released computation, methods/released.py, with --recipe "
                        "released); default %(default)s")
    g.add_argument("--target-speedup", type=float, default=None, metavar="S",
                   help=f"the FLOPs speedup (no padding) to reach: lambda is steered during training "
                        f"(recipe.SpeedupController) and the keep threshold calibrated on training sentences "
                        f"(default {TARGET_SPEEDUP} unless --skim-coef)")
    g.add_argument("--steer-every", type=int, default=0, metavar="N",
                   help="with --target-speedup: every N steps of a skim stage, score the calibration sentences at "
                        "the keep threshold and steer lambda on them, not on the training batches alone (SST-2's "
                        "are short phrases, skimmed less than its sentences); 0 (default): steer on the batches")
    g.add_argument("--stages", default=None, metavar="SPEC",
                   help=f"the stages, in order, as KIND:EPOCHS[:LR], KIND one of dense, skim, frozen, LR the "
                        f"stage's own peak learning rate (default {recipe.DEFAULT_STAGES}; on a task of fewer than "
                        f"{recipe.SMALL_TASK:,} training examples, {recipe.SMALL_TASK_STAGES}): dense fine-tuning, "
                        f"then skimming at the target, then the encoder trained on under frozen decisions")
    g.add_argument("--min-steps", type=int, default=None, metavar="N",
                   help=f"lengthen the stages, all by one factor, to at least N optimizer steps in all, counted on the "
                        f"task's training set (after --holdout, before --max-train-samples); 0: as given. Default: "
                        f"{recipe.MIN_STEPS} for the default recipe, so that a small task trains long enough (SST-2's "
                        f"2 epochs are 4,210 steps, RTE's 6 are 468); 0 for --stages, --epochs and the one-stage runs")
    g.add_argument("--keep-layers", default=None, metavar="K|I,J,..",
                   help="a smaller dense model: only these encoder layers of the checkpoint (3: the first three; "
                        "0,2,4: those three)")
    g.add_argument("--predictor-lr", type=float, default=None,
                   help="learning rate of the skim predictors (default: their stage's; in a small task's default "
                        f"recipe, {recipe.PREDICTOR_LR:g} x {recipe.SpeedupController.KI_STEPS:,} / the skim stage's "
                        "steps, so that they move as far as in SST-2's skim stage)")
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
                   help="clip the gradient's norm to this before each step, as BERT does (0: no clipping; default "
                        "%(default)s)")
    g.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="each training batch holds sentences of about one length (data.batch_rows, as HF's "
                        "group_by_length: sorted within megabatches of 50 batches, the batches shuffled), so that "
                        "padding each batch to its longest sentence computes few positions beyond the real tokens "
                        "(1.02x-1.07x the real tokens at batch 32 on the GLUE tasks counted, random batches 1.5x-3x; "
                        "default: %(default)s). --no-group-by-length: random batches, as the authors' script, HF's "
                        "run_glue and every result made before grouping became the default (results/README.md, "
                        "section 6)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="the training forward's arithmetic (default: %(default)s): bf16 runs it under bfloat16 "
                        "autocast (weights, optimizer state, losses, the estimator's softmax and the FLOPs count stay "
                        "float32; the evaluation runs in float32); auto: bf16 where the machine multiplies bfloat16 in "
                        "hardware (a CUDA GPU that supports it; a CPU with AMX or AVX512-BF16, read from "
                        "/proc/cpuinfo), else fp32 (flops.native_bf16). fp32: as every result made before auto "
                        "became the default")

    g = p.add_argument_group("running")
    g.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="hold N train examples out of training (the same N whatever --seed) and report the metric "
                        "on them too: settings are chosen on these, not on dev")
    g.add_argument("--max-train-samples", type=int, default=None, help="train on the first N examples only")
    g.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on the first N examples only")
    g.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint, no training")
    g.add_argument("--checkpoint", default=None, help="a folder saved by train.py, for --eval-only")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --output-dir (without it, a folder holding one is refused)")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted run whose --output-dir was DIR, from its last saved state, in DIR "
                        "(with --data-dir too, if its data has moved)")
    g.add_argument("--save-every", type=float, default=5.0, metavar="MIN",
                   help="save a resumable state every MIN minutes of training (and on Ctrl-C or SIGTERM); 0: only then "
                        "(default %(default)s)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default %(default)s")
    g.add_argument("--timing-repeats", type=int, default=3, help="passes over dev for the measured speedup (0: skip; default %(default)s)")
    return p


def parse(argv=None, world=1, rank=0):
    """The command line -> (Settings, the resumable state or None). With --resume DIR the settings are the
    interrupted run's, continued in DIR. world: the number of processes (torchrun) sharing each batch; rank:
    this one's (rank 0 alone checks the output folder, which it alone writes, and holds it from here on:
    recipe.hold; the caller lets go with recipe.release())."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if args.recipe == "released" and args.resume is None:
        apply_released_recipe(args, argv)
    if args.resume is not None:  # everything else comes from the saved state
        given = [a for a in argv if a.startswith("--") and a.split("=")[0] not in ("--resume", "--data-dir")]
        if given:
            raise UsageError(f"--resume DIR continues a run with the flags it was started with; drop {given[0]}")
        check_paths(args)
        state = recipe.load_state(args.resume)
        saved = {k: tuple(map(tuple, v)) if k == "stages" else v for k, v in state["settings"].items()}
        task = data.get_task(saved["task"])
        data_dir = data.find_data_dir(task, args.data_dir or saved["data_dir"], download=False)
        try:
            settings = Settings(**saved | {"output_dir": str(args.resume), "data_dir": str(data_dir)})
        except TypeError:
            raise UsageError(f"--resume {args.resume}: its resume.pt was saved by another version of train.py") from None
        finished = [name for name in ("metrics.json", "model.safetensors") if (Path(args.resume) / name).exists()]
        if finished and not state.get("trained"):  # resuming would write the state's run over a finished one
            raise UsageError(f"--resume {args.resume}: the folder holds a finished run ({finished[0]}) beside "
                             f"resume.pt, a {settings.task} run stopped in stage {state['stage'] + 1}; resuming would "
                             "replace the finished run: move one of them to another folder first")
        if rank == 0:
            check_writable(Path(settings.output_dir))
            recipe.hold(settings.output_dir)
            check_room(Path(settings.output_dir), weights_bytes(settings.model), settings.eval_only)
        return settings, state
    return resolve(args, world, rank), None


def apply_released_recipe(args, argv):
    """--recipe released: the released script's flags (methods/released.py's RECIPE) put on args (they are theirs: a flag that would change one, or
    the stages, is refused), and one skim stage of the task's epochs."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    recipe = methods.released.RECIPE  # the authors' script's, beside their computation
    for flag in [*recipe, "--no-group-by-length", "--stages", "--epochs", "--target-speedup", "--min-steps",
                 "--predictor-lr",
                 "--no-skim", "--eval-only", "--freeze-predictors", "--steer-every", "--keep-layers", "--teacher"]:
        if flag in given:
            raise UsageError(f"--recipe released is the authors' script as they ran it; drop {flag} (or train "
                             "with --recipe ours)")
    if args.method not in ("transkimmer", "released"):
        raise UsageError(f"--recipe released trains a Transkimmer (--method transkimmer, honest) or the released "
                         f"computation (--method released), not --method {args.method}")
    for flag, value in recipe.items():
        setattr(args, flag[2:].replace("-", "_"), value)
    args.stages = f"skim:{methods.released.EPOCHS.get(args.task, 3)}"


def resolve(args, world=1, rank=0):
    """Check the flags (UsageError) and fill in every default -> Settings."""
    task = data.get_task(args.task)  # unknown task -> DataError
    skim_coef = task.skim_coef if args.skim_coef == "task" else args.skim_coef
    check_flags(args, skim_coef, world)
    try:
        stages = recipe.resolve_stages(args, skim_coef, LR)
        keep_layers = recipe.parse_layers(args.keep_layers) if args.keep_layers is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    kinds = {kind for kind, _, _ in stages}
    target = args.target_speedup
    steered = "skim" in kinds or ("frozen" in kinds and not recipe.trains_decisions(args.method))
    if target is None and skim_coef is None and args.freeze_predictors is None and steered:
        target = TARGET_SPEEDUP
    check_stages(args, kinds, target, skim_coef)
    checkpoint_layers, keep_threshold = check_checkpoints(args, task, stages, keep_layers)
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args, task, keep_threshold)
    if rank == 0:
        check_output_dir(output_dir, args)
    data_dir = data.find_data_dir(task, args.data_dir)  # all input is checked before the model loads
    # the default recipe is sized for the task (recipe.task_sized); stages the user wrote are as written
    default_recipe = args.stages is None and args.epochs is None and {"dense", "frozen"} <= kinds
    min_steps = args.min_steps if args.min_steps is not None else recipe.MIN_STEPS if default_recipe else 0
    predictor_lr = args.predictor_lr
    if (default_recipe or min_steps) and stages:
        train_examples = max(1, len(data.read_split(task, "train", data_dir)) - (args.holdout or 0))
        stages = (recipe.task_sized(args.method, train_examples, args.batch_size, min_steps) if default_recipe
                  else recipe.sized_stages(stages, train_examples, args.batch_size, min_steps))
        if default_recipe and train_examples < recipe.SMALL_TASK and predictor_lr is None:  # on what it trains
            trained_on = min(train_examples, args.max_train_samples or train_examples)
            predictor_lr = recipe.small_task_predictor_lr(stages, trained_on, args.batch_size)
    return Settings(
        task=task.name, model=args.model, data_dir=str(data_dir), output_dir=str(output_dir), overwrite=args.overwrite,
        max_seq_length=args.max_seq_length or task.max_seq_length, batch_size=args.batch_size, stages=tuple(stages),
        min_steps=min_steps, method=args.method, lr=args.lr, epochs=args.epochs, warmup=args.warmup, weight_decay=args.weight_decay,
        seed=args.seed, skim_coef=skim_coef, target_speedup=target, steer_every=args.steer_every, tau=args.tau,
        mu0=args.mu0, predictor_lr=predictor_lr, predictor_grad=args.predictor_grad,
        keep_threshold=keep_threshold, freeze_predictors=args.freeze_predictors, keep_layers=keep_layers,
        checkpoint_layers=checkpoint_layers, teacher=args.teacher,
        distill_coef=(DISTILL_COEF if args.distill_coef is None else args.distill_coef) if args.teacher else None,
        distill_temp=(args.distill_temp or DISTILL_TEMP) if args.teacher else None, max_grad_norm=args.max_grad_norm,
        holdout=args.holdout, max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        no_skim=args.no_skim, eval_only=args.eval_only, checkpoint=args.checkpoint, save_every=args.save_every,
        device=args.device, timing_repeats=args.timing_repeats, recipe=args.recipe,
        group_by_length=args.group_by_length, precision=resolve_precision(args.precision, args.device))


def resolve_precision(precision, device):
    """--precision -> "fp32" or "bf16": auto is bf16 where the machine has bfloat16 matrix units."""
    if precision == "auto":
        return "bf16" if flops.native_bf16(device) else "fp32"
    return precision


def check_paths(args):
    for flag in ("model", "data_dir", "output_dir", "checkpoint", "teacher", "resume"):
        if getattr(args, flag) is not None and not getattr(args, flag).strip():
            raise UsageError(f"--{flag.replace('_', '-')} is empty: give a folder, or leave the flag out")


def check_flags(args, skim_coef, world):
    """The checks that need nothing but the flags."""
    check_paths(args)
    for flag, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
    positive = {"--batch-size": args.batch_size, "--tau": args.tau}
    for flag, value in {"--lr": args.lr, "--predictor-lr": args.predictor_lr, "--distill-temp": args.distill_temp,
                        "--epochs": args.epochs}.items():
        if value is not None:
            positive[flag] = value
    for flag, value in positive.items():
        if not value > 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.batch_size < world:
        raise UsageError(f"--batch-size {args.batch_size} is shared out among {world} processes: give at least {world}")
    if not 0 <= args.seed < 2 ** 32:
        raise UsageError(f"--seed must lie in [0, 2^32), got {args.seed}")
    if args.timing_repeats < 0:
        raise UsageError(f"--timing-repeats is a number of passes, at least 0 (0: no timing), got {args.timing_repeats}")
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
    if skim_coef is not None and args.target_speedup is not None:
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
        for flag, value in {"--skim-coef": skim_coef, "--predictor-lr": args.predictor_lr}.items():
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
    if args.min_steps is not None and args.min_steps < 0:
        raise UsageError(f"--min-steps N: N is a number of optimizer steps, at least 0 (0: as given), got {args.min_steps}")
    if args.eval_only and args.min_steps:
        raise UsageError("--min-steps sets how long a run trains; --eval-only trains nothing")
    if args.steer_every < 0:
        raise UsageError(f"--steer-every N: N is a number of steps, at least 0, got {args.steer_every}")


def check_stages(args, kinds, target, skim_coef):
    if target is not None and not {"skim", "frozen"} & kinds:
        raise UsageError("--target-speedup needs a skim or frozen stage; a dense model processes every token")
    if args.keep_threshold is not None and kinds and not {"skim", "frozen"} & kinds:
        raise UsageError("--keep-threshold sets where skim predictors keep tokens; these stages train a dense model")
    if args.steer_every and (target is None or "skim" not in kinds):
        raise UsageError("--steer-every steers a skim stage towards --target-speedup; this run has no such stage")
    if skim_coef is not None and "skim" not in kinds:
        raise UsageError("--skim-coef weighs the skim loss of a skim stage; this run has none")
    if "skim" in kinds and not recipe.trains_decisions(args.method):
        raise UsageError(f"--method {args.method} learns nothing about its decisions, so it has no skim stage: give "
                         "--stages with a frozen stage instead (it trains the encoder under them)")
    if "frozen" in kinds and not hasattr(methods.METHODS[args.method], "freeze"):
        raise UsageError(f"--method {args.method} has no decisions to freeze: give --stages without a frozen stage")


def default_output_dir(args, task, keep_threshold):
    """out/TASK for training; an evaluation writes a folder of its own inside its checkpoint's, named by what it
    evaluates, and never over the checkpoint's files."""
    if not args.eval_only:
        return Path("out") / task.name
    what = "every-token" if args.no_skim else "dense" if keep_threshold is None else f"threshold-{keep_threshold:g}"
    return Path(args.checkpoint) / f"eval-{what}"


RUN_FILES = ("metrics.json", "model.safetensors", "resume.pt")  # a folder holding one of these holds a run


def check_output_dir(directory, args):
    """The output folder is writable, is no folder the run reads (not even with --overwrite), is held by no other
    run still going, holds no other run (unless --overwrite), and has room for what the run writes. From here
    on the run holds it (recipe.hold; train.py's cli lets go)."""
    data_dir = args.data_dir or os.environ.get("GLUE_DIR")
    read = [("--checkpoint", args.checkpoint), ("--model", args.model), ("--teacher", args.teacher),
            ("--data-dir", data_dir and Path(data_dir) / data.get_task(args.task).dir_name)]  # where its files are
    if args.model is None and not args.eval_only:
        read.append(("embedded default checkpoint's", default_checkpoint_dir()))
    for flag, source in read:
        if source is not None and Path(source).resolve() == directory.resolve():
            raise UsageError(f"--output-dir {directory} is the {flag} folder this run reads; give another --output-dir")
    check_writable(directory)
    recipe.hold(directory)
    held = [name for name in RUN_FILES if (directory / name).exists()]
    if held and not args.overwrite:
        raise UsageError(f"--output-dir {directory} holds another run ({held[0]}); give another folder, --overwrite "
                         f"to replace it, or --resume {directory} to go on with an interrupted one")
    check_room(directory, weights_bytes(args.checkpoint if args.eval_only else args.model), args.eval_only)


REPORT_BYTES = 16 << 20  # metrics.json and the two pictures: a few MB at most


def weights_bytes(name_or_path):
    """The size of a checkpoint's model.safetensors (None: the embedded default's), 0 where it cannot be told."""
    folder = default_checkpoint_dir() if name_or_path is None else Path(name_or_path)
    path = folder / "model.safetensors"
    return path.stat().st_size if path.is_file() else 0


def check_room(directory, weights, eval_only):
    """Fail before training, not after: the disk must have room for what the run will write, sized from the
    model's weights W: the model (W), and a resumable state of it and its optimizer's two moments (3 W), written
    beside the last one until it replaces it (6 W at most); an evaluation writes its report alone. The run's
    files already there count as room, since they are replaced."""
    need = REPORT_BYTES + (0 if eval_only else 6 * weights)
    there = sum((directory / name).stat().st_size for name in recipe.RUN_OUTPUTS if (directory / name).is_file())
    free = shutil.disk_usage(directory).free + there
    if free < need:
        raise UsageError(f"--output-dir {directory}: {free / 1e6:,.0f} MB free, but this run writes up to "
                         f"{need / 1e6:,.0f} MB there (the model, and a resumable state of it and its optimizer, "
                         "written beside the last); free some space or give another folder")


def check_writable(directory):
    """Fail before training, not after: the output folder must be creatable and writable (checkpoint.py)."""
    if (why := why_not_writable(directory)) is not None:
        raise UsageError(f"--output-dir {directory} is not writable ({why})")


def check_checkpoints(args, task, stages, keep_layers):
    """The checks that read the checkpoints' config files (--checkpoint, --model, --teacher), before any model
    is built. -> (the layers of the checkpoint --keep-layers cuts, the evaluation's keep threshold)."""
    if args.eval_only:
        folder = resolve_checkpoint(args.checkpoint)
        raw = read_config(folder)
        config = BertConfig.from_dict(raw, source=str(folder / "config.json"))
        check_positions(args, task, config, args.checkpoint)
        if raw.get("finetuning_task") not in (None, task.name):
            raise UsageError(f"--checkpoint {args.checkpoint} was trained on {raw['finetuning_task']}, not {task.name}: "
                             f"evaluate it with --task {raw['finetuning_task']}")
        check_labels(f"--checkpoint {args.checkpoint}", config, task)
        saved = methods.method_of(raw)
        if saved is None and args.keep_threshold is not None:  # given, even at the default
            raise UsageError(f"--keep-threshold: {args.checkpoint} is a dense model, it has no skim predictors")
        predicts = saved is not None and not args.no_skim
        return None, (args.keep_threshold or skim.KEEP_THRESHOLD) if predicts else None
    name = args.model or "all-MiniLM-L6-v2"
    folder = resolve_checkpoint(args.model)
    raw = read_config(folder)
    config = BertConfig.from_dict(raw, source=str(folder / "config.json"))
    check_positions(args, task, config, name)
    first, kinds = stages[0][0], {kind for kind, _, _ in stages}
    has_predictors = methods.method_of(raw) is not None
    if first == "frozen" and not has_predictors:
        raise UsageError(f"--freeze-predictors: --model {name} has no trained skim predictors to freeze; give a "
                         "Transkimmer folder train.py saved")
    checkpoint_layers = None
    if keep_layers:
        if first != "dense" and has_predictors:
            raise UsageError(f"--keep-layers: --model {name} has trained skim predictors, one per layer; give a plain "
                             "BERT checkpoint")
        checkpoint_layers = config.num_hidden_layers
        if keep_layers[-1] >= checkpoint_layers:
            raise UsageError(f"--keep-layers: {name} has {checkpoint_layers} layers, numbered 0 to "
                             f"{checkpoint_layers - 1}")
    if args.teacher:
        check_teacher(args.teacher, task, config.vocab_size)
    skims = bool({"skim", "frozen"} & kinds)
    return checkpoint_layers, (args.keep_threshold or skim.KEEP_THRESHOLD) if skims else None


def check_positions(args, task, config, name):
    if (n := args.max_seq_length or task.max_seq_length) > (most := config.max_position_embeddings):
        raise UsageError(f"--max-seq-length {n}: {name} has {most} positions, so inputs can be at most that long")


def check_labels(what, config, task):
    if config.num_labels != task.num_labels:
        raise UsageError(f"{what}: {config.num_labels} output(s), but {task.name} has {task.num_labels}")


def check_teacher(teacher, task, vocab):
    """--teacher: a model fine-tuned on the task, with a classifier for its labels and the student's vocabulary,
    since both read the same token ids."""
    folder = resolve_checkpoint(teacher)
    raw = read_config(folder)
    config = BertConfig.from_dict(raw, source=str(folder / "config.json"))
    if "BertForSequenceClassification" not in raw.get("architectures", []):
        raise UsageError(f"--teacher {teacher}: not a fine-tuned classifier (its config.json names "
                         f"{raw.get('architectures')}); give a folder train.py saved")
    if raw.get("finetuning_task") not in (None, task.name):
        raise UsageError(f"--teacher {teacher} was trained on {raw['finetuning_task']}, not {task.name}: give a "
                         f"teacher fine-tuned on {task.name}")
    check_labels(f"--teacher {teacher}", config, task)
    if config.vocab_size != vocab:
        raise UsageError(f"--teacher {teacher}: vocabulary of {config.vocab_size} tokens, the student's "
                         f"has {vocab}; both must read the same token ids")


def check_reachable(settings, model, calibration):
    """--target-speedup against the data: a target beyond what the method can reach on the calibration sentences
    (recipe.reachable_speedup) is refused before training, rather than trained to the bound at chance accuracy.
    The method is the first model's if it is one (a saved method trained on), else --method's, asked from its
    class on the first model's config, so that nothing is built and the run's random draws are unchanged; a
    method without fastest_masks is not checked."""
    if settings.target_speedup and hasattr(methods.METHODS[settings.method], "fastest_masks"):
        method = type(model) if hasattr(model, "fastest_masks") else methods.METHODS[settings.method]
        bound = recipe.reachable_speedup(method, model.config, calibration)
        if settings.target_speedup > bound:
            raise UsageError(f"--target-speedup {settings.target_speedup:g}: at most {bound:.1f}x is reachable on "
                             f"these sentences ({method.FASTEST}); ask for less")

