"""
Static top-k token pruning (PoWER-BERT: Goyal et al., ICML 2020, "PoWER-BERT: Accelerating BERT Inference
via Progressive Word-vector Elimination"; code: IBM/PoWER-BERT), a method behind the method interface (methods/__init__.py).

Before each layer i >= 1, every example keeps the k_i of its tokens that received the most attention in
layer i - 1 (`significance`, summed over heads and over the queries, a token's attention to itself left
out), [CLS] always among them (`select_top`). A token dropped never returns and is no longer attended to,
as Transkimmer's skimmed tokens; its last state is never read again, since the classifier reads [CLS].
Nothing about the decisions is learned: the number kept is a fixed schedule of each example's length,
k_i(n) = ceil(rho^i n) (`retained`), and the encoder is fine-tuned under it (PoWER-BERT's re-training).
Layer 0 keeps every token: there is no attention yet to rank them by.

Where this differs from PoWER-BERT (docs/method.md):
- The schedule. PoWER-BERT learns k_i per layer for the padded length N (soft-extract layers with an L1
  penalty, then re-training). Here the schedule is geometric, one number rho, and k_i counts each
  example's real tokens, since the FLOPs here count no padding. rho is set as Transkimmer's threshold is:
  recipe.calibrate_threshold finds the keep_threshold t at which the model meets --target-speedup on
  training sentences, and freeze makes the decay at t the model's own rho (`decay`).
- Where tokens leave. PoWER-BERT drops them inside layer i, after its self-attention, by layer i's own
  scores, so layer i's feed-forward already runs on fewer. Here they leave before layer i, by layer i - 1's,
  so that masks[i] means what it means for every method (the tokens layer i computed) and flops.py counts
  it unchanged. The significance sums are not matrix products: like softmax, they cost no counted FLOPs.

The shapes are fixed by the input lengths alone, never by the hidden states: a batch's sizes are known
before it runs. Shapes: B batch, N padded length, d hidden size, nh heads, T tokens of a packed batch.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import flops
import skim
from checkpoint import method_settings, read_config, resolve_checkpoint
from model import BertForSequenceClassification, Output, carry_forward, cls_only, first_rows, pack, padding_bias


def retained(n, rho, i):
    """k_i(n): how many tokens layer i computes of an example of n real tokens, n (B,) integers ->
    (B,) integers: ceil(rho^i n), at least 1 ([CLS]). Never more than layer i - 1 kept, for rho <= 1."""
    return (n.double() * rho ** i).ceil().long().clamp(min=1)


def significance(probs, keep):
    """The attention each token received in a layer: probs (B, nh, N, N), the layer's attention
    probabilities (queries by keys), keep (B, N) the tokens it computed -> (B, N), summed over heads and
    over the kept queries, each token's attention to itself left out."""
    queries = keep.to(probs.dtype)[:, None, :, None]                               # (B, 1, N, 1)
    received = (probs * queries).sum((1, 2))                                       # (B, N)
    return received - probs.diagonal(dim1=-2, dim2=-1).sum(1) * keep               # (B, N)


def select_top(score, keep, k):
    """The tokens the next layer computes: of those in play (keep (B, N)), [CLS] and the k - 1 others of the
    highest score (B, N); k (B,) integers, at most the number in play. Ties go to the earlier position."""
    score = score.masked_fill(keep == 0, -math.inf)                                # (B, N)
    score = torch.cat([torch.full_like(score[:, :1], math.inf), score[:, 1:]], 1)  # [CLS] first
    rank = score.argsort(dim=1, descending=True, stable=True).argsort(1)             # (B, N): 0 = the highest
    return (rank < k[:, None]).to(keep.dtype)                                      # (B, N)


def infer_layer(layer, x, lengths):
    """model.Layer.infer on a packed batch x (T, d) of `lengths` tokens per example, and the attention
    each token received there (`significance`, which the fused attention of Layer.infer does not give):
    the same matrix products, written out. -> (T, d), (T,)."""
    attn = layer.attn
    d = x.shape[1]
    nh, hs = attn.n_head, d // attn.n_head
    q, k, v = attn.qkv(x).split(d, dim=1)                                          # 3 x (T, d)
    ys, received = [], []
    for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths)):  # one example at a time
        qi, ki, vi = (t.view(-1, nh, hs).transpose(0, 1) for t in (qi, ki, vi))   # (nh, n, hs)
        probs = F.softmax((qi @ ki.transpose(1, 2)) * (1.0 / math.sqrt(hs)), dim=-1)  # (nh, n, n)
        ys.append((probs @ vi).transpose(0, 1).reshape(-1, d))                     # (n, d)
        received.append(probs.sum((0, 1)) - probs.diagonal(dim1=1, dim2=2).sum(0))  # (n,)
    x = layer.attn_norm(x + attn.out(torch.cat(ys)))                               # (T, d)
    return layer.ffn_norm(x + layer.ffn(x)), torch.cat(received)                   # (T, d), (T,)


class TopK(nn.Module):
    """A BertForSequenceClassification whose layer i >= 1 computes the k_i(n) tokens that received the
    most attention in layer i - 1; a method behind the method interface (methods/__init__.py)."""

    config_key = "topk"          # config.json keeps rho under this key: a saved TopK is known by it
    trains_decisions = False     # the recipe has no skim stage for it: it trains dense, then under its schedule

    def __init__(self, bert, rho=1.0):
        super().__init__()
        self.bert = bert
        self.rho = rho           # the model's own decay: at keep_threshold 0.5, layer i keeps ceil(rho^i n)
        self.keep_threshold = skim.KEEP_THRESHOLD  # the operating point, as Transkimmer's: higher saves more

    @classmethod
    def wrap(cls, bert, settings=None):
        """The method put on a dense model, at rho 0.5: a starting point, which recipe.py calibrates to the
        target speedup before training under it. (TopK(bert) keeps every token: the dense model.)"""
        return cls(bert, rho=0.5)

    @property
    def decay(self):
        """The decay the schedule runs at: rho^(t / (1 - t)) at keep_threshold t. As Transkimmer's threshold
        moves its predictors' log-odds, t scales log(rho) by its odds: rho itself at t = 0.5, towards 1
        (every token) as t -> 0, towards 0 ([CLS] alone) as t -> 1."""
        t = self.keep_threshold
        return self.rho ** (t / (1 - t))

    def freeze(self, keep_threshold):
        """Make the decay at `keep_threshold` the model's own rho, saved with it (as Transkimmer's): a frozen
        stage trains the encoder under the schedule at this operating point. (Nothing else to fix: the
        schedule learns nothing.)"""
        self.keep_threshold = keep_threshold
        self.rho, self.keep_threshold = self.decay, skim.KEEP_THRESHOLD

    # rho is no tensor: it travels in the state_dict (resume.pt) as extra state
    def get_extra_state(self):
        return {"rho": self.rho}

    def set_extra_state(self, state):
        self.rho = state["rho"]

    def added_parameters(self):
        return []

    def flops_counter(self, seq_len=None, last_layer="all"):
        return self.counter(self.config, seq_len, last_layer)

    @classmethod
    def counter(cls, config, seq_len=None, last_layer="all"):
        """flops.py's count: the layers on the tokens they compute; nothing added (no predictors)."""
        return flops.FlopsCounter(config, seq_len, predictors=False, last_layer=last_layer)

    FASTEST = "[CLS] alone after the first layer"

    @staticmethod
    def fastest_masks(config, attention_mask):
        """The most this method can skip (recipe.reachable_speedup), FASTEST: L masks (B, N). The first layer
        computes every token: there is no attention yet to rank them by."""
        return [attention_mask.float()] + [cls_only(attention_mask)] * (config.num_hidden_layers - 1)

    @property
    def config(self):
        return self.bert.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Training, and the reference for infer: all N positions go through every layer, the dropped ones
        masked out of attention (skim attention, Eq. 4 of Transkimmer) and carried forward unchanged."""
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        lengths = attention_mask.sum(1)                                            # (B,)
        keep, masks = attention_mask.to(x.dtype), []                               # (B, N)
        for i, layer in enumerate(bert.layers):
            if i > 0:  # the decision takes no gradient: it is a ranking
                keep = select_top(significance(probs.detach(), keep), keep, retained(lengths, self.decay, i))
            y, probs = layer(x, pad_bias, keep, with_probs=True)                   # (B, N, d), (B, nh, N, N)
            x = carry_forward(keep, y, x)                                          # (B, N, d)
            masks.append(keep)
        logits = bert.classify(bert.pool(x[:, 0]))                                 # (B, num_labels)
        return Output(logits, masks)                                               # no loss of its own

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask=None, token_type_ids=None):
        """Inference with the dropped tokens removed: the batch's tokens packed (model.pack) into (T, d),
        every layer on exactly the tokens it computes, the last on [CLS] alone (flops.py's "cls"); the same
        logits (to float rounding) and masks as forward() in eval mode."""
        assert not self.training, "infer is for inference; call .eval() first"
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        x, rows, lengths = pack(x, attention_mask)                                 # (T, d), (T,), B ints
        real = torch.tensor(lengths)                                               # (B,) real lengths n
        processed, last = [], len(bert.layers) - 1
        for i, layer in enumerate(bert.layers):
            if i > 0 and (k := retained(real, self.decay, i).tolist()) != lengths:
                kept = torch.cat([rows_of_top(s, j, start) for s, j, start in
                                  zip(received.split(lengths), k, first_rows(lengths, "cpu").tolist())])  # (T',)
                x, rows, lengths = x.index_select(0, kept), rows.index_select(0, kept), k  # (T', d), (T',)
            processed.append(rows)
            if i == last:
                x = layer.infer(x, lengths, first_rows(lengths, x.device))         # (B, d)
            else:
                x, received = infer_layer(layer, x, lengths)                       # (T, d), (T,)
        logits = bert.classify(bert.pool(x))                                       # (B, num_labels)
        return Output(logits, processed=processed, attention_mask=attention_mask)

    # checkpoint I/O: a plain BERT checkpoint in the HF layout, with rho under "topk" in config.json
    @classmethod
    def from_pretrained(cls, name_or_path=None, num_labels=None, **_):
        """A saved TopK (its rho), or any checkpoint model.py loads (rho = 1). Other methods' settings
        (tau, mu0) are not this method's and are ignored."""
        folder = resolve_checkpoint(name_or_path)
        saved = method_settings(read_config(folder), cls.config_key, folder)
        overrides = {} if num_labels is None else {"num_labels": num_labels}
        bert = BertForSequenceClassification.from_pretrained(name_or_path, **overrides)
        return cls(bert, rho=saved.get("rho", 1.0)).eval()

    def save_pretrained(self, directory, tokenizer=None):
        self.bert.save_pretrained(directory, tokenizer, extra_config={self.config_key: {"rho": self.rho}})


def rows_of_top(score, k, start):
    """One example of a packed batch: its tokens' scores (n,), the first at packed row `start` ([CLS]) ->
    the packed rows of [CLS] and its k - 1 others of the highest score, in order (select_top, packed)."""
    score = torch.cat([score.new_full((1,), math.inf), score[1:]])                 # (n,): [CLS] first
    return score.argsort(descending=True, stable=True)[:k].sort().values + start   # (k,)
