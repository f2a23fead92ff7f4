"""flops.py checked against an independent reference, torch.utils.flop_counter.FlopCounterMode, which
counts the FLOPs of every matmul the model really executes (mm/addmm/bmm: 2 per multiply-add, biases
not counted). Like flops.py it does not count softmax, LayerNorm, GELU/tanh, embedding lookups, or the
gather/scatter/argsort of real pruning, so the two must agree exactly. It counts padded positions too:
dense forward runs are compared at their padded length; forward(prune=True) one example at a time, or
batched against flops.padded_like_pruning (the re-padded shapes it computes); the packed inference
paths (`infer`) batched, since they compute no padding position.
The inference paths (`infer`) use F.scaled_dot_product_attention, whose CPU kernel FlopCounterMode does
not count; the reference runs them under SDPA's math backend, which computes attention as two matmuls
that it counts like any other. Their last layer is counted under flops.py's "cls" convention."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import flops
import train
from conftest import small_config
from flops import FlopsCounter
from model import BertConfig, BertForSequenceClassification
from skim import Transkimmer

SMALL = small_config(3)


@pytest.fixture(scope="module")
def small_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(SMALL).eval()


@pytest.fixture(scope="module")
def default_bert():
    return BertForSequenceClassification.from_pretrained().eval()


def counted():
    """FlopCounterMode, with attention computed by matmuls it counts (SDPA's math backend)."""
    return FlopCounterMode(display=False)


def reference_flops(fn, *args, **kwargs):
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counted() as counter:
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


def count(config, masks, mask, seq_len=None, predictors=True, last_layer="all"):
    counter = FlopsCounter(config, seq_len=seq_len, predictors=predictors, last_layer=last_layer)
    counter.add(masks, mask)
    return counter.summary()


def dense_count_at_padded_length(config, mask, last_layer="all"):
    """Our dense count for what FlopCounterMode sees: every example at the batch's padded length."""
    ones = torch.ones_like(mask)
    return count(config, [ones] * config.num_hidden_layers, ones, last_layer=last_layer)["none"]["dense"]

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


@pytest.mark.parametrize("which", ["small", "default"])
@pytest.mark.parametrize("lengths", [[7], [1], [16, 3, 8, 12]])
def test_dense_infer_count_is_the_cls_convention_without_padding_and_equals_flop_counter_mode(
        small_bert, default_bert, which, lengths):
    """The packed inference path computes no padding position: each example at its own length, the
    last layer on [CLS] alone."""
    bert = small_bert if which == "small" else default_bert
    ids, mask = random_batch(bert.config.vocab_size, lengths)
    ours = count(bert.config, [mask.float()] * bert.config.num_hidden_layers, mask, last_layer="cls")["none"]["dense"]
    assert ours == reference_flops(bert.infer, ids, mask)
    assert ours == sum(flops.dense_flops(n, bert.config, last_layer="cls") for n in lengths)
    assert ours < dense_count_at_padded_length(bert.config, mask) or max(lengths) == 1  # one token: nothing to save
    if len(set(lengths)) > 1:
        assert ours < dense_count_at_padded_length(bert.config, mask, last_layer="cls")  # the padding is not computed

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
@pytest.mark.parametrize("path", ["prune", "infer"])
def test_pruned_count_equals_flop_counter_mode_example_by_example(small_bert, default_bert, which, forced, path):
    """Forced decisions: the predictors do not run, so both sides leave them out. Predicted: both
    charge each predictor on the tokens entering its layer. One example at a time, nothing is padded.
    prune=True computes every kept token's output ("all"); Transkimmer.infer computes [CLS]'s alone in
    the last layer ("cls")."""
    bert = small_bert if which == "small" else default_bert
    skimmer = skimmer_on(bert, seed=1)
    L = bert.config.num_hidden_layers
    ids, mask = random_batch(bert.config.vocab_size, [12, 5, 9, 1, 16], seed=2)
    decisions = random_decisions(mask, L, 0.8, seed=3) if forced else None
    examples = [(ids[b:b + 1, :n], mask[b:b + 1, :n], [dec[b:b + 1, :n] for dec in decisions] if forced else None)
                for b, n in enumerate(mask.sum(1).tolist())]
    run = skimmer.infer if path == "infer" else lambda x, m, decisions: skimmer(x, m, prune=True, decisions=decisions)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counted() as reference:  # sums over the examples
        outputs = [run(x, m, decisions=d) for x, m, d in examples]
    counter = FlopsCounter(bert.config, predictors=not forced, last_layer="cls" if path == "infer" else "all")
    for (_, m, _), out in zip(examples, outputs):
        counter.add(out.masks, m)
    s = counter.summary()
    assert s["kept_fraction"][-1] < 0.8, "the test needs runs that skim"
    assert s["none"]["skim"] == reference.get_total_flops()
    assert s["none"]["skim"] < s["none"]["dense"]


def test_batched_prune_path_count_equals_flop_counter_mode_on_the_re_padded_shapes(small_bert):
    """forward(prune=True) re-pads each layer's kept tokens to the batch's largest kept count."""
    skimmer = skimmer_on(small_bert, seed=4)
    ids, mask = random_batch(SMALL.vocab_size, [14, 3, 9, 12], seed=5)
    run = lambda *a: skimmer(*a, prune=True)  # noqa: E731
    with torch.inference_mode():
        masks = run(ids, mask).masks
    executed = count(SMALL, *flops.padded_like_pruning(masks, mask))
    assert executed["none"]["skim"] == reference_flops(run, ids, mask)
    assert executed["none"]["dense"] == reference_flops(small_bert, ids, mask)
    assert executed["none"]["skim"] > count(SMALL, masks, mask)["none"]["skim"]  # re-padding


@pytest.mark.parametrize("which", ["small", "default"])
@pytest.mark.parametrize("forced", [True, False])
def test_batched_packed_infer_count_is_exactly_the_count_without_padding(small_bert, default_bert, which, forced):
    """Transkimmer.infer packs the kept tokens of the whole batch: what it executes, batched, is the
    no-padding count of its masks ("cls"), the figure flops.py reports, with nothing re-padded."""
    bert = small_bert if which == "small" else default_bert
    skimmer = skimmer_on(bert, seed=4)
    L = bert.config.num_hidden_layers
    ids, mask = random_batch(bert.config.vocab_size, [14, 3, 9, 12, 1], seed=5)
    decisions = random_decisions(mask, L, 0.8, seed=6) if forced else None
    with torch.inference_mode():
        masks = skimmer.infer(ids, mask, decisions=decisions).masks
    counted_ = count(bert.config, masks, mask, predictors=not forced, last_layer="cls")["none"]
    assert counted_["skim"] == reference_flops(skimmer.infer, ids, mask, decisions=decisions)
    assert counted_["skim"] < count(bert.config, *flops.padded_like_pruning(masks, mask), predictors=not forced,
                                    last_layer="cls")["none"]["skim"]  # what re-padding would have computed
    kept = torch.stack([(m * mask).sum(1) for m in masks])                         # (L, B)
    assert max(len(set(k.tolist())) for k in kept) > 2, "the test needs examples that keep different numbers of tokens"


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
    # "cls": the one layer is the last, so it computes [CLS]'s output alone; keys and values for every
    # token it runs on. On n tokens: Q 2*1*16 + KV 4*n*16 + scores 2*1*n*4 + context 2*1*n*4 + out 2*1*16
    # + FFN 4*1*4*8
    assert flops.layer_flops(3, config, queries=1) == 32 + 192 + 24 + 24 + 32 + 128 == 432
    cls = count(config, [keep], mask, seq_len=8, last_layer="cls")
    assert cls["none"]["dense"] == 32 + 320 + 40 + 40 + 32 + 128 + head == 648    # n = 5
    assert cls["none"]["skim"] == 432 + 240 + head == 728                          # n = 3, predictor as before
    assert cls["sequence"]["dense"] == 32 + 512 + 64 + 64 + 32 + 128 + head == 888  # n = S = 8
    assert cls["last_layer"] == "cls"


def test_an_unknown_last_layer_convention_is_an_error():
    with pytest.raises(ValueError):
        FlopsCounter(SMALL, last_layer="first")


@pytest.mark.parametrize("last_layer", ["all", "cls"])
@pytest.mark.parametrize("predictors", [True, False])
def test_the_fraction_training_steers_is_the_reciprocal_of_the_reported_speedup(predictors, last_layer):
    lengths = [16, 3, 8, 12, 1]
    _, mask = random_batch(SMALL.vocab_size, lengths)
    masks = [m * mask for m in random_decisions(mask, SMALL.num_hidden_layers, 0.6, seed=3)]
    masks = [torch.cat([torch.ones_like(m[:, :1]), m[:, 1:]], 1) for m in masks]  # [CLS] kept
    for i in range(1, len(masks)):
        masks[i] = masks[i] * masks[i - 1]                                         # cumulative, as skim.py's
    reported = count(SMALL, masks, mask, predictors=predictors, last_layer=last_layer)["none"]["speedup"]
    method = SimpleNamespace(flops_counter=lambda: FlopsCounter(SMALL, predictors=predictors, last_layer=last_layer))
    assert train.flops_fraction(method, masks, {"attention_mask": mask}, 1) == pytest.approx(1 / reported, rel=1e-12)
