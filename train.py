"""
Fine-tune and evaluate Transkimmer (Guan et al., ACL 2022) on a GLUE task: the command line and the loop.

    python train.py --task sst2                       # the recipe: dense, then skim at 2x FLOPs, then frozen
    python train.py --task sst2 --target-speedup 3    # the same recipe, at another speedup
    python train.py --task sst2 --skim-coef           # the paper's recipe: one stage, lambda of its Table 2
    python train.py --task sst2 --no-skim --output-dir out/dense       # a dense model (one epoch)
    python train.py --task sst2 --stages dense:2 --keep-layers 3       # a dense model of the first 3 layers
    python train.py --task sst2 --eval-only --checkpoint out/sst2 --keep-threshold 0.8   # skim more, no retraining
    python train.py --resume out/sst2                 # go on with a run stopped by Ctrl-C or SIGTERM
    torchrun --standalone --nproc_per_node=2 train.py --task sst2      # data-parallel, one process per core or GPU

Read from main() down. The flags are checked and resolved once into a Settings (flags.py); the data is
read; the model is built (recipe.py: the recipe's stages, each a model of its own); then every stage
trains with train_stage(), whose loop body is the training step: AdamW with linear warm-up and decay to
the stage's peak lr, loss = task loss + lambda * the method's loss (Eq. 7). The model is saved and
evaluated last (recipe.report: metric, FLOPs speedup, measured speedup, tokens kept per layer). Not in the
paper, for speed, and the default since measured (results/README.md, section 6): training batches of sentences
of about one length (data.batch_rows; --no-group-by-length: random) and the training forward under bfloat16
autocast where the hardware multiplies it (--precision auto; fp32: off); the evaluation runs in float32.
--output-dir receives the model, metrics.json and two pictures, each file written atomically; while
training, also resume.pt, the state --resume continues from (once the model is saved, a small one from which
--resume finishes the evaluation); while the run goes on, .lock holds its process id (recipe.hold).

Under torchrun each process trains on its share of every batch (the global batch stays --batch-size),
PyTorch's DistributedDataParallel averages the gradients, the speedup controller is steered by the FLOPs
of the whole batch, and rank 0 alone prints and writes (gloo on the CPU, nccl on CUDA).
"""

import dataclasses
import itertools
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import flags
import flops
import methods
import recipe
import skim
from checkpoint import ModelError, WriteFailed
from data import inputs, to_device


class NonFiniteLoss(Exception):
    """The loss turned NaN or infinite: the run stops, nothing saved over the last good state. One line."""


def main(argv=None):
    # torchrun starts one process per rank and gives each its RANK, LOCAL_RANK and WORLD_SIZE
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    settings, state = flags.parse(argv, world, rank)
    if ddp:
        dist.init_process_group("nccl" if settings.device == "cuda" else "gloo")
        if settings.device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" is now this process's GPU
    task = data.get_task(settings.task)
    dev_split = task.dev_splits[0]

    # the data: every file is read and checked before the model loads
    dev_examples = data.read_split(task, dev_split, settings.data_dir)[: settings.max_eval_samples]
    train_examples, held_examples = [], []
    if not settings.eval_only:
        train_examples, held_examples = data.training_rows(data.read_split(task, "train", settings.data_dir),
                                                           settings.holdout, settings.max_train_samples)

    # the teacher first: building it draws no random numbers after the seed is set, so --distill-coef 0
    # trains exactly the model that no --teacher does (a Transkimmer teaches with every token kept)
    teacher = None
    finished = bool(state and state.get("trained"))  # --resume of a run whose training is done: the evaluation
    if settings.teacher and not finished:
        teacher = methods.load_saved(settings.teacher, every_token=True).bert.eval().requires_grad_(False)
        teacher = teacher.to(settings.device)
    torch.manual_seed(settings.seed)
    model = recipe.trained_model(settings) if finished else recipe.first_model(settings, task).to(settings.device)
    tokenizer = model.bert.tokenizer
    if tokenizer is None:
        raise ModelError(f"{settings.checkpoint or settings.model}: the checkpoint has no tokenizer.json or vocab.txt")
    run = recipe.Run(settings, task, dev_examples, data.encode(tokenizer, dev_examples, settings.max_seq_length),
                     data.encode(tokenizer, held_examples, settings.max_seq_length), teacher=teacher, rank=rank,
                     world=world, records=state["records"] if state else [])

    if settings.overwrite and rank == 0 and not state:
        recipe.clear_run(settings.output_dir)  # --overwrite: the run it replaces leaves no file behind
    if not settings.eval_only and not finished:
        run.train_set = data.encode(tokenizer, train_examples, settings.max_seq_length)
        if settings.target_speedup:  # held-out sentences if any, judged whole against every training row
            run.calibration = recipe.calibration_sample(train_examples, run.train_set, held_examples, run.held_set,
                                                        settings)
            flags.check_reachable(settings, model, run.calibration)
        if rank == 0:
            print(f"{task.name}: {len(run.train_set)} train / {len(run.dev_set)} {dev_split} examples; "
                  f"{describe(settings)}" + (f"; resumed from {recipe.resume_path(settings.output_dir)}" if state else "")
                  + (f"; {world} processes" if ddp else ""), file=sys.stderr)
        if rank:
            torch.manual_seed(settings.seed + rank)  # each process its own dropout and Gumbel noise
        calibrated = None  # the keep threshold calibrated after a skim stage, for the frozen stage after it
        with recipe.StopRequest() as stop:
            for i, (kind, epochs, _) in enumerate(settings.stages):
                if state and i < state["stage"]:  # done before the interruption: rebuild its structure only
                    model = recipe.enter_stage(model, kind, settings, None, {})
                    continue
                resumed = state if state and i == state["stage"] else None
                record = resumed["record"] if resumed else {"stage": kind, "epochs": epochs}
                model = recipe.enter_stage(model, kind, settings, None if resumed else run.calibration, record,
                                           calibrated)
                train_stage(model, run, i, record, resumed, stop)
                calibrated = recipe.end_stage(model, run, i, record)
                run.records.append(record)
            model = recipe.finish(model, settings, run.records, run.calibration)
            if rank == 0:  # the model, and a resume.pt from which --resume evaluates it
                recipe.save_trained(model, tokenizer, settings, run.records)
        if stop.requested:  # pressed after the last step: nothing is lost but the evaluation
            raise recipe.Interrupted(f"interrupted as the training ended; the model is saved: finish its evaluation "
                                     f"with python train.py --resume {settings.output_dir}")
    if ddp:
        dist.destroy_process_group()
    if rank == 0:
        finish_later = f"finish the evaluation with python train.py --resume {settings.output_dir}"
        try:
            metrics = recipe.report(model, run)
        except KeyboardInterrupt:  # one Ctrl-C: the model is saved, the evaluation alone is to do again
            if settings.eval_only:
                recipe.clear_run(settings.output_dir)  # what the evaluation had written: nothing half done is left
                raise recipe.Interrupted("interrupted during the evaluation; nothing was written: run it again") from None
            raise recipe.Interrupted(f"interrupted during the final evaluation; the model is saved: {finish_later}") from None
        except WriteFailed as e:
            if settings.eval_only:
                raise
            raise WriteFailed(e.path, f"{e.why}; the model is saved: free some space, then {finish_later}") from None
        recipe.resume_path(settings.output_dir).unlink(missing_ok=True)  # the run is complete
        recipe.release()
        return metrics


def train_stage(model, run, index, record, resumed, stop):
    """Stage `index` of the run's stages: its own optimizer and lr schedule, lambda from recipe.Steering, its
    record filled in as it goes (`resumed`: the state it goes on from, or None). Saves a resumable state every
    --save-every minutes, and on Ctrl-C or SIGTERM (`stop`; then raises recipe.Interrupted)."""
    from tqdm import tqdm

    settings, task, train_set, teacher, rank, world = (run.settings, run.task, run.train_set, run.teacher, run.rank,
                                                       run.world)
    kind, epochs, lr = settings.stages[index]
    steps_per_epoch = math.ceil(len(train_set) / settings.batch_size)
    total_steps = max(1, round(steps_per_epoch * epochs))
    optimizer = optimizer_for(model, settings, lr)
    clipped = clip_groups(model, settings)
    schedule = linear_schedule(optimizer, total_steps, round(settings.warmup * total_steps))
    steering = recipe.Steering(settings, kind, total_steps, run.calibration, record)
    machine, machines = flops.machine_line(settings.device), record.setdefault("machines", [])
    if machine not in machines:  # where the stage trained: resumed on another machine, both
        machines.append(machine)
    step = 0
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        steering.load_state_dict(resumed["controller"])
        torch.set_rng_state(resumed["rng"])
        step = resumed["step"]
    stepped = DDP(model) if world > 1 else model  # DDP all-reduces (averages) the gradients during backward
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=f"stage {index + 1}/{len(settings.stages)}: {kind} {task.name}",
               unit="step", dynamic_ncols=True, disable=rank != 0)
    started, saved_at = time.time() - record.get("train_seconds", 0.0), time.time()

    def save(step):
        record["train_seconds"] = round(time.time() - started, 1)
        state = {"settings": dataclasses.asdict(settings), "stage": index, "step": step, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "controller": steering.state_dict(), "rng": torch.get_rng_state(), "records": run.records,
                 "record": record}
        try:
            recipe.save_state(state)
        except WriteFailed:
            bar.close()  # the error's line comes after the progress bar, not on it
            raise

    while step < total_steps:
        epoch, done = divmod(step, steps_per_epoch)
        # the epoch's batches, drawn from the seed and the epoch: a resumed run skips the `done` it trained on
        for batch in itertools.islice(data.batches(train_set, settings.batch_size, shuffle=True,
                                                   seed=settings.seed + epoch,
                                                   group_by_length=settings.group_by_length), done, None):
            shard, share = share_of(batch, rank, world)
            shard = to_device(shard, settings.device)
            # forward: the logits, each layer's mask and the method's own loss (under --precision bf16, in bfloat16
            # where autocast takes it; the losses from float32 logits)
            with autocast(settings):
                out = stepped(*inputs(shard))
            loss_task = fit = task_loss(out.logits.float(), shard["labels"], task)
            if teacher is not None:  # distillation (not in the paper)
                with torch.no_grad(), autocast(settings):
                    teacher_logits = teacher(*inputs(shard))                                 # (B, labels)
                loss_kd = distill_loss(out.logits.float(), teacher_logits.float(), task, settings.distill_temp)
                fit = (1 - settings.distill_coef) * loss_task + settings.distill_coef * loss_kd
            loss = skim.total_loss(fit, out.aux_loss, steering.coef)                         # Eq. 7
            loss = loss * share  # DDP averages over the processes: weighed so, the mean over the global batch
            # backward
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # clip the gradient (the encoder's and the method's apart, with --predictor-grad separate); 0: no clipping
            norms = [torch.nn.utils.clip_grad_norm_(group, settings.max_grad_norm or math.inf) for group in clipped]
            # all processes agree: did the loss or its gradient turn non-finite, was Ctrl-C or SIGTERM pressed?
            finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(n)) for n in norms)
            non_finite, stopping = agreed([not finite, stop.requested], world)
            if non_finite:
                bar.close()
                raise NonFiniteLoss(f"the loss ({loss.item():.4g}) or its gradient is not finite at step {step + 1} of "
                                    f"stage {index + 1} ({kind}); the run stops, nothing saved over the last good state")
            # step the optimizer and the learning rate
            optimizer.step()
            schedule.step()
            step += 1
            # steer lambda towards the target speedup, by the FLOPs of the whole (global) batch
            shown = {"task": f"{loss_task.item():.3f}"} | ({"kd": f"{loss_kd.item():.3f}"} if teacher else {})
            if kind != "dense":
                shown["kept"] = f"{skim.skim_loss(out.masks, shard['attention_mask']).item():.2f}"  # tokens processed (Eq. 6)
            if steering.controller:
                shown |= steering.after_step(model, flops_fraction(model, out.masks, shard, world, share > 0), step)
            show(bar, shown)
            # save a resumable state every --save-every minutes, and on Ctrl-C or SIGTERM; then stop
            if rank == 0 and (stopping or settings.save_every and time.time() - saved_at > 60 * settings.save_every):
                save(step)
                saved_at = time.time()
            if stopping:
                bar.close()
                raise recipe.Interrupted(
                    f"interrupted in stage {index + 1}/{len(settings.stages)} ({kind}) at step {step}/{total_steps}; "
                    f"the state is saved: continue with python train.py --resume {settings.output_dir}")
            if step >= total_steps:
                break
    bar.close()
    record.update(train_steps=step, train_seconds=round(time.time() - started, 1))
    if steering.controller:
        record.update(target_speedup=settings.target_speedup, final_skim_coef=round(steering.coef, 4))


def share_of(batch, rank, world):
    """This process's share of the global batch: rows rank, rank + world, ... -> (those rows, the share's weight
    len(rows) * world / batch size, so that DDP's average over the processes is the mean over the batch). A
    process with no row (a last batch smaller than world) runs one row at weight 0, as DDP needs every process."""
    rows = len(batch["labels"])
    share = len(range(rank, rows, world)) * world / rows
    return {k: v[rank::world] if share else v[:1] for k, v in batch.items()}, share


def autocast(settings):
    """The training forward's precision (--precision): bfloat16 autocast for "bf16" (matrix products in bfloat16,
    the weights float32), else nothing changed."""
    device = torch.device(settings.device).type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=settings.precision == "bf16")


def show(bar, shown):
    bar.set_postfix(shown, refresh=False)
    bar.update()


def all_reduce(t, op=dist.ReduceOp.SUM):
    """t reduced over the processes (summed, by default), on the device the backend reduces on (nccl: the GPU)."""
    t = t.to("cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=op)
    return t.cpu()


def agreed(flags_here, world):
    """[bool, ...] -> [bool, ...]: each True if it is True in any process (one all-reduce)."""
    if world == 1:
        return [bool(f) for f in flags_here]
    return [bool(v) for v in all_reduce(torch.tensor([float(f) for f in flags_here]), dist.ReduceOp.MAX).tolist()]


def flops_fraction(model, masks, shard, world, counted=True):
    """The FLOPs fraction the speedup controller steers towards 1 / --target-speedup: the method's FLOPs over
    the dense model's on the whole batch (no padding), counted from the masks by the method's own counter, as
    the evaluation counts them (the reciprocal of the speedup it reports); under torchrun the counts of every
    process's share are summed first (counted=False: this process's row has no share)."""
    counter = model.flops_counter()
    counter.add(masks, shard["attention_mask"])
    cost = torch.tensor(counter.totals(), dtype=torch.float64) * counted                 # (skim, dense)
    if world > 1:
        cost = all_reduce(cost)
    return float(cost[0] / cost[1])


def optimizer_for(model, settings, lr):
    """AdamW at the stage's peak learning rate lr; as in BERT, no weight decay on biases and LayerNorm
    weights (the 1-d parameters). What the method adds (the skim predictors) learns at --predictor-lr
    (default: the stage's lr), unless it is frozen."""
    added = [p for p in model.added_parameters() if p.requires_grad]
    ids = {id(p) for p in model.added_parameters()}
    parts = [([p for p in model.parameters() if id(p) not in ids], lr), (added, settings.predictor_lr or lr)]
    groups = []
    for params, part_lr in parts:
        if params:
            groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay, "lr": part_lr},
                       {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr": part_lr}]
    return torch.optim.AdamW(groups)


def clip_groups(model, settings):
    """The parameter groups whose gradient norm is clipped to --max-grad-norm (1, as in BERT). One group, except
    with --predictor-grad separate: then a spike in the predictors' straight-through gradient (it scales with
    1/tau) no longer shrinks the encoder's step."""
    added = model.added_parameters()
    if added and settings.predictor_grad == "separate":
        ids = {id(p) for p in added}
        return [[p for p in model.parameters() if id(p) not in ids], added]
    return [list(model.parameters())]


def linear_schedule(optimizer, total_steps, warmup_steps):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def describe(settings):
    """One line on what this run trains."""
    s = settings
    line = " -> ".join(f"{kind} ({epochs:g} epoch{'s' if epochs != 1 else ''}, lr {lr:g})" for kind, epochs, lr in s.stages)
    if s.target_speedup:
        line += f"; target speedup {s.target_speedup:g}x"
    if "skim" in [kind for kind, _, _ in s.stages]:
        line += (f"; {s.method}" + (f"; lambda {s.skim_coef:g}" if s.skim_coef is not None else "")
                 + (f"; tau {s.tau:g}, mu0 {s.mu0:g}, predictor-grad {s.predictor_grad}" if s.method == "transkimmer" else "")
                 + (f", predictor lr {s.predictor_lr:g}" if s.predictor_lr else ""))
    if s.freeze_predictors is not None:
        line += f"; predictors frozen at keep threshold {s.freeze_predictors:g}"
    if s.keep_layers:
        line += f"; layers {','.join(map(str, s.keep_layers))} of the checkpoint"
    if s.teacher:
        line += f"; distilled from {s.teacher} (coef {s.distill_coef}, temperature {s.distill_temp})"
    line += f"; {'length-grouped' if s.group_by_length else 'random'} batches, {s.precision}"
    return f"seed {s.seed}: {line}"


def cli(argv=None):
    """main() as the command line runs it: a problem the user can fix is one line on stderr and exit code 2;
    Ctrl-C or SIGTERM in training saves the state, says how to resume, and exits with 130 (the shell's code).
    Whatever happens, the run lets go of its output folder (recipe.release).

    Under torchrun, torchrun itself follows a worker's exit code 2 with its own report of the failure
    (ChildFailedError, some 40 lines): it reports every worker that exits other than 0, and a worker that exited
    0 after an error would tell scripts that the run succeeded. The line that says what to fix is the first."""
    quiet = int(os.environ.get("RANK", 0)) != 0  # under torchrun, rank 0 alone speaks
    try:
        main(argv)
    except (data.DataError, ModelError, flags.UsageError, recipe.ResumeError, recipe.FolderHeld, NonFiniteLoss,
            WriteFailed) as e:
        if not quiet:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except (recipe.Interrupted, KeyboardInterrupt) as e:
        if not quiet:
            print(e if isinstance(e, recipe.Interrupted) else
                  "interrupted twice: stopped at once, nothing more saved (a state saved before is still there for "
                  "--resume)" if isinstance(e, recipe.InterruptedTwice) else
                  "interrupted before training began or while the data was prepared: stopped, nothing was saved "
                  "(a state saved before is still there for --resume)", file=sys.stderr)
        return 130
    finally:
        recipe.release()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
