"""
Transkimmer (Guan et al., ACL 2022): everything the method adds to BERT, in one file.

Before every layer a small MLP, the skim predictor (Eq. 2), decides for each token whether the
layer processes it (keep) or not (skim). A skimmed token never returns; its hidden state is
forwarded unchanged to the output (Eq. 3). In training nothing is removed: skimmed tokens are
masked out of attention with renormalisation (skim attention, Eq. 4), the discrete decisions get
gradients from the straight-through Gumbel-softmax estimator (Eq. 5), and a skim loss (Eq. 6)
weighted by the harmony coefficient (Eq. 7) pushes the model to skim. At inference the same
decisions are taken deterministically, and `Transkimmer.infer` really removes the skimmed tokens
of a [CLS] classifier, so the saved computation becomes saved time (`prune=True` does it in the
masked forward's shapes, writing each kept token back). (Not in the paper: `keep_threshold` moves the
inference decision off the argmax, so one trained model gives a range of speed/accuracy operating
points, and `freeze` fixes the decisions at one of them while the encoder trains on.)

The method is pinned down in docs/method.md: the predictor order
LN -> Linear -> LN -> GELU -> Linear, tau = 0.1, mu0 = 5, argmax decisions in eval mode, and
attention renormalised over kept keys (the authors' released code omits the renormalisation, so
its training did not compute what pruned inference computes).

Shapes: B batch, N padded length, d hidden size, L layers. `keep` (B, N) is 1 where a layer
processes a token ("M^i" in the paper).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import flops
from checkpoint import added_tensors, load_added, method_settings, read_checkpoint, split_added
from model import BertForSequenceClassification, Output, carry_forward, cls_only, first_rows, pack, padding_bias

TAU = 0.1   # Gumbel-softmax temperature (paper, Sec. 4.2)
MU0_PAPER = 5.0  # the paper's unbalanced bias init (Eq. 9): the default of the classes below
MU0 = 2.0   # ours, train.py's default: at tau 0.1 the paper's leaves the predictors no gradient (docs/method.md)
KEEP_THRESHOLD = 0.5  # evaluation: keep a token where p(keep) > this; 0.5 is the paper's argmax
SKIM_PREFIX = "skim."  # predictor tensors are saved under this prefix beside the BERT weights


class SkimPredictor(nn.Module):
    """Eq. 2: LN -> Linear(d, d) -> LN -> GELU -> Linear(d, 2), per token. Output index 1 = keep, 0 = skim."""

    def __init__(self, d, mu0=MU0_PAPER, std=0.02):
        super().__init__()
        self.norm_in = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, d)
        self.norm_mid = nn.LayerNorm(d)
        self.fc2 = nn.Linear(d, 2)
        self.reset_parameters(mu0, std)

    @torch.no_grad()
    def reset_parameters(self, mu0, std):
        """Eq. 8-9: weights ~ N(0, std); the last bias is unbalanced, b[1] ~ N(+mu0, std) (keep) and
        b[0] ~ N(-mu0, std) (skim), so a new predictor keeps almost every token and the pretrained
        model starts out computing what it computed before."""
        for fc in (self.fc1, self.fc2):
            nn.init.normal_(fc.weight, std=std)
        nn.init.zeros_(self.fc1.bias)
        self.fc2.bias.normal_(std=std).add_(torch.tensor([-mu0, mu0]))

    def forward(self, x):
        return self.fc2(F.gelu(self.norm_mid(self.fc1(self.norm_in(x)))))          # (B, N, 2) logits


def sample_gumbel(like):
    """g ~ Gumbel(0, 1), drawn as -log(E) with E ~ Exp(1): the same draw, from the same random stream,
    as torch.nn.functional.gumbel_softmax, so the two can be compared on identical noise."""
    return -torch.empty_like(like).exponential_().log()


def straight_through_gumbel_softmax(logits, tau=TAU, gumbel=None):
    """Eq. 5, the straight-through estimator. Forward: the hard one-hot sample argmax(logits + g).
    Backward: the gradient of the relaxed sample softmax((logits + g) / tau). (logits are log pi up
    to a constant, which the softmax ignores.) Returns (..., 2) with values exactly 0 or 1, in float32 at
    least: under bfloat16 autocast too, the noise and the softmax are float32."""
    logits = at_least_float32(logits)
    if gumbel is None:
        gumbel = sample_gumbel(logits)
    soft = F.softmax((logits + gumbel) / tau, dim=-1)                              # (..., 2) relaxed
    hard = F.one_hot(soft.argmax(-1), num_classes=2).to(soft.dtype)                # (..., 2) one-hot
    # value = hard, gradient = d soft. In this order the value is exactly 0/1: for the argmax entry
    # soft >= 0.5, so (1 - soft) is exact and (1 - soft) + soft == 1; elsewhere (0 - s) + s == 0.
    return hard - soft.detach() + soft


def at_least_float32(t):
    """t in float32 if it is in a lower precision (bfloat16, under autocast), else as it is."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def update_keep(keep, decision):
    """Cumulative keep mask: a token skimmed once never returns (keep * decision), padding stays
    skimmed (keep starts as the padding mask), and [CLS] at position 0 is always kept."""
    keep = keep * decision                                                         # (B, N)
    return torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], dim=1)           # (B, N)


def skim_loss(masks, pad):
    """Eq. 6: the mean over layers of the fraction of real tokens the layer processes (in float32 at least)."""
    pad = at_least_float32(pad.to(masks[0].dtype))
    return torch.stack([(keep * pad).sum() / pad.sum() for keep in masks]).mean()


def total_loss(task_loss, skim_loss_value, harmony_coef):
    """Eq. 7: Loss_total = Loss_downstream + lambda * Loss_skim."""
    return task_loss + harmony_coef * skim_loss_value


def gather_kept(x, keep):
    """Real pruning, step 1: each example's kept tokens, in order, in a shorter tensor re-padded to the
    batch's largest kept count n. Returns xs (B, n, d), their positions idx (B, n), and a (B, n) mask
    of which rows are real (the rest are filler taken from skimmed positions, masked as padding)."""
    B, N, d = x.shape
    if B == 1:  # one sentence: nothing to re-pad, a plain index select
        idx = keep[0].nonzero()[:, 0]                                              # (n,) kept positions
        return x.index_select(1, idx), idx[None], torch.ones(1, len(idx), dtype=torch.bool, device=x.device)
    counts = keep.sum(1).long()                                                    # (B,)
    n = int(counts.max())
    idx = torch.argsort(1 - keep, dim=1, stable=True)[:, :n]                       # (B, n) kept first
    real = torch.arange(n, device=x.device)[None, :] < counts[:, None]             # (B, n)
    # whole d-vectors are moved, row by row, in the (B * N, d) view of x: index_select copies a row at
    # a time, where a gather with the index expanded to (B, n, d) would read one index per element
    rows = idx + N * torch.arange(B, device=x.device)[:, None]                     # (B, n) rows of the view
    xs = x.reshape(B * N, d).index_select(0, rows.view(-1))                        # (B * n, d)
    return xs.view(B, n, d), idx, real


def scatter_kept(x, idx, real, ys):
    """Real pruning, step 2: write the processed rows, the real ones only, back to their positions in
    a copy of x; every other token keeps its state, so skimmed tokens are forwarded as in Eq. 3."""
    B, N, d = x.shape
    rows = (idx + N * torch.arange(B, device=x.device)[:, None])[real]            # (k,) rows of the real tokens
    return x.reshape(B * N, d).index_copy(0, rows, ys[real]).view(B, N, d)         # (B, N, d)


class Transkimmer(nn.Module):
    """A BertForSequenceClassification with a skim predictor before each of its L layers; a method behind
    the method interface (methods/: forward, infer, flops_counter, added_parameters, wrap, freeze)."""

    config_key = "skim"  # config.json keeps the skim settings under this key: a saved Transkimmer is known by it

    def __init__(self, bert, tau=TAU, mu0=MU0_PAPER):
        super().__init__()
        self.bert = bert
        self.tau = tau
        self.mu0 = mu0
        d, std = bert.config.hidden_size, bert.config.initializer_range
        self.predictors = nn.ModuleList([SkimPredictor(d, mu0, std) for _ in bert.layers])
        # Training only. "joint" (the paper): the straight-through gradient of the decisions also flows
        # through the predictors' input into the encoder. "separate": the predictors read a detached
        # copy of the hidden states, so that gradient trains the predictors alone (see train.py).
        self.predictor_grad = "joint"
        # Evaluation only, not in the paper: the operating point. A token is kept where the predictor's
        # p(keep) exceeds it; lower keeps more tokens, higher skims more, from the same trained model.
        self.keep_threshold = KEEP_THRESHOLD
        # Not in the paper: set by freeze, after which training takes the decisions as evaluation
        # does, so the encoder alone learns, on the inputs it will meet at evaluation.
        self.predictors_frozen = False

    @classmethod
    def wrap(cls, bert, settings):
        """The method interface's constructor: new predictors (Eq. 9) before the layers of a dense model."""
        model = cls(bert, tau=settings.tau, mu0=settings.mu0)
        model.predictor_grad = settings.predictor_grad
        return model

    def added_parameters(self):
        return list(self.predictors.parameters())

    def flops_counter(self, seq_len=None, last_layer="all"):
        return self.counter(self.config, seq_len, last_layer)

    @classmethod
    def counter(cls, config, seq_len=None, last_layer="all"):
        """flops.py's count of this method: the layers on the tokens they keep, and the predictors. From the
        config alone, as fastest_masks: recipe.reachable_speedup asks for a bound before any such model exists."""
        return flops.FlopsCounter(config, seq_len, predictors=True, last_layer=last_layer)

    FASTEST = "every token but [CLS] skimmed at the first layer"

    @staticmethod
    def fastest_masks(config, attention_mask):
        """The most this method can skip (recipe.reachable_speedup), FASTEST: L masks (B, N). The first
        predictor still sees every token."""
        return [cls_only(attention_mask)] * config.num_hidden_layers

    @property
    def config(self):
        return self.bert.config

    @property
    def tokenizer(self):
        return self.bert.tokenizer

    def decide(self, predictor, x):
        """(B, n, d) -> (B, n) decisions in {0, 1}: sampled with the straight-through estimator in
        training; in evaluation (and in training once the predictors are frozen) no noise, keep where
        p(keep) > keep_threshold (at 0.5, the argmax)."""
        sampled = self.training and not self.predictors_frozen
        if not sampled or self.predictor_grad == "separate":
            x = x.detach()  # a threshold has no gradient; "separate" keeps the estimator's out of the encoder
        logits = predictor(x)                                                      # (B, n, 2)
        if sampled:
            return straight_through_gumbel_softmax(logits, self.tau)[..., 1]
        # p(keep) = sigmoid(l_keep - l_skim) > t  <=>  l_keep - l_skim > log(t / (1 - t)), which is 0 at
        # t = 0.5: the argmax, a tie going to skim as argmax's does
        margin = at_least_float32(logits[..., 1]) - at_least_float32(logits[..., 0])  # (B, n)
        t = self.keep_threshold
        return (margin > math.log(t / (1 - t))).to(x.dtype)

    @torch.no_grad()
    def freeze(self, keep_threshold=KEEP_THRESHOLD):
        """Fix the skim decisions at `keep_threshold` (not in the paper; recipe.py's frozen stage, and the end of a
        --target-speedup run). The threshold becomes the model's own operating point: it is folded into the keep
        bias, b_keep -= log(t / (1 - t)), which moves the logit margin by exactly that much, so the model's argmax
        (keep_threshold 0.5) now decides as the old one did at t, and so does the saved model. The predictors stop
        learning, and training takes their decisions as evaluation does, without noise, so the encoder trains on
        the inputs it will meet at evaluation."""
        t = keep_threshold
        for predictor in self.predictors:
            predictor.fc2.bias[1] -= math.log(t / (1 - t))
        self.keep_threshold = KEEP_THRESHOLD
        self.predictors.requires_grad_(False)
        self.predictors_frozen = True

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, prune=False, decisions=None):
        """prune=False: all N positions go through every layer, skimmed ones masked (training, and
        the reference for evaluation). prune=True (evaluation only): each layer runs only on the
        tokens it keeps, and every token's final state is formed as Eq. 3 says (`infer` is the faster
        way to the same logits and masks). `decisions`: optional list of L (B, N) 0/1 tensors used
        instead of the predictors' (benchmarks and tests force keep ratios with it)."""
        assert not (prune and self.training), "prune=True is for inference; call .eval() first"
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        pad = attention_mask.to(x.dtype)                                           # (B, N)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        keep, masks = pad, []
        for i, (predictor, layer) in enumerate(zip(self.predictors, bert.layers)):
            if prune:
                x, keep = self.pruned_step(i, predictor, layer, x, keep, decisions)
            else:
                decision = decisions[i] if decisions is not None else self.decide(predictor, x)
                keep = update_keep(keep, decision)                                 # (B, N)
                x = carry_forward(keep, layer(x, pad_bias, keep), x)               # (B, N, d): Eq. 3
            masks.append(keep)
        logits = bert.classify(bert.pool(x[:, 0]))                                 # (B, num_labels)
        return Output(logits, masks, skim_loss(masks, pad))

    def pruned_step(self, i, predictor, layer, x, keep, decisions):
        """One layer with real pruning: the predictor sees only the tokens entering this layer, and the
        layer runs only on the tokens it keeps, gathered into a shorter tensor and scattered back."""
        if decisions is not None:
            decision = decisions[i]
        else:
            xs, idx, real = gather_kept(x, keep)                                   # (B, n, d)
            decision_s = self.decide(predictor, xs) * real                         # (B, n)
            decision = torch.zeros_like(keep).scatter(1, idx, decision_s)          # (B, N)
        keep = update_keep(keep, decision)                                         # (B, N)
        xs, idx, real = gather_kept(x, keep)                                       # (B, n', d)
        ys = layer(xs, padding_bias(real, x.dtype))                                # (B, n', d)
        return scatter_kept(x, idx, real, ys), keep

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask=None, token_type_ids=None, decisions=None):
        """Real pruning for a [CLS] classifier, with no work per layer besides the layer's own and the
        compaction (not in the paper; no autograd). The same logits (to float rounding) and masks as
        forward() in eval mode; the counterpart of BertForSequenceClassification.infer, whose packed
        layers (model.Layer.infer) it runs.

        Nothing is written back. A skimmed token never returns (update_keep) and the classifier reads
        [CLS] alone, which is always kept, so the state Eq. 3 forwards for a skimmed token is never read
        again. The tokens still in play therefore live in one packed tensor (T, d), every example's
        after the other's, with no padding (model.pack), that shrinks layer by layer: predictor i runs on
        exactly the T tokens entering layer i, and layer i on exactly the ones it keeps, each example
        attending over its own kept tokens. Each row carries its index in the flattened input, from
        which the output rebuilds the (B, N) masks when they are read (model.Output). The last layer
        computes [CLS]'s output alone (flops.py's "cls" convention)."""
        assert not self.training, "infer is for inference; call .eval() first"
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        B, N, _ = x.shape
        x, rows, lengths = pack(x, attention_mask)                                 # (T, d), (T,), B ints
        cls_rows = first_rows(lengths, x.device)                                   # (B,): each [CLS]'s row in x
        processed = []                                                             # per layer: the rows it ran on
        last = len(bert.layers) - 1
        for i, (predictor, layer) in enumerate(zip(self.predictors, bert.layers)):
            if decisions is None:
                decision = self.decide(predictor, x)                               # (T,)
            else:
                decision = decisions[i].reshape(-1).index_select(0, rows)          # (T,)
            keep = decision.bool().index_fill_(0, cls_rows, True)                  # (T,): [CLS] is always kept
            if not bool(keep.all()):  # (a layer that keeps every token entering it moves nothing)
                kept = keep.nonzero()[:, 0]                                        # (T',) packed rows kept
                x, rows = x.index_select(0, kept), rows.index_select(0, kept)      # (T', d), (T',)
                lengths = [len(kept)] if B == 1 else torch.bincount(rows // N, minlength=B).tolist()  # kept counts
                cls_rows = first_rows(lengths, x.device)                           # (B,)
            processed.append(rows)
            x = layer.infer(x, lengths, cls_rows if i == last else None)           # (T', d); last: (B, d)
        logits = bert.classify(bert.pool(x))                                       # (B, num_labels)
        return Output(logits, aux_loss=lambda masks: skim_loss(masks, attention_mask), processed=processed,
                      attention_mask=attention_mask)

    # checkpoint I/O: a BERT checkpoint in the HF layout, plus the predictors under "skim." and the
    # skim settings under "skim" in config.json (HF's loaders ignore both and load the BERT part)
    SWITCHES = ()  # boolean settings a subclass saves beside tau and mu0 (methods/released.py's), restored on loading

    @classmethod
    def from_pretrained(cls, name_or_path=None, num_labels=None, tau=None, mu0=None):
        """Any checkpoint model.py loads. A plain BERT gets new predictors (Eq. 9 init); a saved
        Transkimmer gets its own back. num_labels/tau/mu0 default to the checkpoint's settings, else
        2 labels and the class's own (Transkimmer: the paper's tau = 0.1, mu0 = 5)."""
        folder, config, tensors = read_checkpoint(name_or_path)
        saved = method_settings(config, cls.config_key, folder)
        if num_labels is not None:
            config["num_labels"] = num_labels
        skim_tensors, bert_tensors = split_added(tensors, SKIM_PREFIX)
        bert = BertForSequenceClassification.from_tensors(folder, config, bert_tensors, source=str(name_or_path or folder))
        chosen = {"tau": tau if tau is not None else saved.get("tau"), "mu0": mu0 if mu0 is not None else saved.get("mu0")}
        model = cls(bert, **{name: value for name, value in chosen.items() if value is not None})
        for switch in cls.SWITCHES:
            if isinstance(saved.get(switch), bool):
                setattr(model, switch, saved[switch])
        if skim_tensors:
            load_added(model.predictors, skim_tensors, folder, "skim predictors")
        return model.eval()

    def settings(self):
        """What config.json keeps under config_key: tau and mu0, and the SWITCHES."""
        return {"tau": self.tau, "mu0": self.mu0} | {switch: getattr(self, switch) for switch in self.SWITCHES}

    def save_pretrained(self, directory, tokenizer=None):
        self.bert.save_pretrained(directory, tokenizer, extra_config={self.config_key: self.settings()},
                                  extra_tensors=added_tensors(self.predictors, SKIM_PREFIX))
