"""flops.py checked against an independent reference, torch.utils.flop_counter.FlopCounterMode, which
counts the FLOPs of every matmul the model really executes (mm/addmm/bmm: 2 per multiply-add, biases
not counted). Like flops.py it does not count softmax, LayerNorm, GELU/tanh, embedding lookups, or the
gather/scatter/argsort of real pruning, so the two must agree exactly. It counts padded positions too:
dense runs are compared at their padded length, pruned runs one example at a time (no re-padding), or
batched against flops.padded_like_pruning (the re-padded shapes real pruning computes)."""

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import flops
from flops import FlopsCounter
from model import BertConfig, BertForSequenceClassification
from skim import Transkimmer

SMALL = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                   intermediate_size=64, num_labels=3)


@pytest.fixture(scope="module")
def small_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(SMALL).eval()


@pytest.fixture(scope="module")
def default_bert():
    return BertForSequenceClassification.from_pretrained().eval()


def reference_flops(fn, *args, **kwargs):
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def random_batch(vocab, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), N), generator=g)
    mask = (torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]).long()     # (B, N)
    return ids * mask, mask


def random_decisions(mask, L, p_keep, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(mask.shape, generator=g) < p_keep).float() for _ in range(L)]


def count(config, masks, mask, seq_len=None, predictors=True):
    counter = FlopsCounter(config, seq_len=seq_len, predictors=predictors)
    counter.add(masks, mask)
    return counter.summary()


def dense_count_at_padded_length(config, mask):
    """Our dense count for what FlopCounterMode sees: every example at the batch's padded length."""
    ones = torch.ones_like(mask)
    return count(config, [ones] * config.num_hidden_layers, ones)["none"]["dense"]

# -----------------------------------------------------------------------------
# dense model

LENGTHS = [[7], [1], [5, 5, 5], [11, 4, 9], [16, 3, 8, 12]]  # batch sizes 1-4, with and without padding


@pytest.mark.parametrize("lengths", LENGTHS)
def test_dense_count_equals_flop_counter_mode_on_a_random_bert(small_bert, lengths):
    ids, mask = random_batch(SMALL.vocab_size, lengths)
    ours = dense_count_at_padded_length(SMALL, mask)
    assert ours == reference_flops(small_bert, ids, mask)
    assert ours == len(lengths) * flops.dense_flops(max(lengths), SMALL)


@pytest.mark.parametrize("lengths", [[9], [20, 6, 13], [64, 64]])
def test_dense_count_equals_flop_counter_mode_on_the_default_checkpoint(default_bert, lengths):
    ids, mask = random_batch(default_bert.config.vocab_size, lengths)
    assert dense_count_at_padded_length(default_bert.config, mask) == reference_flops(default_bert, ids, mask)


def test_dense_count_without_padding_equals_flop_counter_mode_example_by_example(small_bert):
    ids, mask = random_batch(SMALL.vocab_size, [11, 4, 9, 1])
    with torch.inference_mode(), FlopCounterMode(display=False) as reference:  # sums over the examples
        for b, n in enumerate(mask.sum(1).tolist()):
            small_bert(ids[b:b + 1, :n], mask[b:b + 1, :n])
    assert count(SMALL, [mask] * SMALL.num_hidden_layers, mask)["none"]["dense"] == reference.get_total_flops()

# -----------------------------------------------------------------------------
# pruned inference

def skimmer_on(bert, seed):
    torch.manual_seed(seed)
    skimmer = Transkimmer(bert).eval()
    for p in skimmer.predictors:
        p.reset_parameters(mu0=0.3, std=0.5)  # predictors that skim a good share of the tokens
    return skimmer


@pytest.mark.parametrize("which", ["small", "default"])
@pytest.mark.parametrize("forced", [True, False])
def test_pruned_count_equals_flop_counter_mode_example_by_example(small_bert, default_bert, which, forced):
    """Forced decisions: the predictors do not run, so both sides leave them out. Predicted: both
    charge each predictor on the tokens entering its layer. One example at a time, nothing is padded."""
    bert = small_bert if which == "small" else default_bert
    skimmer = skimmer_on(bert, seed=1)
    L = bert.config.num_hidden_layers
    ids, mask = random_batch(bert.config.vocab_size, [12, 5, 9, 1, 16], seed=2)
    decisions = random_decisions(mask, L, 0.8, seed=3) if forced else None
    examples = [(ids[b:b + 1, :n], mask[b:b + 1, :n], [dec[b:b + 1, :n] for dec in decisions] if forced else None)
                for b, n in enumerate(mask.sum(1).tolist())]
    with torch.inference_mode(), FlopCounterMode(display=False) as reference:  # sums over the examples
        outputs = [skimmer(x, m, prune=True, decisions=d) for x, m, d in examples]
    counter = FlopsCounter(bert.config, predictors=not forced)
    for (_, m, _), out in zip(examples, outputs):
        counter.add(out.masks, m)
    s = counter.summary()
    assert s["kept_fraction"][-1] < 0.8, "the test needs runs that skim"
    assert s["none"]["skim"] == reference.get_total_flops()
    assert s["none"]["skim"] < s["none"]["dense"]


def test_batched_pruned_count_equals_flop_counter_mode_on_the_re_padded_shapes(small_bert):
    skimmer = skimmer_on(small_bert, seed=4)
    ids, mask = random_batch(SMALL.vocab_size, [14, 3, 9, 12], seed=5)
    with torch.inference_mode():
        masks = skimmer(ids, mask, prune=True).masks
    executed = count(SMALL, *flops.padded_like_pruning(masks, mask))
    assert executed["none"]["skim"] == reference_flops(skimmer, ids, mask, prune=True)
    assert executed["none"]["dense"] == reference_flops(small_bert, ids, mask)
    assert executed["none"]["skim"] > count(SMALL, masks, mask)["none"]["skim"]  # re-padding costs

# -----------------------------------------------------------------------------
# the two conventions and the predictor overhead

def test_all_kept_skim_count_is_the_dense_count_plus_exactly_the_predictor_overhead():
    _, mask = random_batch(SMALL.vocab_size, [14, 3, 9, 12])
    s = count(SMALL, [mask.float()] * SMALL.num_hidden_layers, mask, seq_len=20)
    n = mask.sum(1)
    predictors = SMALL.num_hidden_layers * int(flops.predictor_flops(n, SMALL).sum())
    assert s["none"]["skim"] == s["none"]["dense"] + predictors
    assert s["kept_fraction"] == [1.0] * SMALL.num_hidden_layers
    # "sequence": the layer-0 predictor also sees the padding up to seq_len
    padding = int(flops.predictor_flops(20 - n, SMALL).sum())
    assert s["sequence"]["skim"] == s["none"]["dense"] + predictors + padding


def test_the_two_padding_conventions_differ_exactly_by_the_padding_tokens_share():
    L, S = SMALL.num_hidden_layers, 16
    _, mask = random_batch(SMALL.vocab_size, [14, 3, 9, 12, 16])
    masks = [(d * mask).float() for d in random_decisions(mask, L, 0.6, seed=7)]
    masks = [torch.cummin(torch.stack(masks), 0).values[i] for i in range(L)]  # cumulative, as in skim.py
    s = count(SMALL, masks, mask, seq_len=S)
    n = mask.sum(1)
    # dense: every layer on S tokens instead of n
    padding_dense = L * int((flops.layer_flops(S, SMALL) - flops.layer_flops(n, SMALL)).sum())
    assert s["sequence"]["dense"] - s["none"]["dense"] == padding_dense
    # skim: the layers never see padding; only the layer-0 predictor is charged for it
    assert s["sequence"]["skim_per_layer"] == s["none"]["skim_per_layer"]
    assert s["sequence"]["skim"] - s["none"]["skim"] == int(flops.predictor_flops(S - n, SMALL).sum())
    assert s["sequence"]["speedup"] > s["none"]["speedup"]

# -----------------------------------------------------------------------------
# a case small enough to do by hand

def test_one_layer_by_hand():
    """d = 4, d_ff = 8, h = 2, 3 labels, one layer; one example of 5 real tokens padded to 6 in the
    batch, seq_len 8; the layer keeps 3 of them."""
    config = BertConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, num_labels=3)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    keep = torch.tensor([[1., 0, 1, 0, 1, 0]])
    s = count(config, [keep], mask, seq_len=8)
    head = 2 * 4 * 4 + 2 * 4 * 3                                   # pooler 32 + classifier 24 = 56
    # layer on n = 3: QKV 6*3*16 + scores 2*9*4 + context 2*9*4 + out 2*3*16 + FFN 4*3*4*8
    assert flops.layer_flops(3, config) == 288 + 72 + 72 + 96 + 384 == 912
    # predictor on the 5 real tokens: 2*5*16 + 2*5*4*2
    assert flops.predictor_flops(5, config) == 160 + 80 == 240
    dense_5 = 480 + 200 + 200 + 160 + 640                           # the layer on n = 5: 1680
    dense_8 = 768 + 512 + 512 + 256 + 1024                          # the layer on S = 8: 3072
    assert s["none"]["dense"] == dense_5 + head == 1736
    assert s["none"]["skim"] == 912 + 240 + head == 1208
    assert s["sequence"]["dense"] == dense_8 + head == 3128
    assert s["sequence"]["skim"] == 912 + (256 + 128) + head == 1352   # predictor on all 8 positions
    assert math.isclose(s["none"]["speedup"], 1736 / 1208)
    assert s["kept_fraction"] == [3 / 5]
    assert json.loads(json.dumps(s)) == s


@pytest.mark.parametrize("predictors", [True, False])
def test_the_fraction_training_steers_is_the_reciprocal_of_the_reported_speedup(predictors):
    lengths = [16, 3, 8, 12, 1]
    _, mask = random_batch(SMALL.vocab_size, lengths)
    masks = [m * mask for m in random_decisions(mask, SMALL.num_hidden_layers, 0.6, seed=3)]
    masks = [torch.cat([torch.ones_like(m[:, :1]), m[:, 1:]], 1) for m in masks]  # [CLS] kept
    for i in range(1, len(masks)):
        masks[i] = masks[i] * masks[i - 1]                                         # cumulative, as skim.py's
    reported = count(SMALL, masks, mask, predictors=predictors)["none"]["speedup"]
    assert flops.fraction(masks, mask, SMALL, predictors) == pytest.approx(1 / reported, rel=1e-12)
