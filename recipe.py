"""
The recipe machinery: what train.py's loop runs around its training step. A run is a list of stages,
each the same loop (train.py's train_stage) on a model this file prepares:

    dense    fine-tune the BERT alone (the paper fine-tunes first too, then adds the predictors)
    skim     the method (methods/; Transkimmer by default) put on the dense model and trained with
             its loss, task loss + lambda * skim loss (Eq. 7)
    frozen   the method's decisions fixed at a keep threshold, the encoder trained on under them

What is the paper's: one skim stage at a fixed lambda (train.py --skim-coef; Table 2's lambda per
task). What is ours (docs/method.md, results/log.md say why): the dense and frozen stages around
it; --target-speedup, which steers lambda during the skim stage towards a FLOPs speedup
(SpeedupController, wired in by Steering below, on the training batches or, with --steer-every,
on whole training sentences) and then calibrates the keep threshold on whole training sentences
(calibrate_threshold) for the frozen stage and again at the end; and the resumable state, saved
every --save-every minutes and on Ctrl-C or SIGTERM (StopRequest), from which --resume continues.

Also here: what a run shares across its stages (Run), the evaluation of each stage and the run's report
(metrics.json and two pictures), and the output folder a run holds while it runs (hold).
"""

import html
import json
import math
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import data
import flops
import methods
import skim
from checkpoint import WriteFailed, atomic_write, read_config, resolve_checkpoint
from model import BertForSequenceClassification, keep_layers

STAGE_KINDS = ("dense", "skim", "frozen")
# the default recipe, KIND:EPOCHS:LR (results/log.md, "The dense reference, and the recipe in one command"):
# 2e-4, the dense learning rate picked on held-out sentences; the frozen stage at 5e-5, picked on them too
DEFAULT_STAGES = "dense:1:2e-4,skim:0.5:2e-4,frozen:0.5:5e-5"
# the default recipe on a small task, one of fewer than SMALL_TASK training examples (CoLA, MRPC, STS-B, RTE and
# WNLI; SST-2 has 67,349): the same proportions, three times as long, every stage at 5e-5 (results/log.md, "GLUE:
# a recipe sized for a small task"): 3 dense epochs at 5e-5 are HF run_glue's, and learnt CoLA and MRPC where the
# large-task recipe's dense stage (2e-4) did not, on held-out slices. With the predictors at SST-2's rate scaled
# to the stage (small_task_predictor_lr) it is the best of three candidates on held-out slices of CoLA, MRPC and
# STS-B, none of which passed its check (ending within 2 points of the dense stage at 2x); the GLUE table runs it
SMALL_TASK = 20_000
PREDICTOR_LR = 2e-4  # SST-2's skim stage trains its predictors at 2e-4 (small_task_predictor_lr scales it)
SMALL_TASK_STAGES = "dense:3:5e-5,skim:1.5:5e-5,frozen:1.5:5e-5"
CALIBRATION_EXAMPLES = 512  # train inputs (no labels) on which a --target-speedup run calibrates its keep threshold
# then the stages, all by one factor, are lengthened to at least MIN_STEPS optimizer steps in all (train.py
# --min-steps; results/log.md, "GLUE: the recipe's length on a small task"): RTE's and WNLI's
MIN_STEPS = 600


def parse_stages(spec):
    """'dense:1:2e-4,skim:0.5,frozen:0.5' -> [('dense', 1.0, 2e-4), ('skim', 0.5, None), ('frozen', 0.5, None)]
    (None: no learning rate of its own), checked (ValueError): dense stages come first (a later one would drop
    the predictors), and no skim stage follows a frozen one."""
    stages = []
    for part in spec.split(","):
        kind, epochs, lr, *extra = part.strip().split(":") + [None, None]
        try:
            epochs, lr = float(epochs), None if lr is None else float(lr)
        except (TypeError, ValueError):
            epochs = math.nan
        if (kind not in STAGE_KINDS or not 0 < epochs < math.inf or (lr is not None and not 0 < lr < math.inf)
                or any(extra)):
            raise ValueError(f"{part.strip()!r} is not KIND:EPOCHS or KIND:EPOCHS:LR with KIND one of "
                             f"{', '.join(STAGE_KINDS)}, EPOCHS > 0 and LR > 0, both finite")
        stages.append((kind, epochs, lr))
    kinds = [kind for kind, _, _ in stages]
    for before, after in zip(kinds, kinds[1:]):
        if after == "dense" and before != "dense" or (before, after) == ("frozen", "skim"):
            raise ValueError(f"a {after} stage cannot follow a {before} stage (the order is dense, skim, frozen)")
    return stages


def resolve_stages(args, skim_coef, default_lr):
    """The stages this run trains, as [(kind, epochs, lr)]: --stages; or one stage, for --no-skim (dense),
    --freeze-predictors (frozen) and --skim-coef (the paper's recipe: skim); or the default recipe. A stage
    that names no learning rate trains at --lr (default: default_lr). ValueError for a combination that cannot be."""
    if args.eval_only:
        return []
    if args.stages is not None:
        if args.epochs is not None:
            raise ValueError("--epochs sets the length of a one-stage run; with --stages give each stage's as KIND:EPOCHS")
        if args.no_skim:
            raise ValueError("--no-skim is one dense stage; with --stages write it as dense:EPOCHS")
        try:
            stages = parse_stages(args.stages)
        except ValueError as e:
            raise ValueError(f"--stages: {e}") from None
    elif args.no_skim or args.freeze_predictors is not None or skim_coef is not None:
        one_stage = "dense" if args.no_skim else "frozen" if args.freeze_predictors is not None else "skim"
        stages = [(one_stage, args.epochs or 1.0, None)]
    else:
        if args.epochs is not None:
            raise ValueError(f"--epochs: the default recipe has stages ({DEFAULT_STAGES}); give their lengths "
                             "with --stages, or --skim-coef LAMBDA for the paper's one-stage recipe")
        if args.lr is not None:
            raise ValueError(f"--lr: the default recipe's stages set their own learning rates ({DEFAULT_STAGES}); "
                             "give --stages to train at others")
        stages = default_stages(DEFAULT_STAGES, args.method)  # flags.py sizes them for the task (task_sized)
    default = default_lr if args.lr is None else args.lr
    return [(kind, epochs, default if lr is None else lr) for kind, epochs, lr in stages]


def default_stages(spec, method):
    """A default recipe's stages for the method: a method that learns nothing about its decisions has no skim
    stage to train, so it trains under them (a frozen stage) instead."""
    stages = parse_stages(spec)
    if not trains_decisions(method):
        stages = [("frozen" if kind == "skim" else kind, epochs, lr) for kind, epochs, lr in stages]
    return stages


def task_sized(method, train_examples, batch_size, min_steps):
    """The default recipe for a task of `train_examples` training examples: DEFAULT_STAGES, or SMALL_TASK_STAGES
    below SMALL_TASK examples, then lengthened to `min_steps` optimizer steps (sized_stages)."""
    spec = SMALL_TASK_STAGES if train_examples < SMALL_TASK else DEFAULT_STAGES
    return sized_stages(default_stages(spec, method), train_examples, batch_size, min_steps)


def small_task_predictor_lr(stages, train_examples, batch_size):
    """The predictors' learning rate in a small task's default recipe (results/log.md, "GLUE: a recipe sized
    for a small task", the second and third candidates): SST-2's, PREDICTOR_LR, scaled up by how much shorter
    the skim stage is than SST-2's (SpeedupController.KI_STEPS), so that the predictors can move as far in it
    (Adam moves a weight by about its learning rate a step), as the controller's integral gain is scaled. None
    without a skim stage (a method that learns no decisions)."""
    epochs = sum(e for kind, e, _ in stages if kind == "skim")
    if not epochs:
        return None
    steps = max(1, round(math.ceil(train_examples / batch_size) * epochs))        # as train.py counts a stage
    return PREDICTOR_LR * max(1.0, SpeedupController.KI_STEPS / steps)


def trains_decisions(method):
    """Does the method (a name in methods.METHODS) learn its decisions in a skim stage? (TopK does not.)"""
    return getattr(methods.METHODS[method], "trains_decisions", True)


def sized_stages(stages, train_examples, batch_size, min_steps):
    """The stages lengthened, every one by the same factor, so that a run over `train_examples` examples in
    batches of `batch_size` takes at least `min_steps` optimizer steps; longer runs as they are. The default
    recipe is 2 epochs: 4,210 steps on SST-2's 67,349 examples, but 156 on RTE's 2,490, too few for the
    controller to steer (it moves lambda a little each step) or the encoder to fit."""
    steps_per_epoch = math.ceil(train_examples / batch_size)
    epochs = sum(e for _, e, _ in stages)
    if steps_per_epoch * epochs >= min_steps:
        return tuple(stages)
    factor = min_steps / (steps_per_epoch * epochs)
    return tuple((kind, round(e * factor, 4), lr) for kind, e, lr in stages)


def parse_layers(spec):
    """--keep-layers: 'K' -> the first K layers (0, ..., K-1); 'I,J,...' -> those layers, in increasing order
    (ValueError if neither)."""
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    layers = list(range(values[0])) if len(values) == 1 else values
    if not layers or min(layers) < 0 or layers != sorted(set(layers)):
        raise ValueError(f"--keep-layers {spec}: give K (the first K layers, K >= 1) or increasing layer indices "
                         "I,J,... (from 0)")
    return tuple(layers)

# -----------------------------------------------------------------------------
# a run, and the model of each stage

@dataclass
class Run:
    """What the stages of one run share, gathered once by train.py's main(): its Settings (flags.py), its task,
    the dev examples and their encodings, the held-out (--holdout) encodings, the training encodings and the
    calibration batches of a --target-speedup run (when it trains), the teacher (--teacher), the records of the
    stages done, and this process's rank among torchrun's `world` (0 of 1 without torchrun)."""
    settings: object
    task: data.Task
    dev_examples: list
    dev_set: list
    held_set: list
    train_set: list = ()
    calibration: list | None = None
    teacher: torch.nn.Module | None = None
    records: list = field(default_factory=list)
    rank: int = 0
    world: int = 1


def first_model(settings, task):
    """The model the first stage trains, from --model: the dense model (cut to --keep-layers) for a dense
    stage, else the method on it (new predictors, Eq. 9, on a plain checkpoint; its own on a saved one).
    With --eval-only, the saved model in --checkpoint."""
    if settings.eval_only:
        model = methods.load_saved(settings.checkpoint, every_token=settings.no_skim)
        if settings.keep_threshold is not None:
            model.keep_threshold = settings.keep_threshold
        return model
    first = settings.stages[0][0]
    saved = methods.method_of(read_config(resolve_checkpoint(settings.model)))
    if first != "dense" and saved is not None:  # a saved method trains on (with this run's --tau)
        model = saved.from_pretrained(settings.model, num_labels=task.num_labels, tau=settings.tau, mu0=settings.mu0)
        model.bert.config.finetuning_task = task.name  # saved with the model: an evaluation on another task is refused
        return model
    bert = BertForSequenceClassification.from_pretrained(settings.model, num_labels=task.num_labels)
    bert.config.finetuning_task = task.name
    if settings.keep_layers:
        keep_layers(bert, settings.keep_layers)
    return methods.Dense(bert) if first == "dense" else methods.METHODS[settings.method].wrap(bert, settings)


def enter_stage(model, kind, settings, calibration, record, calibrated=None):
    """The model a stage trains. A skim stage (or the first frozen one of a method that learns nothing about its
    decisions) puts the method (Transkimmer: new predictors, Eq. 9) on a dense model. A
    frozen stage fixes the decisions (model.freeze) at --freeze-predictors T, or at the threshold calibrated
    to --target-speedup on `calibration` (None when resuming: the saved state holds the folded threshold;
    `calibrated`: already calibrated on it, for this model), or at 0.5."""
    if kind != "dense" and isinstance(model, methods.Dense):
        model = methods.METHODS[settings.method].wrap(model.bert, settings).to(settings.device)
    if hasattr(model, "predictor_grad"):
        model.predictor_grad = settings.predictor_grad
    if kind == "frozen":
        threshold = settings.freeze_predictors or skim.KEEP_THRESHOLD
        if settings.target_speedup and calibration is not None:
            threshold = calibrated if calibrated is not None else \
                calibrate_threshold(model, calibration, settings.target_speedup)
        model.freeze(threshold)
        record.setdefault("keep_threshold", threshold)
    return model


def end_stage(model, run, index, record):
    """After every stage of the run but the last: its evaluation on dev (so a run's dense stage is also the dense model
    to compare its skimming model with, sentence by sentence), and on the --holdout examples if any; after a
    skim stage of a --target-speedup run, also at the threshold calibrated to the target ("dev_at_target"),
    where the run would leave it if it stopped there. -> that threshold (None if not calibrated), for the
    frozen stage."""
    settings, task = run.settings, run.task
    if index == len(settings.stages) - 1:
        return None
    record["dev"] = stage_record(model, run.dev_set, task, settings)
    if run.held_set:
        record["holdout"] = stage_record(model, run.held_set, task, settings)
    if record["stage"] != "skim" or not settings.target_speedup:
        return None
    calibrated = calibrate_threshold(model, run.calibration, settings.target_speedup)
    model.keep_threshold = calibrated
    record["dev_at_target"] = stage_record(model, run.dev_set, task, settings) | {"keep_threshold": calibrated}
    model.keep_threshold = skim.KEEP_THRESHOLD
    return calibrated


def finish(model, settings, records, calibration):
    """A --target-speedup run ends by calibrating the keep threshold once more (the frozen decisions drift a
    little as the encoder trains) and freezing the decisions there (model.freeze folds it into the model);
    the evaluation then decides at settings.keep_threshold."""
    if settings.target_speedup and hasattr(model, "freeze"):
        threshold = calibrate_threshold(model, calibration, settings.target_speedup)
        model.freeze(threshold)
        records[-1]["final_keep_threshold"] = threshold
        records[-1]["calibrated_speedup"] = reached = speedup_at(model, calibration, skim.KEEP_THRESHOLD)
        if reached < 0.97 * settings.target_speedup:  # no threshold gets there: said, not left to the numbers
            print(f"warning: no keep threshold reaches --target-speedup {settings.target_speedup:g} on the "
                  f"calibration sentences; the model ends at {reached:.2f}x on them", file=sys.stderr)
    if settings.keep_threshold is not None:
        model.keep_threshold = settings.keep_threshold
    return model.eval()


def calibration_batches(examples, encoded, settings, context=None):
    """A fixed sample of training inputs (their labels are not used) on which a --target-speedup run sets
    its keep threshold: whole sentences (data.whole_sentences), because a model is used on sentences, and
    the same threshold skims a short phrase less than a sentence (SST-2 trains on phrases, 13 tokens long
    on average, and is scored on sentences of 25; calibrated to 2x on its phrases, one model ran at 2.25x
    on dev). Examples and encoded: the same rows; context: the texts that decide what is whole (default:
    the examples; for held-out examples, the whole training file)."""
    whole = data.whole_sentences(examples, context)
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(whole, size=min(CALIBRATION_EXAMPLES, len(whole)), replace=False))
    return [data.to_device(b, settings.device)
            for b in data.batches([encoded[i] for i in picked], settings.batch_size)]

def calibration_sample(train_examples, train_set, held_examples, held_set, settings):
    """The calibration batches of a --target-speedup run (train.py's, and what results/glue.py reports): from its
    held-out sentences where it held some out (--holdout), judged whole against every training row, else from its
    training sentences."""
    if held_examples:
        return calibration_batches(held_examples, held_set, settings, train_examples + held_examples)
    return calibration_batches(train_examples, train_set, settings)

# -----------------------------------------------------------------------------
# asking for a speedup instead of a lambda (not in the paper): the controller, and the threshold calibrated

class SpeedupController:
    """Steers lambda, the skim loss's weight (Eq. 7), during training so that the model ends at a FLOPs
    speedup S, instead of searching lambda by hand for every task and setting.

    The constraint is "FLOPs fraction = 1/S", where the fraction is skim FLOPs / dense FLOPs of the batch,
    counted from the hard keep masks by the method's flops_counter (the count the evaluation reports). lambda is
    its Lagrange multiplier, updated by dual ascent with a proportional term added (a PI controller on the
    error e = fraction - target):
        integral <- integral + ki * e         dual ascent: lambda grows while the model is too slow, and
        lambda    = integral + kp * e         the proportional term reacts at once, which damps the overshoot
                                              of pure dual ascent (the model answers lambda many steps late)
    lambda may turn negative, a reward for keeping tokens: once the predictors have learned to skim, the
    momentum of training can carry them past the target, and on an easy task the task loss does not pull
    them back. The target itself moves from 1 (dense) to 1/S over the first
    `ramp` of the steps, so the predictors start skimming gradually, as the target sparsity of
    constrained structured pruning does (CoFi, Xia et al. 2022), then holds.
    Why not a fixed lambda: the speedup a lambda buys changes with the task, the init and the estimator's
    settings (every such change needed a new search here), while a speedup is what a user wants to ask for.

    The integral gain was set on SST-2's skim stage of KI_STEPS steps (ki = KI per step). A shorter stage gets
    it scaled up by KI_STEPS / total_steps, so that lambda can grow as far over the stage as it does there
    (a 150-step stage of STS-B ended at lambda 1.08, not skimming: results/log.md); a longer one keeps KI.

    What is steered can be other inputs than the training batches: `rescale(other, batches)` gives the
    ratio of the FLOPs fraction measured on those inputs (train.py: whole training sentences, at the
    evaluation's threshold) to the batches' over the same steps, and from then on the controller steers
    batch fraction * ratio, its estimate of theirs. SST-2 trains on phrases and is used on sentences, and
    a model skims a long sentence more than a short phrase: steered on its batches alone, it ends past
    the target on sentences."""

    KI, KI_STEPS = 0.02, 1052  # the integral gain per step, and the length of the stage it was set on

    def __init__(self, target_speedup, total_steps, ramp=0.5, kp=1.0, ki=None):
        if not target_speedup >= 1:
            raise ValueError(f"a target speedup is at least 1, got {target_speedup}")
        if ki is None:
            ki = self.KI * max(1.0, self.KI_STEPS / total_steps)
        self.target_speedup, self.total_steps, self.ramp, self.kp, self.ki = target_speedup, total_steps, ramp, kp, ki
        self.step, self.integral, self.coef, self.scale = 0, 0.0, 0.0, 1.0

    def target(self):
        """The FLOPs fraction aimed at now: 1 -> 1/S linearly over the first `ramp` of the steps."""
        done = min(1.0, self.step / max(1, self.ramp * self.total_steps))
        return 1 - done * (1 - 1 / self.target_speedup)

    def update(self, fraction):
        """After a training step whose batch had this FLOPs fraction: the lambda for the next step."""
        error = fraction * self.scale - self.target()
        self.integral += self.ki * error
        self.coef = self.integral + self.kp * error
        self.step += 1
        return self.coef

    def rescale(self, other_fraction, batch_fraction):
        """Steer the inputs whose FLOPs fraction is `other_fraction` where the training batches' is
        `batch_fraction` (the same model, the same moment): see the class docstring."""
        self.scale = float(other_fraction / batch_fraction)  # a plain float: resumable states load weights only

    def state_dict(self):
        return {"step": self.step, "integral": self.integral, "coef": self.coef, "scale": self.scale}

    def load_state_dict(self, state):
        self.step, self.integral, self.coef = state["step"], state["integral"], state["coef"]
        self.scale = state.get("scale", 1.0)  # a state saved before rescale existed steered its batches


@torch.no_grad()
def speedup_at(model, batches, keep_threshold):
    """The FLOPs speedup (no padding, predictors counted) of `model`'s decisions at `keep_threshold`
    over `batches` (dicts of input_ids, attention_mask, token_type_ids), with real pruning (`infer`:
    the masks of forward(), sooner). The model is left as it was found: its threshold, and its mode (a
    training run measures its sentences between steps)."""
    training = model.training
    model.eval()
    saved, model.keep_threshold = model.keep_threshold, keep_threshold
    counter = model.flops_counter()
    for b in batches:
        counter.add(model.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"]).masks, b["attention_mask"])
    model.keep_threshold = saved
    model.train(training)
    return counter.summary()["none"]["speedup"]


def calibrate_threshold(model, batches, target_speedup, iterations=16):
    """The keep threshold at which `model` reaches `target_speedup` (FLOPs, no padding) on `batches`: a
    bisection on the threshold's log-odds z in [-16, 16] (the speedup grows with z). Returns the
    smallest threshold found whose speedup is at least the target (or the largest tried, if none is)."""
    lo, hi = -16.0, 16.0
    for _ in range(iterations):
        z = (lo + hi) / 2
        if speedup_at(model, batches, 1 / (1 + math.exp(-z))) >= target_speedup:
            hi = z
        else:
            lo = z
    return 1 / (1 + math.exp(-hi))


def reachable_speedup(method, config, batches):
    """The largest FLOPs speedup a method (a class behind the method interface, methods/__init__.py) can reach
    on `batches` with a BERT of this config: its own counter on its fastest_masks, the most it can skip (its
    FASTEST says what that is). No model is built: both are the class's, from the config."""
    counter = method.counter(config)
    for b in batches:
        counter.add(method.fastest_masks(config, b["attention_mask"]), b["attention_mask"])
    return counter.summary()["none"]["speedup"]


# -----------------------------------------------------------------------------
# lambda, steered (not in the paper)

class Steering:
    """The lambda of one stage (Eq. 7): --skim-coef in a skim stage, or steered there by SpeedupController
    towards --target-speedup, or 0 (dense and frozen stages: no skim loss to weigh). With --steer-every N the
    controller is rescaled every N steps to the FLOPs fraction of the calibration sentences over that of the
    last N batches. Its trace (each step's FLOPs fraction and lambda) goes into the stage's record."""

    def __init__(self, settings, kind, total_steps, calibration, record):
        steered = kind == "skim" and settings.target_speedup is not None
        self.controller = SpeedupController(settings.target_speedup, total_steps) if steered else None
        self.fixed = settings.skim_coef if kind == "skim" and settings.skim_coef is not None else 0.0
        self.every, self.total_steps, self.calibration, self.record = settings.steer_every, total_steps, calibration, record

    @property
    def coef(self):
        return self.controller.coef if self.controller else self.fixed

    def after_step(self, model, fraction, step):
        """After step `step`, whose (global) batch had this FLOPs fraction: steer lambda. -> what to show."""
        controller = self.controller
        trace = self.record.setdefault("trace", {"flops_fraction": [], "skim_coef": []})
        trace["flops_fraction"].append(round(fraction, 4))
        trace["skim_coef"].append(round(self.coef, 4))
        shown = {"speedup": f"{1 / fraction:.2f}x", "target": f"{1 / controller.target():.2f}x",
                 "lambda": f"{controller.update(fraction):.2f}"}
        if self.every and step % self.every == 0 and step < self.total_steps:
            sentences = 1 / speedup_at(model, self.calibration, model.keep_threshold)
            controller.rescale(sentences, statistics.fmean(trace["flops_fraction"][-self.every:]))
            trace.setdefault("sentence_fraction", []).append(round(sentences, 4))
        if self.every:
            shown["sentences"] = f"{1 / (fraction * controller.scale):.2f}x"
        return shown

    def state_dict(self):
        return self.controller.state_dict() if self.controller else None

    def load_state_dict(self, state):
        if self.controller:
            self.controller.load_state_dict(state)

# -----------------------------------------------------------------------------
# evaluation: what a stage's record keeps and what the run reports, for any method behind the interface: the
# task metric, each example's prediction (for paired comparisons of runs), the FLOPs speedup (flops.py; no
# padding and the paper's sequence padding), the fraction of tokens each layer kept, and the measured speedup
# (flops.measure_speedup); and the run's two pictures, in the style of the paper's Fig. 4 (tokens kept per
# layer) and Table 5 (each token coloured by the layer at which it was skimmed).

def predictions(logits, task):
    return logits.squeeze(-1).numpy() if task.labels is None else logits.argmax(-1).numpy()


@torch.no_grad()
def evaluate(model, dataset, task, settings, timing_repeats=None):
    """Task metrics, predictions, FLOPs and kept fraction per layer, and (timing_repeats > 0, a method with
    work to remove) the measured speedup. -> a dict for metrics.json."""
    model.eval()
    counter = model.flops_counter(seq_len=settings.max_seq_length)
    batches = [data.to_device(b, settings.device) for b in data.batches(dataset, settings.batch_size)]
    preds, labels = [], []
    for batch in batches:
        out = model(*data.inputs(batch))
        counter.add(out.masks, batch["attention_mask"])
        preds.append(predictions(out.logits.cpu(), task))
        labels.append(batch["labels"].cpu().numpy())
    preds = np.concatenate(preds)
    result = {"task": task.name, "eval_samples": len(dataset),
              **data.compute_metrics(task, preds, np.concatenate(labels)), "flops": counter.summary(),
              "predictions": preds.tolist()}  # per example, in file order: for paired comparisons of runs
    if timing_repeats and not isinstance(model, methods.Dense):
        result.update(flops.measure_speedup(model, batches, timing_repeats, settings.device))
    return result


def stage_record(model, dataset, task, settings):
    """What a stage's record keeps of an evaluation (no timing)."""
    return brief(evaluate(model, dataset, task, settings), task)


def brief(result, task):
    """An evaluation's metrics, predictions, FLOPs speedup (no padding) and kept fraction per layer."""
    return {k: result[k] for k in (*task.metrics, "predictions")} | {
        "flops_speedup": result["flops"]["none"]["speedup"], "kept_fraction": result["flops"]["kept_fraction"]}


def report(model, run):
    """The run's last word: the evaluation on dev (timed), and on the held-out examples if any, written to
    metrics.json with the stages' records and the settings; the two pictures; one line on stderr.
    -> the metrics."""
    settings, task, dev_set, held_set, records = run.settings, run.task, run.dev_set, run.held_set, run.records
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(model, dev_set, task, settings, settings.timing_repeats)
    if hasattr(model, "scored"):  # a method scored more ways than one on the same weights (methods/released.py)
        scored = model.scored(lambda m: evaluate(m, dev_set, task, settings), settings.seed)
        metrics["scored"] = {name: [brief(r, task) for r in v] if isinstance(v, list) else brief(v, task)
                             for name, v in scored.items()}
    f = metrics["flops"]
    if settings.checkpoint_layers:  # --keep-layers: the speedup over the whole checkpoint
        whole = (f["none"]["dense"] - f["head"]) * settings.checkpoint_layers / len(settings.keep_layers) + f["head"]
        metrics["flops_speedup_over_checkpoint"] = whole / f["none"]["dense"]
    if held_set:
        held = evaluate(model, held_set, task, settings)
        metrics["holdout"] = {k: v for k, v in held.items() if k != "predictions"}
    if records:
        metrics.update(stages=records, train_steps=sum(r["train_steps"] for r in records),
                       train_seconds=round(sum(r["train_seconds"] for r in records), 1))
    metrics.update(split=task.dev_splits[0], args=asdict(settings))
    atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2) + "\n"))
    plot_retention(f["kept_fraction"], out / "retention.png", f"{task.name} dev: tokens processed per layer",
                   type(model).__name__)
    skim_picture(model, model.bert.tokenizer, run.dev_examples, settings, out / "skimmed_tokens.html")

    main = task.main_metric
    speedup = (f"{metrics['flops_speedup_over_checkpoint']:.2f}x over the {settings.checkpoint_layers}-layer checkpoint"
               if settings.checkpoint_layers else
               f"{f['none']['speedup']:.2f}x (no padding), {f['sequence']['speedup']:.2f}x (sequence {settings.max_seq_length})")
    print(f"{task.name} {metrics['split']}: {main} {metrics[main]:.4f} | FLOPs speedup {speedup}"
          + (f" | measured {metrics['measured_speedup']:.2f}x ({metrics['timing']})" if "measured_speedup" in metrics else "")
          + (f" | held-out {main} {metrics['holdout'][main]:.4f}" if held_set else "")
          + (f" | {model.scored_line(metrics['scored'], main)}" if "scored" in metrics else "")
          + f" | kept per layer {' '.join(f'{k:.2f}' for k in f['kept_fraction'])} | -> {out}")
    return metrics

# -----------------------------------------------------------------------------
# pictures

def plot_retention(kept_per_layer, path, title, method="Transkimmer"):
    """Paper Fig. 4 style: the fraction of real tokens each layer processes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(len(kept_per_layer))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.bar(layers, kept_per_layer, color="tab:blue", label=method)
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
    lightness = 95 - 60 * layer / L                                                # darker = processed longer
    title = f"skimmed before layer {layer}" if layer < L else "processed by every layer"
    return (f'<span title="{title}" style="background:hsl(210,70%,{lightness:.0f}%);'
            f'color:{"#fff" if lightness < 60 else "#000"}">{html.escape(text)}</span>')


@torch.no_grad()
def skim_picture(model, tokenizer, examples, settings, path, count=8):
    """Paper Table 5 style, as HTML: each token coloured by the layer at which it was skimmed."""
    L = model.config.num_hidden_layers
    rows = []
    for item in data.encode(tokenizer, examples[:count], settings.max_seq_length):
        batch = data.to_device(next(data.batches([item], 1)), settings.device)
        layers = skim_layers([m[0].cpu() for m in model(*data.inputs(batch)).masks], len(item["input_ids"]))
        spans = [layer_span(tokenizer.id_to_token(t), layer, L) for t, layer in zip(item["input_ids"], layers)]
        rows.append("<p>" + " ".join(spans) + "</p>")
    legend = " ".join(layer_span(f"skimmed before layer {i}" if i < L else "kept to the end", i, L) for i in range(L + 1))
    page = (f"<!doctype html><meta charset='utf-8'><title>What {type(model).__name__} skims</title>"
            f"<style>body{{font-family:sans-serif;max-width:60em}} span{{padding:1px 3px;border-radius:3px;line-height:2}}</style>"
            f"<h3>{settings.task}: each token coloured by the layer at which it was skimmed (darker = processed longer)</h3>"
            f"<p>{legend}</p>{''.join(rows)}")
    atomic_write(path, lambda p: Path(p).write_text(page, encoding="utf-8"))

# -----------------------------------------------------------------------------
# stopping and resuming

class Interrupted(Exception):
    """Ctrl-C or SIGTERM during training: the state was saved; the message says how to resume. One line."""


class ResumeError(Exception):
    """--resume DIR cannot go on: no state there, or one that cannot be read. One line."""


class InterruptedTwice(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM while a StopRequest waits for the step to end: the run stops at once."""


class FolderHeld(Exception):
    """The output folder is held by another run that is still going (hold). One line."""


class StopRequest:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM (what `timeout`, schedulers and container stops
    send) only asks training to stop after the step in progress, so the saved state is that of a whole step;
    one during an evaluation or calibration between stages stops the run after the next stage's first step.
    A second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.previous = {s: signal.signal(s, self.ask) for s in self.SIGNALS}
        return self

    def ask(self, signum, frame):
        if self.requested:
            raise InterruptedTwice
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def resume_path(output_dir):
    return Path(output_dir) / "resume.pt"


def save_state(state):
    """Save into --output-dir's resume.pt everything a run needs to go on exactly where it is (train.py's
    train_stage gathers it): its settings, the stage and step, the model, the optimizer, the lr schedule, the
    speedup controller, torch's random state and the stage records. A state that cannot be written (a full disk)
    stops the run with one line (WriteFailed); the one saved before stays."""
    path, stage, step = resume_path(state["settings"]["output_dir"]), state["stage"], state["step"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: torch.save(state, p))
    except OSError as e:  # WriteFailed is one
        why = getattr(e, "why", None) or e.strerror
        before = (f"the state saved before is still there: free some space, then python train.py --resume "
                  f"{path.parent}" if path.is_file() else "no state was saved before it")
        raise WriteFailed(path, f"{why}; nothing was saved at step {step} of stage {stage + 1}, the run stops "
                                f"({before})") from None


def save_trained(model, tokenizer, settings, records):
    """The end of training: the model into --output-dir (checkpoint.save: complete or absent), then resume.pt
    replaced by a small state that says the training is done, from which --resume finishes the evaluation (a
    Ctrl-C or a full disk during it loses nothing but the evaluation's time)."""
    out = Path(settings.output_dir)
    try:
        model.save_pretrained(out, tokenizer)
    except WriteFailed as e:
        before = (f"the state saved during training is still there: free some space, then python train.py --resume "
                  f"{out}" if resume_path(out).is_file() else "free some space and train again")
        raise WriteFailed(out / "model.safetensors", f"{e.why}; nothing of the trained model was saved ({before})") from None
    done = {"settings": asdict(settings), "stage": len(settings.stages), "step": 0, "records": records,
            "trained": True}
    try:
        atomic_write(resume_path(out), lambda p: torch.save(done, p))
    except WriteFailed as e:
        resume_path(out).unlink(missing_ok=True)  # a state from the middle of training would only train again
        raise WriteFailed(resume_path(out), f"{e.why}; the model is saved in {out}: evaluate it with python train.py "
                                            f"--task {settings.task} --eval-only --checkpoint {out}") from None


def trained_model(settings):
    """The model save_trained saved, as the run left it for its evaluation (at --keep-threshold, if given)."""
    model = methods.load_saved(settings.output_dir)
    if settings.keep_threshold is not None:
        model.keep_threshold = settings.keep_threshold
    return model.to(settings.device).eval()


# -----------------------------------------------------------------------------
# an output folder, held by one run at a time

LOCK = ".lock"  # in a run's output folder while it runs: the process id of the run
_held = {}      # folder this process holds -> the first folder it made to hold it (None: it was there)


def hold(directory):
    """Hold the output folder for this run: DIR/.lock, made only where there is none (O_EXCL), holds this process's
    id. A folder whose lock names a process still running is refused (FolderHeld); a lock left by a process
    that has ended (killed, say) is taken over, with a line saying so. release() lets it go."""
    directory = Path(directory)
    made = next((p for p in [directory, *directory.parents][::-1] if not p.exists()), None)  # the first one missing
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            pid = lock_owner(lock)
            if pid is not None and pid != os.getpid() and running(pid):
                raise FolderHeld(f"--output-dir {directory} is held by another run, still going (process {pid}, "
                                 f"{lock}); wait for it to end, or give another folder") from None
            if pid != os.getpid():  # this process's own: a run of it that ended without letting go (a test's)
                print(f"note: {lock} was left by process {pid}, which is no longer running; this run takes the "
                      "folder over", file=sys.stderr)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        _held[directory] = made
        return


def lock_owner(lock):
    """The process id a lock file holds, or None (unreadable: it is taken as left behind)."""
    for _ in range(2):  # a lock just made may not hold its id yet
        try:
            return int(lock.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    return None


def running(pid):
    """Is there a process with this id? (one of another user's counts)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release():
    """Let go of every folder this process holds: its lock removed, and a folder made only to hold it removed
    again if the run left nothing in it (so a run that fails first leaves no empty folder)."""
    for directory, made in list(_held.items()):
        lock = directory / LOCK
        if lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)
        if made is not None:
            for folder in [directory, *directory.parents]:
                try:
                    folder.rmdir()  # only if empty
                except OSError:
                    break
                if folder == made:
                    break
        del _held[directory]


RUN_OUTPUTS = ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "retention.png",
               "skimmed_tokens.html", "resume.pt")  # what a run writes into its --output-dir


def clear_run(directory):
    """--overwrite: remove the files of the run that was in `directory`, so that none of them outlives it beside
    the new run's (a crash would otherwise leave a folder of two runs)."""
    for name in RUN_OUTPUTS:
        (Path(directory) / name).unlink(missing_ok=True)


def load_state(directory):
    path = resume_path(directory)
    if not path.is_file():
        raise ResumeError(f"--resume {directory}: no {path.name} there; it is written while a run trains "
                          "(every --save-every minutes and on Ctrl-C or SIGTERM) and removed when the run ends")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line
        raise ResumeError(f"--resume {directory}: {path.name} cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict) or "settings" not in state:
        raise ResumeError(f"--resume {directory}: {path.name} was not written by this version of train.py")
    return state
