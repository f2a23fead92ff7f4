"""
The authors' released computation (ChandlerGuan/Transkimmer, branch master at a72eb9a, the only code of the
paper's time), as a method behind the method interface (methods/__init__.py): `train.py --method released`, and with
`--recipe released` their training script's hyperparameters. It is here to measure how much of the paper's
reported accuracy comes from what that code computes and pruned inference would not.

`Released.forward` (training, and the "released pass" the paper evaluated) computes what the released encoder
loop computes; `Released.infer` (skim.Transkimmer.infer, inherited) is honest pruning of the same weights: the
skimmed tokens really removed, each layer run on its kept tokens only, decisions by argmax, what a user who
deploys the model gets. Where the released code departs from skim.py (docs/method.md, "The released code"):

1. Every token runs through every layer (src/module/modeling_transkimer.py, BertEncoder.forward, line 623:
   `hidden_states = layer_outputs[0]`). Only an output copy freezes a skimmed token (line 624,
   `forward_hidden_states`), and the classifier reads [CLS] from that copy. Switch: `stream` (`updated_stream`).
2. Skim attention without renormalisation (BertSelfAttention.forward, line 336): the softmax runs over every
   real key, then the probabilities are multiplied by the skim mask. Each kept query's denominator still holds
   the skimmed tokens' keys, so every kept token's attention output is scaled, per head and layer, by a factor
   computed from the skimmed ones: information leaks from skimmed tokens to kept ones. Switch: `renormalise`
   (`unnormalised_attention`).
3. The estimator as run (line 574): `gumbel_softmax(predictor(h[:, 1:]), hard=True, tau=1)`: tau 1 (the paper
   says 0.1), the predictors read the (every-token) stream and train jointly with the encoder, the decisions are
   sampled at evaluation too (`sampled_eval`; False: the argmax), only [CLS] is forced kept, and the predictors
   also decide on padding, which the skim loss counts (`released_skim_loss`, BertForSequenceClassification.forward,
   line 1639: each layer's mean over the batch of the kept positions, padding included, over the padded length).
4. The recipe as run (scripts/run_glue.sh, src/run_glue_no_trainer.py) is RECIPE (train.py --recipe released).
5. The speedup: the released code counts kept tokens while its accuracy comes from the pass of point 1, which
   computed every token. Here both passes report the FLOPs their decisions would cost with the skimmed tokens
   removed (flops.py, no padding); only `infer` is that cost.

With both switches off, forward computes exactly skim.Transkimmer.forward for the same decisions (the tests
show it), so what each departure contributes can be measured one at a time (notebook 5).

Shapes: B batch, N padded length, d hidden size, nh heads, L layers.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import skim
from model import Output, carry_forward, padding_bias

TAU = 1.0   # the released code's Gumbel-softmax temperature (the paper: 0.1)
MU0 = skim.MU0_PAPER  # its unbalanced init (init_skim_predictor's mean_bias), the paper's (Eq. 9)
SAMPLINGS = 5  # evaluations of the released pass with sampled decisions, each with its own draws
# --recipe released: the authors' training script (scripts/run_glue.sh and src/run_glue_no_trainer.py), not ours, as
# train.py flags: one skim stage from the pretrained checkpoint, lambda 0.5 on every task, batch 32 x 2 accumulation
# steps (here one batch of 64, drawn at random), lr 2e-5, AdamW without weight decay, no warm-up, linear decay, no
# clipping, the released tau and init, in float32; 5 epochs on MRPC and WNLI (EPOCHS), else 3
RECIPE = {"--lr": 2e-5, "--batch-size": 64, "--skim-coef": 0.5, "--warmup": 0.0, "--weight-decay": 0.0,
          "--max-grad-norm": 0.0, "--tau": TAU, "--mu0": MU0, "--predictor-grad": "joint", "--precision": "fp32",
          "--group-by-length": False}
EPOCHS = {"mrpc": 5, "wnli": 5}


def unnormalised_attention(attn, x, pad_bias, keep):
    """The released skim attention (point 2): model.SelfAttention.forward with the probabilities multiplied by
    the keep mask after the softmax and not renormalised, so the skimmed keys stay in each softmax's
    denominator. x (B, N, d), pad_bias (B, 1, 1, N), keep (B, N) -> (B, N, d)."""
    B, N, d = x.shape
    nh, hs = attn.n_head, d // attn.n_head
    q, k, v = (t.view(B, N, nh, hs).transpose(1, 2) for t in attn.qkv(x).split(d, dim=2))  # 3 x (B, nh, N, hs)
    att = F.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs)) + pad_bias, dim=-1)  # (B, nh, N, N)
    att = att * keep[:, None, None, :]                                             # no renormalisation
    y = attn.dropout(att) @ v                                                      # (B, nh, N, hs)
    return attn.out(y.transpose(1, 2).reshape(B, N, d))                            # (B, N, d)


def released_layer(layer, x, pad_bias, keep, renormalise):
    """model.Layer.forward with skim attention renormalised (skim.py's, Eq. 4) or not (the released code's)."""
    if renormalise:
        return layer(x, pad_bias, keep)
    x = layer.attn_norm(x + layer.dropout(unnormalised_attention(layer.attn, x, pad_bias, keep)))  # (B, N, d)
    return layer.ffn_norm(x + layer.dropout(layer.ffn(x)))                         # (B, N, d)


def updated_stream(keep, processed, previous_out):
    """Point 1: the stream every layer reads is the layer's output for every token, skimmed or not; only the
    output copy the classifier reads freezes a skimmed token (Eq. 3 applied to the copy alone).
    -> (the next stream (B, N, d), the next output copy (B, N, d))."""
    return processed, carry_forward(keep, processed, previous_out)


def released_skim_loss(keeps):
    """The released skim loss (point 3): per layer, the batch's mean count of kept positions, padding included
    (the predictors decide on padding too), over the padded length N; averaged over the layers. keeps: L (B, N)."""
    return torch.stack([keep.sum(1).mean() / keep.shape[1] for keep in keeps]).mean()


class Released(skim.Transkimmer):
    """skim.Transkimmer's predictors and honest `infer`, with the released code's forward. Switches (True: the
    released code's): `stream` (point 1), `renormalise` (False: point 2), `sampled_eval` (point 3)."""

    config_key = "released"  # config.json keeps its settings under this key: a saved Released is known by it
    SWITCHES = ("stream", "renormalise", "sampled_eval")  # saved beside tau and mu0, restored by from_pretrained

    def __init__(self, bert, tau=TAU, mu0=MU0):
        super().__init__(bert, tau=tau, mu0=mu0)
        self.stream = True          # every token updated in every layer
        self.renormalise = False    # skim attention not renormalised
        self.sampled_eval = True    # decisions sampled at evaluation too (False: the argmax)

    def released_decision(self, predictor, x):
        """(B, N, d) -> (B, N) in {0, 1}: the straight-through Gumbel-softmax sample (Eq. 5, as
        F.gumbel_softmax(hard=True) computes it), in training and, with sampled_eval, in evaluation; else the
        evaluation's decision of skim.Transkimmer (the argmax at keep_threshold 0.5)."""
        if not (self.training or self.sampled_eval):
            return self.decide(predictor, x)
        if self.predictor_grad == "separate" or not self.training:
            x = x.detach()
        return skim.straight_through_gumbel_softmax(predictor(x), self.tau)[..., 1]  # (B, N)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, decisions=None):
        """The released encoder loop (points 1 to 3; each switch off gives skim.Transkimmer.forward's step).
        `decisions`: optional L (B, N) 0/1 tensors used instead of the predictors'. Output.masks are the real
        tokens each layer kept (what flops.py counts); aux_loss is the released skim loss."""
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        pad = attention_mask.to(x.dtype)                                           # (B, N)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        stream, out = x, x                  # what the layers read; the copy the classifier reads (equal if not stream)
        keep = torch.ones_like(pad)         # the released masks start with every position, padding too
        keeps = []
        for i, (predictor, layer) in enumerate(zip(self.predictors, bert.layers)):
            decision = decisions[i] if decisions is not None else self.released_decision(predictor, stream)
            keep = skim.update_keep(keep, decision)                                # (B, N), [CLS] kept
            processed = released_layer(layer, stream, pad_bias, keep, self.renormalise)  # (B, N, d)
            if self.stream:
                stream, out = updated_stream(keep, processed, out)
            else:
                stream = out = carry_forward(keep, processed, stream)              # (B, N, d): Eq. 3
            keeps.append(keep)
        logits = bert.classify(bert.pool(out[:, 0]))                               # (B, num_labels)
        return Output(logits, [keep * pad for keep in keeps], released_skim_loss(keeps))

    def scored(self, evaluate, seed):
        """The model scored three ways on the same weights (recipe.report): evaluate(model) -> a result dict.
        released_sampled: the released pass as the paper evaluated it, decisions sampled, SAMPLINGS times
        (seeds seed, seed + 1, ...); released_argmax: the released pass, argmax decisions; honest: real pruning
        (infer, argmax), what is deployed. Each with the FLOPs of the decisions it took."""
        kept, sampled = self.sampled_eval, []
        try:
            self.sampled_eval = True
            for k in range(SAMPLINGS):
                with torch.random.fork_rng():
                    torch.manual_seed(seed + k)
                    sampled.append(evaluate(self))
            self.sampled_eval = False
            argmax = evaluate(self)
        finally:
            self.sampled_eval = kept
        return {"released_sampled": sampled, "released_argmax": argmax, "honest": evaluate(Deployed(self))}

    @staticmethod
    def scored_line(scored, metric):
        """One line on the model scored three ways (`scored`), for the run's last line."""
        sampled = [r[metric] for r in scored["released_sampled"]]
        speedups = [r["flops_speedup"] for r in scored["released_sampled"]]
        return (f"released pass, sampled x{len(sampled)}: {metric} {np.mean(sampled):.4f} +- "
                f"{np.std(sampled, ddof=1):.4f} at {np.mean(speedups):.2f}x; argmax: "
                f"{scored['released_argmax'][metric]:.4f} at {scored['released_argmax']['flops_speedup']:.2f}x; "
                f"honest pruning: {scored['honest'][metric]:.4f} at {scored['honest']['flops_speedup']:.2f}x")


class Deployed(nn.Module):
    """A method's `infer` (real pruning) seen as its forward, so that recipe.evaluate scores what is deployed."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.method.infer(input_ids, attention_mask, token_type_ids)

    def flops_counter(self, seq_len=None, last_layer="all"):
        return self.method.flops_counter(seq_len, last_layer)
