"""methods/skipmiddle.py, skipping the middle layers (Lawson et al., 2025) behind the method interface: its equations by
hand, the query-side gate's no-op, the packed inference against the masked computation, its FLOPs against
FlopCounterMode, its initialisation against the dense model, its operating point, the gradient of gates started
at zero, the controller steering it on a tiny model, and a run of train.py --method skipmiddle."""

import json
import math

import numpy as np
import pytest
import torch

import recipe
from methods import skipmiddle
import train
from conftest import executed_and_counted, padded_batch, small_config
from model import BertForSequenceClassification

SMALL = small_config(4)  # 2 gates: layers 0 and 3 use g_0, layers 1 and 2 use g_1


@pytest.fixture(scope="module")
def small_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(SMALL).eval()


def with_gates(bert, std, bias, seed=0):
    """A SkipMiddle on `bert` with random gates: weights N(0, std^2), biases `bias` (closes gates when > 0)."""
    model = skipmiddle.SkipMiddle(bert).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in model.gates:
            gate.weight.copy_(torch.randn(gate.weight.shape, generator=g) * std)
            gate.bias.fill_(bias)
    return model


def test_the_gates_add_up_clamp_and_mirror():
    assert [skipmiddle.gate_index(i, 6) for i in range(6)] == [0, 1, 2, 2, 1, 0]
    assert [skipmiddle.gate_index(i, 3) for i in range(3)] == [0, 0, 0]  # an odd stack's middle: the last gate
    assert skipmiddle.gate_of(torch.tensor([-0.5, 0.0, 0.25, 1.0, 3.0])).tolist() == [1.0, 1.0, 0.75, 0.0, 0.0]
    gate = torch.nn.Linear(2, 1)
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([[1.0, -1.0]]))
        gate.bias.fill_(0.5)
    h = torch.tensor([[2.0, 1.0], [0.0, 3.0]])                               # w.h + b = 1.5, -2.5
    assert skipmiddle.increment(gate, h).tolist() == [1.5, 0.0]
    assert skipmiddle.increment(gate, h, scale=2.0).tolist() == [3.0, 0.0]


def test_the_increment_learns_from_zero_where_relu_would_not():
    """At w = b = 0 (gates exactly open) the clamp passes the gradient; ReLU, the paper's, gives none."""
    gate = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(gate.weight)
    torch.nn.init.zeros_(gate.bias)
    h = torch.randn(5, 4)
    skipmiddle.gate_of(skipmiddle.increment(gate, h)).mean().backward()
    assert gate.bias.grad.item() == pytest.approx(-1.0)                       # d mean(1 - m) / d b
    gate.zero_grad()
    (1 - torch.relu(gate(h).squeeze(-1)).clamp(0, 1)).mean().backward()
    assert gate.bias.grad.item() == 0.0


def test_a_gate_by_query_position_changes_nothing_and_by_key_position_it_does():
    """Theirs adds log g by query (score_mod[b, q_idx]): a constant along each softmax row, cancelled."""
    torch.manual_seed(1)
    scores = torch.randn(2, 3, 5, 5)                                          # (B, nh, queries, keys)
    gate = torch.rand(2, 5) * 0.9 + 0.05
    plain = torch.softmax(scores, -1)
    assert torch.allclose(skipmiddle.attention_with_gate(scores, gate, "query"), plain, atol=1e-6)
    keyed = skipmiddle.attention_with_gate(scores, gate, "key")
    assert (keyed - plain).abs().max() > 0.05
    # by key, it is skim attention (Eq. 4): the probabilities weighed by the gate and renormalised
    weighed = plain * gate[:, None, None, :]
    assert torch.allclose(keyed, weighed / weighed.sum(-1, keepdim=True), atol=1e-6)
    closed = gate.clone()
    closed[:, 2] = 0                                                          # a closed key gets no attention
    assert skipmiddle.attention_with_gate(scores, closed, "key")[..., 2].max() < 1e-30


def test_with_its_gates_open_it_is_the_dense_model(small_bert):
    ids, mask, types = padded_batch(SMALL.vocab_size, [12, 5, 9], seed=1)
    model = skipmiddle.SkipMiddle(small_bert).eval()                          # w = b = 0: every gate 1
    with torch.no_grad():
        dense = small_bert(ids, mask, types)
        out = model(ids, mask, types)
    assert (out.logits - dense).abs().max() < 1e-6  # (skim attention renormalises: float rounding alone)
    assert (model.infer(ids, mask, types).logits - small_bert.infer(ids, mask, types)).abs().max() < 1e-5
    assert all(torch.equal(m, mask.float()) for m in out.masks)
    assert out.aux_loss.item() == 1.0                                         # the mean gate: all open


@pytest.mark.parametrize("lengths,std,bias", [([9], 0.6, 0.1), ([12, 5, 9, 2], 0.6, 0.1), ([16, 3, 11, 7, 1], 1.0, 0.3),
                                              ([10, 10], 0.0, 1.0)])
def test_packed_inference_equals_the_masked_computation(small_bert, lengths, std, bias):
    """Batch 1; padding; gates open, partly open and closed, a different number of tokens per example and
    layer; every gate closed at the first layer (bias 1), so that no layer is run at all."""
    model = with_gates(small_bert, std, bias, seed=len(lengths))
    ids, mask, types = padded_batch(SMALL.vocab_size, lengths, seed=len(lengths))
    with torch.no_grad():
        masked, gate_values = model.gated(ids, mask, types)
    packed = model.infer(ids, mask, types)
    assert (masked.logits - packed.logits).abs().max() < 1e-5
    L = SMALL.num_hidden_layers
    for i, (a, b) in enumerate(zip(masked.masks, packed.masks)):
        expected = a * mask * (a[:, :1] if i == L - 1 else 1)  # the last layer: where [CLS] computes it
        assert torch.equal(expected, b), f"layer {i}"
    assert all(torch.equal(masked.masks[i], masked.masks[L - 1 - i]) for i in range(L))  # the span is symmetric
    if bias == 1.0:
        assert all(m.sum() == 0 for m in packed.masks)
        assert torch.equal(packed.logits, small_bert.classify(small_bert.pool(small_bert.embed(ids, mask, types)[0][:, 0])))
    else:
        gates = torch.cat([g[mask.bool()] for g in gate_values])
        assert (gates == 0).any() and ((gates > 0) & (gates < 1)).any()     # closed ones, and partly open ones
        if len(lengths) > 2:
            assert len({int(n) for n in packed.masks[1].sum(1)}) > 1


def test_an_example_whose_cls_skips_the_last_layer_is_left_out_of_it(small_bert):
    """The last layer runs for [CLS]'s output alone: where [CLS]'s gate is closed there, the example has no
    token in it (infer's masks), and the logits are still forward's."""
    model = skipmiddle.SkipMiddle(small_bert).eval()
    ids, mask, types = padded_batch(SMALL.vocab_size, [9, 7], seed=5)
    h = small_bert.embed(ids, mask, types)[0]                                 # (B, N, d): what gate 0 reads
    w = h[0, 0] / h[0, 0].norm()
    s = h @ w                                                                 # (B, N)
    mid = (s[0, 0] + s[mask.bool()][1:].max()) / 2                            # between [CLS] of 0 and the rest
    with torch.no_grad():
        k = 2 / (s[0, 0] - mid)
        model.gates[0].weight.copy_(k * w[None])
        model.gates[0].bias.fill_(-k * mid)
    with torch.no_grad():
        masked = model(ids, mask, types)
    packed = model.infer(ids, mask, types)
    assert masked.masks[0][0, 0] == 0 and masked.masks[0][0, 1:].sum() > 0   # example 0's [CLS] skips every layer
    assert packed.masks[-1][0].sum() == 0 and torch.equal(packed.masks[-1][1], masked.masks[-1][1] * mask[1])
    assert (masked.logits - packed.logits).abs().max() < 1e-5


def test_its_flops_as_executed_equal_flop_counter_mode(small_bert):
    """What infer executes (the gates, the layers on their open tokens, the last on [CLS]) equals the count of
    its flops_counter, "cls" convention, with no padding."""
    model = with_gates(small_bert, 0.6, 0.1, seed=2)
    ids, mask, types = padded_batch(SMALL.vocab_size, [16, 3, 11, 7], seed=2)
    executed, counter = executed_and_counted(model, ids, mask, types)
    skim, dense = counter.totals()
    assert executed == skim
    assert skim < dense
    assert counter.summary()["none"]["predictor_per_layer"][2:] == [0, 0]    # no gate in the second half


def test_the_operating_point_folds_and_calibrates_to_a_target(small_bert):
    ids, mask, types = padded_batch(SMALL.vocab_size, [16, 12, 14, 15, 9, 13], seed=4)
    model = with_gates(small_bert, 0.3, -0.2, seed=3)
    model.keep_threshold = 0.8                                                # increments x 4
    with torch.no_grad():
        at, gates_at = model.gated(ids, mask, types)
    model.freeze(0.8)
    assert model.keep_threshold == 0.5
    with torch.no_grad():
        folded, gates_folded = model.gated(ids, mask, types)
    assert torch.allclose(at.logits, folded.logits, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(gates_at, gates_folded))
    batches = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}]
    model = with_gates(small_bert, 0.3, -0.2, seed=3)
    for target in (1.3, 2.0):
        t = recipe.calibrate_threshold(model, batches, target)
        reached = recipe.speedup_at(model, batches, t)
        assert target <= reached < target * 1.15, (target, reached)


def test_the_controller_drives_it_to_the_target_and_the_calibration_lands_on_it(tiny, glue, tmp_path, monkeypatch):
    """train.py --method skipmiddle, one skim stage at target 2: from gates all open (a FLOPs fraction just
    over 1: the gates' own cost), the controller brings the training batches' fraction down through 1/2, and
    the threshold calibrated after the stage lands on 2x. It does not hold 1/2 on this model: the fraction
    falls on, to about 0.2, because a closed gate (m >= 1) gets no gradient through the clamp, so nothing
    reopens it, and Adam's momentum carries the gates on after lambda turns negative (docs/interface.md). On random
    batches: grouped by length (train.py's default), the fixture's two batches an epoch are its 15 longest and 15
    shortest sentences, and the fraction has not come down through 1/2 after 60 steps (its last ten reach 0.92;
    measured)."""
    monkeypatch.setattr(recipe.SpeedupController, "KI_STEPS", 60)  # the controller's own gain, as for Transkimmer
    m = train.main([str(a) for a in ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--method", "skipmiddle",
                                     "--stages", "skim:30", "--no-group-by-length", "--target-speedup", 2,
                                     "--lr", "1e-3", "--batch-size", 15,
                                     "--timing-repeats", 0, "--output-dir", tmp_path / "o"]])
    trace = np.array(m["stages"][0]["trace"]["flops_fraction"])              # one per step: 2 an epoch
    assert len(trace) == 60 and 1 < trace[0] < 1.01                           # starts out dense, plus the gates
    assert trace[-10:].max() < 0.5 < trace[:30].min()                         # down through the target
    assert m["stages"][0]["calibrated_speedup"] == pytest.approx(2.0, abs=0.1)


def test_train_py_method_skipmiddle_runs_the_recipe_and_evaluates_as_saved(tiny, glue, tmp_path):
    out = tmp_path / "run"
    metrics = train.main([str(a) for a in ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--method",
                                           "skipmiddle", "--target-speedup", 1.5, "--min-steps", 0, "--batch-size", 8,
                                           "--output-dir", out, "--timing-repeats", 0]])
    assert [s["stage"] for s in metrics["stages"]] == ["dense", "skim", "frozen"]
    # the smallest threshold reaching 1.5 on train sentences (one gate: the tokens close in steps); 6 dev sentences
    assert 1.5 <= metrics["stages"][-1]["calibrated_speedup"] < 2.5 and metrics["flops"]["none"]["speedup"] > 1.05
    assert json.loads((out / "config.json").read_text())["skipmiddle"] == {"gates": 1}
    evaluated = train.main(["--task", "sst2", "--data-dir", str(glue), "--eval-only", "--checkpoint", str(out),
                            "--timing-repeats", "0"])
    assert evaluated["flops"]["none"]["speedup"] == pytest.approx(metrics["flops"]["none"]["speedup"])
    assert math.isclose(evaluated["accuracy"], metrics["accuracy"])
    assert evaluated["predictions"] == metrics["predictions"]
