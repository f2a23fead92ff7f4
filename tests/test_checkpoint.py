"""checkpoint.py: checkpoints in the HF layout round-trip through `transformers` with no missing key and
the same logits, the tokenizer gives HF's token ids, the hub path works offline from a local cache, and
every bad checkpoint is one clear ModelError line."""

import json
import shutil

import pytest
import torch
import transformers

import checkpoint
from checkpoint import ModelError, load_tokenizer
from conftest import padded_batch
from model import Bert, BertForSequenceClassification

TOL = 1e-5


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


SENTENCES = [
    "a gripping, beautifully acted film.",
    "The plot is thin and the jokes fall flat; I wanted my two hours back!",
    "it's not bad",
    "Crème brûlée à la mode, naïve café — 東京 and emojis 🎬 too.",
]


def test_round_trip_through_hf_has_no_missing_keys_and_same_logits(tiny_hf_dir, tmp_path):
    ours = BertForSequenceClassification.from_pretrained(tiny_hf_dir)
    with torch.no_grad():  # make sure the saved weights are ours, not a copy of the file we read
        ours.classifier.bias.add_(0.5)
    ours.save_pretrained(tmp_path)
    hf, info = transformers.BertForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    assert not info["mismatched_keys"]
    ids, mask, types = padded_batch(99, [9, 5])
    with torch.no_grad():
        assert max_abs_diff(ours(ids, mask, types), hf.eval()(input_ids=ids, attention_mask=mask,
                                                              token_type_ids=types).logits) <= TOL
    # and we read back what we wrote
    again = BertForSequenceClassification.from_pretrained(tmp_path)
    for (n, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_base_checkpoint_gets_a_new_classifier_and_says_so(caplog):
    with caplog.at_level("WARNING"):
        m = BertForSequenceClassification.from_pretrained(num_labels=5)
    assert m.classifier.weight.shape == (5, 384)
    assert "classifier.weight" in caplog.text and "newly initialised" in caplog.text


def test_classification_checkpoint_into_encoder_reports_unused_head(tiny_hf_dir, caplog):
    with caplog.at_level("WARNING"):
        Bert.from_pretrained(tiny_hf_dir)
    assert "not used" in caplog.text and "classifier.weight" in caplog.text


def test_regression_head_has_one_output_and_hf_reads_it_as_one_label(tmp_path):
    m = BertForSequenceClassification.from_pretrained(num_labels=1)
    ids, mask, types = padded_batch(1000, [6, 4])
    assert m(ids, mask, types).shape == (2, 1)
    m.save_pretrained(tmp_path)
    assert transformers.BertConfig.from_pretrained(tmp_path).num_labels == 1


# -----------------------------------------------------------------------------
# tokenizer

TOKENIZER_TEXTS = SENTENCES + [
    "   leading and trailing spaces   ",
    "UPPER lower MiXeD 123,456.78 $%&*()",
    "Zürich, São Paulo, Kraków, Ελληνικά, русский, العربية, हिन्दी",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp and zero\u200bwidth",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    " ".join(["word"] * 700),  # longer than the model's 512 positions: must be truncated
]


@pytest.mark.parametrize("max_length", [None, 16])
def test_tokenizer_ids_equal_hf_bert_tokenizer_fast(max_length):
    folder = checkpoint.default_checkpoint_dir()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(folder)
    tok = load_tokenizer()
    if max_length:
        tok.enable_truncation(max_length=max_length)
    for text in TOKENIZER_TEXTS:
        ref = hf_tok(text, truncation=True, max_length=max_length or 512)
        enc = tok.encode(text)
        assert enc.ids == ref["input_ids"], text
        assert enc.type_ids == ref["token_type_ids"]
    a, b = TOKENIZER_TEXTS[1], TOKENIZER_TEXTS[2]
    ref = hf_tok(a, b, truncation=True, max_length=max_length or 512)
    enc = tok.encode(a, b)
    assert enc.ids == ref["input_ids"] and enc.type_ids == ref["token_type_ids"]


def test_vocab_txt_only_folder_tokenizes_like_hf(tmp_path):
    folder = checkpoint.default_checkpoint_dir()
    shutil.copy(folder / "vocab.txt", tmp_path / "vocab.txt")
    hf_tok = transformers.BertTokenizerFast.from_pretrained(tmp_path)  # HF builds it from vocab.txt too
    tok = load_tokenizer(tmp_path)
    for text in TOKENIZER_TEXTS:
        assert tok.encode(text).ids == hf_tok(text, truncation=True, max_length=512)["input_ids"], text


def offline_hub_cache(monkeypatch, cache):
    """Point huggingface_hub at `cache` and forbid the network (its constants are read at import time,
    so set them too, not only the environment)."""
    import huggingface_hub.constants as hub
    for name, value in [("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")]:
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


def test_hub_id_is_resolved_through_the_local_hub_cache(tmp_path, monkeypatch):
    """The hub path, with no network: a repo laid out in a private HF cache, read with HF_HUB_OFFLINE."""
    commit = "0" * 40
    snapshot = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / commit
    shutil.copytree(checkpoint.default_checkpoint_dir(), snapshot,
                    ignore=shutil.ignore_patterns("1_Pooling", "*.md", ".gitattributes"))
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-bert" / "refs" / "main").write_text(commit)
    offline_hub_cache(monkeypatch, tmp_path / "hub")
    m = Bert.from_pretrained("someone/tiny-bert")
    assert m.config.hidden_size == 384 and m.tokenizer is not None


# -----------------------------------------------------------------------------
# bad input: one clear ModelError line each

def one_line_error(fn, *args, **kwargs):
    with pytest.raises(ModelError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_path_is_one_clear_error(tmp_path):
    assert "no such checkpoint folder" in one_line_error(Bert.from_pretrained, str(tmp_path / "nope"))


def test_folder_without_config_is_one_clear_error(tmp_path):
    assert "no config.json" in one_line_error(Bert.from_pretrained, tmp_path)


def test_non_bert_model_type_is_one_clear_error(tiny_hf_dir, tmp_path):
    shutil.copytree(tiny_hf_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert "model_type is 'gpt2'" in one_line_error(Bert.from_pretrained, tmp_path)


def test_wrong_tensor_shape_names_the_tensor(tiny_hf_dir, tmp_path):
    shutil.copytree(tiny_hf_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    message = one_line_error(Bert.from_pretrained, tmp_path)
    assert "encoder.layer.0.intermediate.dense.weight" in message and "(37, 32)" in message


def test_wrong_number_of_labels_is_a_shape_error(tiny_hf_dir):
    assert "classifier.weight" in one_line_error(BertForSequenceClassification.from_pretrained, tiny_hf_dir,
                                                 num_labels=2)


def test_truncated_safetensors_is_one_clear_error(tiny_hf_dir, tmp_path):
    shutil.copytree(tiny_hf_dir, tmp_path, dirs_exist_ok=True)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in one_line_error(Bert.from_pretrained, tmp_path)


def test_checksum_mismatch_on_default_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(checkpoint, "DEFAULT_SHA256", "f" * 64)
    assert "does not match" in one_line_error(Bert.from_pretrained)


def test_the_default_checkpoint_is_hashed_once_however_often_it_is_resolved(monkeypatch):
    """A run resolves the default checkpoint several times (the flags' checks, the model) and hashes its weights
    once; the check against the expected digest is made every time (the test above)."""
    hashed, real = [], checkpoint.hashlib.sha256
    monkeypatch.setattr(checkpoint.hashlib, "sha256", lambda *a: hashed.append(1) or real(*a))
    checkpoint.sha256_of.cache_clear()
    folders = {checkpoint.resolve_checkpoint() for _ in range(3)}
    assert folders == {checkpoint.default_checkpoint_dir()} and len(hashed) == 1

def test_unreachable_hub_id_is_one_clear_error(tmp_path, monkeypatch):
    offline_hub_cache(monkeypatch, tmp_path)
    assert "hub" in one_line_error(Bert.from_pretrained, "bert-base-uncased")


def test_atomic_write_leaves_a_complete_file_with_normal_permissions_or_none(tmp_path):
    target = tmp_path / "metrics.json"
    checkpoint.atomic_write(target, lambda p: open(p, "w").write("{}"))
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, as a plain open() would make it

    def broken(p):
        open(p, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.atomic_write(target, broken)
    assert target.read_text() == "{}"                      # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # and no temp file is left
