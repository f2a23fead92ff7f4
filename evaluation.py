"""
What a run reports on an evaluation set, for any method behind the method interface (methods/): the task metric,
each example's prediction (for paired comparisons of runs), the FLOPs speedup (flops.py; no padding and
the paper's sequence padding), the fraction of tokens each layer kept, and the measured speedup
(timing.py); and its two pictures, in the style of the paper's Fig. 4 (tokens kept per layer) and
Table 5 (each token coloured by the layer at which it was skimmed).
"""

import dataclasses
import html
import json
from pathlib import Path

import numpy as np
import torch

import data
import methods
import timing
from checkpoint import atomic_write


def to_device(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


def predictions(logits, task):
    return logits.squeeze(-1).numpy() if task.labels is None else logits.argmax(-1).numpy()


@torch.no_grad()
def evaluate(model, dataset, task, settings, timing_repeats=None):
    """Task metrics, predictions, FLOPs and kept fraction per layer, and (timing_repeats > 0, a method with
    work to remove) the measured speedup. -> a dict for metrics.json."""
    model.eval()
    counter = model.flops_counter(seq_len=settings.max_seq_length)
    batches = [to_device(b, settings.device) for b in data.batches(dataset, settings.batch_size)]
    preds, labels = [], []
    for batch in batches:
        out = model(*timing.inputs(batch))
        counter.add(out.masks, batch["attention_mask"])
        preds.append(predictions(out.logits.cpu(), task))
        labels.append(batch["labels"].cpu().numpy())
    preds = np.concatenate(preds)
    result = {"task": task.name, "eval_samples": len(dataset),
              **data.compute_metrics(task, preds, np.concatenate(labels)), "flops": counter.summary(),
              "predictions": preds.tolist()}  # per example, in file order: for paired comparisons of runs
    if timing_repeats and not isinstance(model, methods.Dense):
        result.update(timing.measure_speedup(model, batches, timing_repeats, settings.device))
    return result


def stage_record(model, dataset, task, settings):
    """What a stage's record keeps of an evaluation (no timing)."""
    return brief(evaluate(model, dataset, task, settings), task)


def brief(result, task):
    """An evaluation's metrics, predictions, FLOPs speedup (no padding) and kept fraction per layer."""
    return {k: result[k] for k in (*task.metrics, "predictions")} | {
        "flops_speedup": result["flops"]["none"]["speedup"], "kept_fraction": result["flops"]["kept_fraction"]}


def scored_line(scored, metric):
    """One line on a model scored several ways (a method's `scored`, methods/released.py)."""
    sampled = [r[metric] for r in scored["released_sampled"]]
    speedups = [r["flops_speedup"] for r in scored["released_sampled"]]
    return (f"released pass, sampled x{len(sampled)}: {metric} {np.mean(sampled):.4f} +- {np.std(sampled, ddof=1):.4f}"
            f" at {np.mean(speedups):.2f}x; argmax: {scored['released_argmax'][metric]:.4f} at "
            f"{scored['released_argmax']['flops_speedup']:.2f}x; honest pruning: {scored['honest'][metric]:.4f} at "
            f"{scored['honest']['flops_speedup']:.2f}x")

def report(model, tokenizer, dev_examples, dev_set, held_set, task, settings, records):
    """The run's last word: the evaluation on dev (timed), and on the held-out examples if any, written to
    metrics.json with the stages' records and the settings; the two pictures; one line on stderr.
    -> the metrics."""
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
    metrics.update(split=task.dev_splits[0], args=dataclasses.asdict(settings))
    atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2) + "\n"))
    plot_retention(f["kept_fraction"], out / "retention.png", f"{task.name} dev: tokens processed per layer",
                   type(model).__name__)
    skim_picture(model, tokenizer, dev_examples, settings, out / "skimmed_tokens.html")

    main = task.main_metric
    speedup = (f"{metrics['flops_speedup_over_checkpoint']:.2f}x over the {settings.checkpoint_layers}-layer checkpoint"
               if settings.checkpoint_layers else
               f"{f['none']['speedup']:.2f}x (no padding), {f['sequence']['speedup']:.2f}x (sequence {settings.max_seq_length})")
    print(f"{task.name} {metrics['split']}: {main} {metrics[main]:.4f} | FLOPs speedup {speedup}"
          + (f" | measured {metrics['measured_speedup']:.2f}x ({metrics['timing']})" if "measured_speedup" in metrics else "")
          + (f" | held-out {main} {metrics['holdout'][main]:.4f}" if held_set else "")
          + (f" | {scored_line(metrics['scored'], main)}" if "scored" in metrics else "")
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
        batch = to_device(next(data.batches([item], 1)), settings.device)
        layers = skim_layers([m[0].cpu() for m in model(*timing.inputs(batch)).masks], len(item["input_ids"]))
        spans = [layer_span(tokenizer.id_to_token(t), layer, L) for t, layer in zip(item["input_ids"], layers)]
        rows.append("<p>" + " ".join(spans) + "</p>")
    legend = " ".join(layer_span(f"skimmed before layer {i}" if i < L else "kept to the end", i, L) for i in range(L + 1))
    page = (f"<!doctype html><meta charset='utf-8'><title>What {type(model).__name__} skims</title>"
            f"<style>body{{font-family:sans-serif;max-width:60em}} span{{padding:1px 3px;border-radius:3px;line-height:2}}</style>"
            f"<h3>{settings.task}: each token coloured by the layer at which it was skimmed (darker = processed longer)</h3>"
            f"<p>{legend}</p>{''.join(rows)}")
    atomic_write(path, lambda p: Path(p).write_text(page, encoding="utf-8"))
