"""model.py against Hugging Face `transformers`, the independent reference: same hidden states,
pooled output and logits, on a tiny random model and on the embedded default checkpoint."""

import pytest
import torch
import transformers

import checkpoint
from conftest import padded_batch
from model import Bert, BertConfig, BertForSequenceClassification, keep_layers, padding_bias

TOL = 1e-5
SENTENCES = [
    "a gripping, beautifully acted film.",
    "The plot is thin and the jokes fall flat; I wanted my two hours back!",
    "it's not bad",
    "Crème brûlée à la mode, naïve café — 東京 and emojis 🎬 too.",
]


def max_abs_diff(a, b):
    return (a - b).abs().max().item()


def hf_classifier(path):
    return transformers.BertForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()


@torch.no_grad()
def test_tiny_random_model_matches_hf_on_padded_batch_with_token_types(tiny_hf_dir):
    hf = hf_classifier(tiny_hf_dir)
    ours_enc = Bert.from_pretrained(tiny_hf_dir)
    ours_cls = BertForSequenceClassification.from_pretrained(tiny_hf_dir)
    ids, mask, types = padded_batch(99, [11, 7, 3, 11])
    ref = hf.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    hidden, pooled = ours_enc(ids, mask, types)
    real = mask.bool()  # HF's hidden states at padded positions are as meaningless as ours; compare real tokens
    assert max_abs_diff(hidden[real], ref.last_hidden_state[real]) <= TOL
    assert max_abs_diff(pooled, ref.pooler_output) <= TOL
    logits = ours_cls(ids, mask, types)
    assert logits.shape == (4, 3)
    assert max_abs_diff(logits, hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits) <= TOL


@torch.no_grad()
def test_default_checkpoint_matches_hf_on_real_sentences():
    folder = checkpoint.default_checkpoint_dir()
    hf = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(folder)
    batch = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    ref = hf(**batch)
    ours = Bert.from_pretrained()
    hidden, pooled = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    assert max_abs_diff(hidden[real], ref.last_hidden_state[real]) <= TOL
    assert max_abs_diff(pooled, ref.pooler_output) <= TOL


@torch.no_grad()
def test_default_checkpoint_classifier_logits_match_hf_after_round_trip(tmp_path):
    torch.manual_seed(0)
    ours = BertForSequenceClassification.from_pretrained(num_labels=2)  # head newly initialised
    ours.save_pretrained(tmp_path)
    hf = hf_classifier(tmp_path)
    batch = transformers.BertTokenizerFast.from_pretrained(checkpoint.default_checkpoint_dir())(
        SENTENCES, padding=True, return_tensors="pt")
    ours_logits = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert max_abs_diff(ours_logits, hf(**batch).logits) <= TOL


@torch.no_grad()
@pytest.mark.parametrize("which", ["tiny", "default"])
@pytest.mark.parametrize("kind", ["padded batch", "batch 1", "batch 1, padded"])
def test_fast_inference_logits_match_hf_and_our_forward(tiny_hf_dir, tmp_path, which, kind):
    """BertForSequenceClassification.infer (fused attention, no mask without padding, [CLS] alone in the
    last layer) gives HF eager's logits, and forward's."""
    if which == "default":
        torch.manual_seed(0)
        BertForSequenceClassification.from_pretrained(num_labels=2).save_pretrained(tmp_path)
    folder = tiny_hf_dir if which == "tiny" else tmp_path
    hf, ours = hf_classifier(folder), BertForSequenceClassification.from_pretrained(folder)
    lengths = [11, 7, 3, 11] if kind == "padded batch" else [9]
    ids, mask, types = padded_batch(ours.config.vocab_size, lengths, seed=1)
    if kind == "batch 1, padded":
        ids, mask, types = (torch.nn.functional.pad(t, (0, 4)) for t in (ids, mask, types))
    fast = ours.infer(ids, mask, types)
    assert fast.shape == (len(lengths), ours.config.num_labels)
    assert max_abs_diff(fast, hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits) <= TOL
    assert max_abs_diff(fast, ours(ids, mask, types)) <= TOL


def test_keep_layers_is_the_checkpoint_with_only_those_layers(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32)
    full = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        x = full.embeddings(ids, torch.zeros_like(ids))
        for i in (0, 2):                                                           # by hand: layers 0 and 2 only
            x = full.layers[i](x, padding_bias(mask, x.dtype))
        expected = full.classify(full.pool(x[:, 0]))
        small = keep_layers(full, [0, 2])
        assert small.config.num_hidden_layers == 2
        assert torch.equal(small(ids, mask), expected)
        small.save_pretrained(tmp_path)
        assert torch.equal(BertForSequenceClassification.from_pretrained(tmp_path).eval()(ids, mask), expected)
