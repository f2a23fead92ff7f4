"""
Transkimmer's real pruning in shapes fixed before the data is seen, for a GPU (not in the paper): no host
synchronisation inside (no nonzero, no count read back), so that the pass can be captured as a CUDA graph.
skim.Transkimmer.infer removes the skimmed tokens exactly, but reads each layer's kept counts back to size
its tensors; here layer i runs, padded, on C_i columns of every example (`fixed_columns`: about
capacity[i] N, N the batch's padded length; `capacity_for` sets the fractions on sentences), each example's
first C_i kept tokens (`first_kept`), gathered from the layer before's. An example that keeps more than C_i
tokens loses the last ones (`infer_fixed` says which; with no overflow the logits and masks are forward()'s
in eval mode). bench.py times it (--paths fixed) and counts what it executes (`padded_to_columns`).

Shapes: B batch, N padded length, d hidden size, C_i the columns of layer i.
"""

import math

import torch

from model import Output, padding_bias
from skim import update_keep


def first_kept(keep, capacity):
    """Compaction of a fixed size: each example's first `capacity` kept tokens, in order, then filler. keep (B, n)
    0/1 -> their columns idx (B, C), which of them are kept (B, C) bool, and which examples keep more than C (B,)
    bool. topk on a score, kept tokens first and each group in order of position, so no shape depends on the
    data and nothing is read back to the host."""
    n = keep.shape[1]
    score = keep * (2 * n) - torch.arange(n, device=keep.device, dtype=keep.dtype)  # (B, n)
    idx = score.topk(capacity, dim=1).indices                                       # (B, C), sorted: kept first
    return idx, keep.gather(1, idx).bool(), keep.sum(1) > capacity


def fixed_columns(capacity, N):
    """The columns infer_fixed runs each layer on, for a batch padded to N: C_i = min(C_{i-1}, ceil(capacity[i] N)),
    C_{-1} = N. Shapes alone: the same for every batch of that length."""
    columns = [N]
    for c in capacity:
        columns.append(min(columns[-1], math.ceil(c * N - 1e-9)))  # (a fraction k / N of N is k, not k + 1)
    return columns[1:]


@torch.inference_mode()
def infer_fixed(model, input_ids, attention_mask, token_type_ids, capacity, decisions=None):
    """A Transkimmer's inference at capacities `capacity` (one fraction per layer), in fixed shapes: see the module
    docstring. A skimmed token never returns and the classifier reads [CLS] alone, which is always kept at column
    0, so nothing is written back. `decisions`: optional L (B, N) 0/1 tensors used instead of the predictors'.
    -> (its Output, which examples overflowed a capacity (B,) bool)."""
    assert not model.training, "infer_fixed is for inference; call .eval() first"
    bert = model.bert
    x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
    B, N, d = x.shape
    keep = attention_mask.to(x.dtype)                                          # (B, n): in play, n = N first
    position = torch.arange(N, device=x.device).expand(B, N)                   # (B, n): each column's token
    overflow, masks = torch.zeros(B, dtype=torch.bool, device=x.device), []
    for i, (predictor, layer, C) in enumerate(zip(model.predictors, bert.layers, fixed_columns(capacity, N))):
        decision = (model.decide(predictor, x) if decisions is None
                    else decisions[i].to(x.dtype).gather(1, position))         # (B, n)
        keep = update_keep(keep, decision)                                     # (B, n)
        idx, kept, over = first_kept(keep, C)                                  # (B, C_i)
        x = x.gather(1, idx[..., None].expand(-1, -1, d))                      # (B, C_i, d)
        position, keep, overflow = position.gather(1, idx), kept.to(x.dtype), overflow | over
        masks.append(keep.new_zeros(B, N).scatter(1, position, keep))          # (B, N)
        x = layer(x, padding_bias(keep, x.dtype))                              # (B, C_i, d)
    return Output(bert.classify(bert.pool(x[:, 0])), masks), overflow


@torch.inference_mode()
def capacity_for(model, batches):
    """The capacities of infer_fixed at which `batches` overflow no layer: for each layer, the largest fraction of
    its batch's padded length that any batch keeps there (the model's infer decisions)."""
    fractions = []
    for b in batches:
        masks = model.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"]).masks
        fractions.append([float(m.sum(1).max()) / m.shape[1] for m in masks])
    return [max(layer) for layer in zip(*fractions)]


def padded_to_columns(columns, attention_mask):
    """The shapes infer_fixed computes on a batch: layer i (and predictor i + 1) on its C_i columns (`columns`,
    fixed_columns) for every example, whatever it keeps, predictor 0 on all N. Returns (masks, attention_mask)
    to feed flops.FlopsCounter for the executed FLOPs (last layer: "all")."""
    B, N = attention_mask.shape
    positions = torch.arange(N, device=attention_mask.device)[None, :]               # (1, N)
    return [(positions < c).float().expand(B, N) for c in columns], torch.ones_like(attention_mask)
