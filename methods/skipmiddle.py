"""
Skipping the middle layers (Lawson, Farnik, Houghton and Aitchison, 2025, "Learning to Skip the Middle Layers
of Transformers"; code: tim-lawson/skip-middle), a method behind the method interface (methods/__init__.py).

Each of the first G = L // 2 layers i has a gate, a Linear(d, 1) on every token's state entering it. Their
increments add up, and the token's gate for layer i is

    m_i = sum_{j <= i} max(w_j . h_j + b_j, 0)        g_i = 1 - clamp(m_i, 0, 1)        (`increment`, `gate_of`)

Layer L - 1 - i reuses g_i (`gate_index`): once a token's gate is 0 it stays 0 to the middle, so the layers it
skips form one span around the middle, and it comes back after it with the state it left with (a token closed at
the first gate, which layer L - 1 reuses, is in no layer at all). A layer takes its output in by the gate, and
the other tokens attend to it with weight g (skim attention, Eq. 4 of Transkimmer, with the gate as `keep`: a
key bias of log g):

    x <- x + g_i (Layer(x) - x)

so a token whose gate is exactly 0 is out of the layer altogether: nothing reads its query, key, value or
feed-forward, and `infer` does not compute them; a layer that no token of the batch needs is not run. flops.py
counts layer i on the tokens whose g_i > 0 (`masks`): a gate that is not exactly zero pays for the whole layer.

Where this differs from theirs (docs/method.md):
- The gate acts on keys. Theirs adds log g by *query* position (score_mod[b, q_idx]), the same number along a
  softmax row, which the softmax cancels (`attention_with_gate`; tests/test_skipmiddle.py): the other tokens
  go on attending to a skipped token's stale state. On keys they stop, which is also what lets `infer` leave
  the token out of the layer's keys and values.
- The layer is gated whole, not each sublayer: BERT is post-norm (x <- norm(x + sublayer(x))) and was
  pretrained without their "sandwich" norms; x + g (Layer(x) - x) is the pretrained layer at g = 1.
- The increment is clamp(z, min=0), not ReLU(z): the same values, but at z = 0 its gradient is 1, not 0, so
  gates started at w = b = 0 (exactly open: the model computes what the dense model does) still learn.
- [CLS] is gated like every other token; when its gate closes, the classifier reads the state it left with.
- The loss: the mean gate over layers and real tokens (`aux_loss`), weighed by lambda, which the recipe's
  controller steers towards --target-speedup as for Transkimmer; not their per-layer mean and variance
  terms, each with a coefficient of its own.
- The operating point: at keep_threshold t every increment is scaled by t / (1 - t) (1 at t = 0.5): higher
  closes more gates, so recipe.calibrate_threshold can set a trained model to a FLOPs speedup, and
  freeze folds the scale into w and b (c max(z, 0) = max(c z, 0) for c > 0).

Shapes: B batch, N padded length, d hidden size, nh heads, T tokens of a packed batch.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import flops
import skim
from checkpoint import added_tensors, load_added, read_checkpoint, split_added
from model import BertForSequenceClassification, Output, carry_forward, first_rows, pack, padding_bias

GATE_PREFIX = "skipmiddle."  # the gates' tensors in model.safetensors


def gate_index(i, num_layers):
    """The gate layer i uses: its own in the first half, the mirror's (L - 1 - i) in the second; an odd stack's
    middle layer uses the last gate's."""
    return min(i, num_layers - 1 - i, num_layers // 2 - 1)


def increment(gate, h, scale=1.0):
    """A gate's increment to m on the states h (..., d) -> (...): scale * max(w . h + b, 0), written as a
    clamp so that its gradient at 0 is 1 (ReLU's is 0, and the gates start at w = b = 0)."""
    return scale * gate(h).squeeze(-1).clamp(min=0)


def gate_of(m):
    """g = 1 - clamp(m, 0, 1): 1 (open) while m <= 0, exactly 0 (closed) from m = 1 on."""
    return 1 - m.clamp(0, 1)


def mean_gate(gates, attention_mask):
    """The method's loss: the mean gate over layers and real tokens, gates L (B, N) (in float32 at least)."""
    pad = attention_mask.to(torch.promote_types(gates[0].dtype, torch.float32))   # (B, N)
    return torch.stack([(g * pad).sum() / pad.sum() for g in gates]).mean()


def attention_with_gate(scores, gate, side):
    """Softmax attention probabilities from scores (B, nh, N, N), queries by keys, with the gate (B, N) added as
    a bias log g by query position (side "query", theirs) or by key position ("key", this file's): the first
    is constant along each row, so the softmax cancels it. For the demonstration and its test."""
    log_g = gate.to(scores.dtype).clamp_min(torch.finfo(scores.dtype).tiny).log()  # (B, N)
    bias = log_g[:, None, :, None] if side == "query" else log_g[:, None, None, :]  # (B, 1, N, 1) or (B, 1, 1, N)
    return F.softmax(scores + bias, dim=-1)                                        # (B, nh, N, N)


class GateFlopsCounter(flops.FlopsCounter):
    """flops.py's count, with the gates as the predictors: Linear(d, 1) on the tokens entering each of the first
    L // 2 layers (those whose last gate was open: a closed one stays closed to the middle)."""

    def predictor_cost(self, entering, i):
        return 2 * entering * self.config.hidden_size * (i < self.config.num_hidden_layers // 2)


class SkipMiddle(nn.Module):
    """A BertForSequenceClassification whose first L // 2 layers each have a gate, closing for a token the span
    of layers around the middle (module docstring); a method behind the method interface (methods/__init__.py)."""

    config_key = "skipmiddle"  # config.json marks a saved SkipMiddle by it (its gates are tensors)

    def __init__(self, bert):
        super().__init__()
        L, d = bert.config.num_hidden_layers, bert.config.hidden_size
        if L < 2:
            raise ValueError(f"skipping the middle layers needs at least 2 layers, got {L}")
        self.bert = bert
        self.gates = nn.ModuleList(nn.Linear(d, 1) for _ in range(L // 2))
        for gate in self.gates:  # exactly open: the model computes what the dense one does
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
        self.keep_threshold = skim.KEEP_THRESHOLD  # the operating point: higher closes more gates

    @classmethod
    def wrap(cls, bert, settings=None):
        return cls(bert)

    @property
    def config(self):
        return self.bert.config

    @property
    def scale(self):
        """The increments' scale at keep_threshold t: t / (1 - t), 1 at 0.5."""
        return self.keep_threshold / (1 - self.keep_threshold)

    @torch.no_grad()
    def freeze(self, keep_threshold):
        """Make `keep_threshold` the model's own operating point: its scale folded into w and b, so the model
        at 0.5 decides as this one at keep_threshold, and so does the saved model; the gates stop learning (a
        frozen stage trains the encoder under them)."""
        c = keep_threshold / (1 - keep_threshold)
        for gate in self.gates:
            gate.weight.mul_(c)
            gate.bias.mul_(c)
        self.keep_threshold = skim.KEEP_THRESHOLD
        self.gates.requires_grad_(False)

    def added_parameters(self):
        return list(self.gates.parameters())

    def flops_counter(self, seq_len=None, last_layer="all"):
        return self.counter(self.config, seq_len, last_layer)

    @classmethod
    def counter(cls, config, seq_len=None, last_layer="all"):
        return GateFlopsCounter(config, seq_len, predictors=True, last_layer=last_layer)

    FASTEST = "every gate closed at the first layer: no layer run"

    @staticmethod
    def fastest_masks(config, attention_mask):
        """The most this method can skip (recipe.reachable_speedup), FASTEST: L masks (B, N), all 0; the first
        gate still reads every token."""
        return [torch.zeros_like(attention_mask, dtype=torch.float)] * config.num_hidden_layers

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Training, and the reference for infer (gated, without the gates)."""
        return self.gated(input_ids, attention_mask, token_type_ids)[0]

    def gated(self, input_ids, attention_mask=None, token_type_ids=None):
        """All N positions through every layer, each layer's output taken in by the gate and the keys weighed
        by it (skim attention). -> (the Output, the gates: L tensors (B, N), g_i, 0 on padding)."""
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        pad = attention_mask.to(x.dtype)                                           # (B, N)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        m, own, gates = 0, [], []
        for i, layer in enumerate(bert.layers):
            if i < len(self.gates):
                m = m + increment(self.gates[i], x, self.scale)                    # (B, N)
                own.append(gate_of(m) * pad)                                       # (B, N): g_i
            g = own[gate_index(i, len(bert.layers))]                               # (B, N)
            x = carry_forward(g, layer(x, pad_bias, g), x)                         # (B, N, d)
            gates.append(g)
        logits = bert.classify(bert.pool(x[:, 0]))                                 # (B, num_labels)
        masks = [(g > 0).to(x.dtype) for g in gates]
        return Output(logits, masks, mean_gate(gates, attention_mask)), gates

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask=None, token_type_ids=None):
        """Inference with the skipped work removed: every real token packed (model.pack) into a state (T, d)
        that each layer reads its tokens from and writes them back to; layer i runs on exactly the tokens
        whose g_i > 0, a layer with none is not run, and the gates are computed only for the tokens whose
        last gate was open. The last layer computes [CLS]'s output alone, where [CLS]'s gate is open
        (flops.py's "cls"). The same logits (to float rounding) as forward() in eval mode."""
        assert not self.training, "infer is for inference; call .eval() first"
        bert = self.bert
        x, attention_mask = bert.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        B, N, _ = x.shape
        state, rows, lengths = pack(x, attention_mask)                             # (T, d), (T,), B ints
        example = rows // N                                                        # (T,)
        cls = first_rows(lengths, x.device)                                        # (B,): each [CLS]'s row
        m = state.new_zeros(len(state))                                            # (T,)
        own, processed, last = [], [], len(bert.layers) - 1
        for i, layer in enumerate(bert.layers):
            if i < len(self.gates):
                entering = (own[-1] > 0).nonzero()[:, 0] if own else None         # (T',) or all
                h = state if entering is None else state.index_select(0, entering)
                inc = increment(self.gates[i], h, self.scale)                      # (T',)
                m = m + inc if entering is None else m.index_add(0, entering, inc)
                own.append(gate_of(m))                                             # (T,)
            g = own[gate_index(i, len(bert.layers))]                               # (T,)
            needed = g > 0
            if i == last:  # only [CLS]'s output is read: the examples whose [CLS] computes this layer
                needed &= needed.index_select(0, cls).index_select(0, example)
            active = needed.nonzero()[:, 0]                                        # (T_i,) rows, example by example
            processed.append(rows.index_select(0, active))
            if not len(active):  # no token of the batch needs this layer
                continue
            xs, gs = state.index_select(0, active), g.index_select(0, active)      # (T_i, d), (T_i,)
            counts = torch.bincount(example.index_select(0, active), minlength=B).tolist()
            if i < last:
                ys = layer.infer(xs, counts, key_bias=gs.log())                   # (T_i, d)
                state = state.index_copy(0, active, xs + gs[:, None] * (ys - xs))
            else:
                starts = first_rows(counts, x.device)                              # (B,): [CLS]'s rows in xs
                heads = starts[torch.tensor(counts, device=x.device) > 0]           # the examples with a [CLS]
                ys = layer.infer(xs, counts, heads, key_bias=gs.log())            # (B', d)
                rows_cls = active.index_select(0, heads)                           # (B',) their rows in state
                x_cls, g_cls = state.index_select(0, rows_cls), g.index_select(0, rows_cls)
                state = state.index_copy(0, rows_cls, x_cls + g_cls[:, None] * (ys - x_cls))
        logits = bert.classify(bert.pool(state.index_select(0, cls)))              # (B, num_labels)
        return Output(logits, processed=processed, attention_mask=attention_mask)

    # checkpoint I/O: a BERT checkpoint in the HF layout, plus the gates under "skipmiddle." (HF's loaders
    # ignore them and load the BERT part)
    @classmethod
    def from_pretrained(cls, name_or_path=None, num_labels=None, **_):
        """A saved SkipMiddle (its gates), or any checkpoint model.py loads (gates open). Other methods'
        settings (tau, mu0) are not this method's and are ignored."""
        folder, config, tensors = read_checkpoint(name_or_path)
        if num_labels is not None:
            config["num_labels"] = num_labels
        gate_tensors, bert_tensors = split_added(tensors, GATE_PREFIX)
        model = cls(BertForSequenceClassification.from_tensors(folder, config, bert_tensors,
                                                               source=str(name_or_path or folder)))
        if gate_tensors:
            load_added(model.gates, gate_tensors, folder, "gates")
        return model.eval()

    def save_pretrained(self, directory, tokenizer=None):
        self.bert.save_pretrained(directory, tokenizer, extra_config={self.config_key: {"gates": len(self.gates)}},
                                  extra_tensors=added_tensors(self.gates, GATE_PREFIX))
