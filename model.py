"""
A from-scratch BERT encoder (Devlin et al., 2019) in plain PyTorch that loads Hugging Face
`safetensors` checkpoints and computes what `transformers`' BertModel computes.

Contents, top to bottom:
  BertConfig                  the hyper-parameters, read from / written to HF's config.json
  Embeddings, SelfAttention,  the modules; shapes are written next to the lines that make them
  FeedForward, Layer
  pack, first_rows            a padded batch as one (T, d) tensor of its real tokens, for the .infer paths
  Bert                        embeddings -> L layers -> pooler; returns (hidden (B,N,d), pooled (B,d))
  BertForSequenceClassification  Bert + dropout + Linear(d, num_labels) (num_labels == 1: regression)
                              .infer: the same logits at inference, with less work (see below)
Loading and saving (the HF folder layout, the explicit weight-name map) live in checkpoint.py.

Transkimmer (skim.py) reuses these modules unchanged; the only thing it needs from this file
is the `keep` argument of SelfAttention (skim attention, Eq. 4 of Guan et al., 2022).

Inference only (not in BERT's paper, no change to what is computed): each module's `infer` gives
forward's result in eval mode with less work. The batch's real tokens are packed into one (T, d)
tensor (`pack`): the projections and feed-forward run on exactly the T tokens, attention is one fused
call (F.scaled_dot_product_attention) per example, and the classifier's last layer computes the output
of [CLS] alone, the only token it reads (keys and values still come from every token). skim.py's
pruned inference runs the same `Layer.infer` on the kept tokens, so dense and pruned are timed with
the same tricks; flops.py counts the last layer this way under its "cls" convention.

References: BERT (arXiv:1810.04805); HF `transformers/models/bert/modeling_bert.py` for numerics.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoint
from checkpoint import ModelError

# -----------------------------------------------------------------------------
# config

@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768               # d
    num_hidden_layers: int = 12          # L
    num_attention_heads: int = 12        # h
    intermediate_size: int = 3072        # d_ff
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    num_labels: int = 2
    finetuning_task: str | None = None  # the GLUE task train.py fine-tuned it on (HF's name for this field)

    @classmethod
    def from_dict(cls, d, source="config"):
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ModelError(f"{source}: model_type is '{model_type}', but this code implements BERT only "
                             "(model_type 'bert')")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ModelError(f"{source}: position_embedding_type '{d['position_embedding_type']}' is not "
                             "supported (only 'absolute')")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "num_labels" not in d and "id2label" in d:  # HF stores the number of labels as len(id2label)
            if not isinstance(d["id2label"], dict):
                raise ModelError(f"{source}: id2label must be an object (label index -> name), got {d['id2label']!r}")
            kwargs["num_labels"] = len(d["id2label"])
        for name, value in kwargs.items():
            if (why := cls.invalid(name, value, kwargs)) is not None:
                raise ModelError(f"{source}: {name} must be {why}, got {value!r}"[:300])
        config = cls(**kwargs)
        if config.hidden_act not in ACTIVATIONS:
            raise ModelError(f"{source}: hidden_act '{config.hidden_act}' is not supported "
                             f"(choose from {sorted(ACTIVATIONS)})")
        if config.hidden_size % config.num_attention_heads:
            raise ModelError(f"{source}: hidden_size {config.hidden_size} is not divisible by "
                             f"num_attention_heads {config.num_attention_heads}")
        return config

    SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "num_labels")
    FRACTIONS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")

    @classmethod
    def invalid(cls, name, value, values):
        """What a value read from config.json must be, if it is not that (None if it is). values: the others."""
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if name in cls.SIZES:
            return None if whole and value >= 1 else "a whole number, at least 1"
        if name == "pad_token_id":
            vocab = values.get("vocab_size", cls.vocab_size)
            fits = whole and isinstance(vocab, int) and 0 <= value < vocab
            return None if fits else f"a token id, from 0 to vocab_size - 1 ({vocab})"
        if name in cls.FRACTIONS:
            unset = value is None and name == "classifier_dropout"  # None: hidden_dropout_prob's
            return None if unset or number and 0 <= value < 1 else "a probability in [0, 1)"
        if name in ("layer_norm_eps", "initializer_range"):
            return None if number and value > 0 else "a number above 0"
        if name in ("hidden_act", "finetuning_task"):
            unset = value is None and name == "finetuning_task"
            return None if unset or isinstance(value, str) else "a string"
        return None

    def to_dict(self, architecture):
        d = asdict(self)
        num_labels = d.pop("num_labels")
        d.update(model_type="bert", architectures=[architecture], position_embedding_type="absolute",
                 id2label={str(i): f"LABEL_{i}" for i in range(num_labels)},
                 label2id={f"LABEL_{i}": i for i in range(num_labels)})
        return d


ACTIVATIONS = {
    "gelu": F.gelu,                                             # exact, erf-based (BERT's)
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}

# -----------------------------------------------------------------------------
# modules

class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)    # (N,)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)  # (B, N, d)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention followed by the output projection (HF's BertAttention minus the norm)."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.n_head = config.num_attention_heads
        self.qkv = nn.Linear(d, 3 * d)  # query, key and value projections in one matmul (HF keeps three)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x, pad_bias, keep=None, with_probs=False):
        """x (B, N, d); pad_bias (B, 1, 1, N): 0 for real keys, a large negative number for padding.
        keep (B, N) in [0, 1] or None: skim attention (Eq. 4), used by skim.py: attention to skimmed
        keys is multiplied by 0 and the rest renormalised, so the kept tokens see exactly what they
        would see if the skimmed ones had been removed, and the gradient still reaches `keep`.
        with_probs: also return the attention probabilities (B, nh, N, N), before dropout (methods/topk.py's hook)."""
        B, N, d = x.shape
        nh, hs = self.n_head, d // self.n_head
        q, k, v = (t.view(B, N, nh, hs).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))  # 3 x (B, nh, N, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))                    # (B, nh, N, N)
        att = F.softmax(att + pad_bias, dim=-1)
        if keep is not None:
            att = att * keep[:, None, None, :]                                     # (B, nh, N, N)
            # [CLS] is always kept, so the sum is positive; the clamp only guards against underflow
            att = att / att.sum(-1, keepdim=True).clamp_min(torch.finfo(att.dtype).tiny)
        y = self.dropout(att) @ v                                                  # (B, nh, N, hs)
        y = self.out(y.transpose(1, 2).reshape(B, N, d))                           # (B, N, d)
        return (y, att) if with_probs else y

    def infer(self, x, lengths, cls_rows=None, key_bias=None):
        """Inference only: forward in eval mode on a packed batch x (T, d) of `lengths` tokens per example
        (`pack`; 0 allowed), each example attending over its own tokens (packed_attention). cls_rows: the
        output of each non-empty example's [CLS] alone (its row in x), for a [CLS] classifier's last layer:
        only those queries are projected; keys and values still come from all T tokens. key_bias (T,): added
        to every score of each key (methods/skipmiddle.py's log gate). -> (T, d), or (len(cls_rows), d)."""
        d = x.shape[1]
        w, b = self.qkv.weight, self.qkv.bias                                      # (3d, d), (3d,): q, k, v rows
        if cls_rows is not None:
            q = F.linear(x.index_select(0, cls_rows), w[:d], b[:d])                # (B, d)
            k, v = F.linear(x, w[d:], b[d:]).split(d, dim=1)                       # 2 x (T, d)
            q_lengths = [min(n, 1) for n in lengths]
        else:
            q, k, v = F.linear(x, w, b).split(d, dim=1)                            # 3 x (T, d)
            q_lengths = lengths
        q, k, v = (t.view(-1, self.n_head, d // self.n_head) for t in (q, k, v))    # (Tq or T, nh, hs)
        return self.out(packed_attention(q, k, v, q_lengths, lengths, key_bias))      # (Tq, d)


def packed_attention(q, k, v, q_lengths, lengths, key_bias=None):
    """Attention within each example of a packed batch: q (Tq, nh, hs) holds q_lengths queries per example,
    k and v (T, nh, hs) `lengths` keys and values, in nh heads of hs; key_bias (T,) or None. One fused call per
    example that has queries, with no mask: the example's own tokens are all there is. -> (Tq, d), d = nh hs."""
    d = q.shape[1] * q.shape[2]
    biases = [None] * len(lengths) if key_bias is None else key_bias.split(lengths)  # views: nothing copied
    ys = []
    parts = (zip(q.split(q_lengths), k.split(lengths), v.split(lengths), biases) if len(lengths) > 1
             else [(q, k, v, key_bias)])
    for qi, ki, vi, bi in parts:                                                   # one example at a time
        if len(qi):  # 4-d, a batch of one: torch's CPU kernel is slower on 3-d inputs (results/packed_attention.py)
            qi, ki, vi = (t[None].transpose(1, 2) for t in (qi, ki, vi))               # (1, nh, m or n, hs)
            mask = None if bi is None else bi.view(1, 1, 1, -1)
            ys.append(F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask).transpose(1, 2).reshape(-1, d))
    return ys[0] if len(ys) == 1 else torch.cat(ys)                                # (Tq, d)


class FeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.down(self.act(self.up(x)))                                     # (B, N, d)


class Layer(nn.Module):
    """One post-norm Transformer encoder layer, as in BERT."""

    def __init__(self, config):
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, pad_bias, keep=None, with_probs=False):
        """-> (B, N, d); with_probs, also the attention probabilities (SelfAttention.forward)."""
        h = self.attn(x, pad_bias, keep, with_probs=True) if with_probs else self.attn(x, pad_bias, keep)
        h, probs = h if with_probs else (h, None)                                  # (B, N, d), (B, nh, N, N) or None
        x = self.attn_norm(x + self.dropout(h))                                    # (B, N, d)
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))                           # (B, N, d)
        return (x, probs) if with_probs else x

    def infer(self, x, lengths, cls_rows=None, key_bias=None):
        """Inference only: forward in eval mode on a packed batch (SelfAttention.infer); with cls_rows, the
        output of each example's [CLS] alone, (B, d), the rest of the layer running on those B rows."""
        h = self.attn.infer(x, lengths, cls_rows, key_bias)                        # (Tq, d)
        x = self.attn_norm((x if cls_rows is None else x.index_select(0, cls_rows)) + h)  # (Tq, d)
        return self.ffn_norm(x + self.ffn(x))                                      # (Tq, d)


def pack(x, attention_mask=None):
    """A padded batch x (B, N, d) -> its T real tokens in one (T, d) tensor, example after example (what
    the inference paths run on: no layer computes padding); rows (T,), each one's index b * N + position
    in the flattened batch; lengths, the B examples' token counts as Python ints."""
    B, N, d = x.shape
    if attention_mask is None or bool(attention_mask.all()):  # nothing to remove (one sentence never has padding)
        return x.reshape(B * N, d), torch.arange(B * N, device=x.device), [N] * B
    rows = attention_mask.reshape(-1).nonzero()[:, 0]                              # (T,)
    return x.reshape(B * N, d).index_select(0, rows), rows, attention_mask.sum(1).tolist()


def first_rows(lengths, device):
    """The row of each example's first token ([CLS]) in a packed batch of these lengths: (B,)."""
    return torch.tensor([0] + lengths[:-1], device=device).cumsum(0)               # (B,)


def padding_bias(attention_mask, dtype):
    """(B, N) 1/0 mask -> (B, 1, 1, N) additive bias: 0 for real tokens, the dtype's minimum for
    padding (as HF does), so padded keys get exactly zero attention after the softmax."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class Bert(nn.Module):
    """The BERT encoder with its pooler. forward -> (hidden (B, N, d), pooled (B, d))."""

    architecture = "BertModel"

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.tokenizer = None  # set by from_pretrained when the checkpoint folder has one
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # HF's BertPreTrainedModel._init_weights, so a model built from a config starts like HF's
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def pool(self, cls):
        """The pooler on each example's final [CLS] state, cls (B, d)."""
        return torch.tanh(self.pooler(cls))                                        # (B, d)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> (the embeddings (B, N, d), attention_mask), the masks defaulting as BERT's: no padding, segment 0."""
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.embeddings(input_ids, token_type_ids), attention_mask

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x, attention_mask = self.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        for layer in self.layers:
            x = layer(x, pad_bias)                                                 # (B, N, d)
        return x, self.pool(x[:, 0])

    # checkpoint I/O (checkpoint.py), the same for Bert and BertForSequenceClassification
    @classmethod
    def from_pretrained(cls, name_or_path=None, **config_overrides):
        """A checkpoint folder, a hub id, or (None) the embedded default; config_overrides replace
        config.json's values (num_labels=3, say)."""
        folder, config_dict, tensors = checkpoint.read_checkpoint(name_or_path)
        config_dict.update({k: v for k, v in config_overrides.items() if v is not None})
        return cls.from_tensors(folder, config_dict, tensors, source=str(name_or_path or folder))

    @classmethod
    def from_tensors(cls, folder, config_dict, tensors, source):
        """Build the model of config_dict and copy in the checkpoint tensors (HF names), every name and shape
        checked (checkpoint.load_weights); the folder's tokenizer comes along if it has one."""
        config = BertConfig.from_dict(config_dict, source=str(folder / "config.json"))
        checkpoint.check_sizes(config, tensors, folder)  # before the model is built: a size too large to allocate
        model = cls(config)
        checkpoint.load_weights(model, tensors, source)
        model.tokenizer = checkpoint.load_tokenizer(folder) if checkpoint.has_tokenizer(folder) else None
        if model.tokenizer is not None:
            checkpoint.check_token_ids(model.tokenizer, config.vocab_size, folder)
        return model.eval()

    def save_pretrained(self, directory, tokenizer=None, extra_config=None, extra_tensors=None):
        """The HF layout; extra_config/extra_tensors let a method (skim.py) store its own beside BERT's."""
        config = self.config.to_dict(self.architecture) | (extra_config or {})
        tensors = checkpoint.hf_state_dict(self) | (extra_tensors or {})
        checkpoint.save(directory, config, tensors, tokenizer or self.tokenizer)


class BertForSequenceClassification(Bert):
    """Bert + dropout + Linear(d, num_labels) on the pooled [CLS] vector. forward -> logits (B, num_labels).
    num_labels == 1 means regression (STS-B)."""

    architecture = "BertForSequenceClassification"

    def __init__(self, config):
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.classifier_dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init_weights(self.classifier)

    def classify(self, pooled):
        return self.classifier(self.classifier_dropout(pooled))                    # (B, num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        _, pooled = super().forward(input_ids, attention_mask, token_type_ids)
        return self.classify(pooled)

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask=None, token_type_ids=None):
        """Inference only (no autograd): forward's logits in eval mode, with less work: the real tokens
        packed (`pack`), Layer.infer throughout, the last layer on [CLS] alone (the pooler reads nothing else)."""
        assert not self.training, "infer is for inference; call .eval() first"
        x, attention_mask = self.embed(input_ids, attention_mask, token_type_ids)  # (B, N, d), (B, N)
        x, _, lengths = pack(x, attention_mask)                                    # (T, d)
        for layer in self.layers[:-1]:
            x = layer.infer(x, lengths)                                            # (T, d)
        x = self.layers[-1].infer(x, lengths, first_rows(lengths, x.device))       # (B, d): [CLS] alone
        return self.classify(self.pool(x))                                         # (B, num_labels)


def keep_layers(model, layers):
    """A smaller dense model, in place: only the encoder layers with these indices (increasing), in that
    order; embeddings, pooler and classifier unchanged. Saved, it is an ordinary BERT of len(layers) layers."""
    model.layers = nn.ModuleList(model.layers[i] for i in layers)
    model.config.num_hidden_layers = len(layers)
    return model


# -----------------------------------------------------------------------------
# what every method behind the interface (methods/__init__.py) returns, and the two pieces they all share

class Output:
    """What every method's forward and infer return. logits (B, num_labels); masks, L tensors (B, N): masks[i]
    is 1 where layer i computed the token's output (what flops.py counts); aux_loss, the method's own loss, which
    the loop weighs by lambda (Transkimmer: the skim loss, Eq. 6), 0 for a method without one.

    A packed inference path (`infer`) gives instead of the masks the rows each layer ran on, `processed` (L
    tensors (T_i,), each row's index b * N + position), and the attention mask (B, N): the masks are built
    from them when first read (one index_fill per layer), and an aux_loss given as a function of the masks
    is computed then, so that a caller who wants the logits alone does not pay for either."""

    def __init__(self, logits, masks=None, aux_loss=None, processed=None, attention_mask=None):
        self.logits = logits                                                       # (B, num_labels)
        self._masks, self._aux_loss = masks, aux_loss
        self.processed, self.attention_mask = processed, attention_mask

    @property
    def masks(self):
        if self._masks is None:
            pad = self.attention_mask.to(self.logits.dtype)                        # (B, N)
            self._masks = [pad.new_zeros(pad.numel()).index_fill_(0, rows, 1).view_as(pad) for rows in self.processed]
        return self._masks

    @property
    def aux_loss(self):
        if self._aux_loss is None:
            return self.logits.new_zeros(())
        if callable(self._aux_loss):
            self._aux_loss = self._aux_loss(self.masks)
        return self._aux_loss


def carry_forward(keep, processed, previous):
    """A layer that computes only some tokens: those it keeps take its output, the others carry their state
    forward unchanged, so each token's final state is the one from the last layer that computed it (Eq. 3
    of Transkimmer; top-k's dropped tokens, skip-middle's gated ones likewise). keep (B, N) in [0, 1]."""
    keep = keep[..., None]                                                         # (B, N, 1)
    return keep * processed + (1 - keep) * previous                                # (B, N, d)


def cls_only(attention_mask):
    """(B, N) -> (B, N) float: 1 at [CLS] alone, the mask of a layer that computes nothing else (the most a
    method can skip, for a [CLS] classifier)."""
    only_cls = torch.zeros_like(attention_mask, dtype=torch.float)
    only_cls[:, 0] = 1
    return only_cls
