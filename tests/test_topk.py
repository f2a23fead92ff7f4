"""methods/topk.py, static top-k token pruning (PoWER-BERT) behind the method interface: its equations by hand, the
packed inference against the masked computation, its FLOPs against FlopCounterMode, its initialisation against
the dense model, its operating point calibrated to a target, and a run of train.py --method topk."""

import json
import math

import pytest
import torch

import recipe
from methods import topk
import train
from conftest import SENTENCES, executed_and_counted, padded_batch, small_config, write_sst2
from model import BertForSequenceClassification, padding_bias

SMALL = small_config(4)


@pytest.fixture(scope="module")
def small_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(SMALL).eval()


def test_retained_is_the_ceiling_of_the_geometric_schedule_and_keeps_cls():
    n = torch.tensor([1, 7, 10, 64])
    assert topk.retained(n, 0.5, 0).tolist() == [1, 7, 10, 64]
    assert topk.retained(n, 0.5, 1).tolist() == [1, 4, 5, 32]           # ceil(3.5), ceil(5), ceil(32)
    assert topk.retained(n, 0.5, 3).tolist() == [1, 1, 2, 8]            # ceil(0.875), ceil(1.25), ceil(8)
    assert topk.retained(n, 1e-9, 5).tolist() == [1, 1, 1, 1]           # [CLS] alone, never nothing
    for i in range(1, 6):  # never more than the layer before kept
        assert (topk.retained(n, 0.7, i) <= topk.retained(n, 0.7, i - 1)).all()


def test_significance_sums_the_attention_received_from_kept_queries_leaving_out_self():
    probs = torch.zeros(1, 2, 3, 3)                                     # (B, nh, queries, keys)
    probs[0, 0] = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]])
    probs[0, 1] = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    keep = torch.tensor([[1.0, 1.0, 0.0]])                               # query 2 was not computed: it does not vote
    # key 0: from query 1 (0.2 + 0.0); key 1: from query 0 (0.25 + 1.0); key 2 is out of play, from query 0 and 1
    # (0.25 + 0.1 + 0.0 + 1.0); self-attention (the diagonal) left out of each
    expected = torch.tensor([[0.2, 1.25, 0.0]])
    got = topk.significance(probs, keep)
    assert torch.allclose(got[:, :2], expected[:, :2])
    # a token out of play gets no self-term taken off (it is never selected: select_top)
    assert got[0, 2] == pytest.approx(0.25 + 0.1 + 1.0)


def test_select_top_keeps_cls_and_the_highest_scores_among_the_tokens_in_play():
    score = torch.tensor([[0.0, 3.0, 9.0, 1.0, 2.0], [5.0, 1.0, 1.0, 1.0, 0.0]])
    keep = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0]])  # position 2 (score 9) is out
    got = topk.select_top(score, keep, torch.tensor([3, 2]))
    assert got.tolist() == [[1, 1, 0, 0, 1], [1, 1, 0, 0, 0]]  # [CLS] + 3.0, 2.0; [CLS] + the first of a tie


@pytest.mark.parametrize("lengths,rho", [([9], 0.6), ([12, 5, 9, 2], 0.6), ([16, 3, 11, 7, 1], 0.45),
                                         ([10, 10], 1e-6)])
def test_packed_inference_equals_the_masked_computation(small_bert, lengths, rho):
    """Batch 1; padding; every example keeping its own count at every layer; an example of [CLS] alone;
    everything but [CLS] dropped before layer 1."""
    model = topk.TopK(small_bert, rho=rho).eval()
    ids, mask, types = padded_batch(SMALL.vocab_size, lengths, seed=len(lengths))
    with torch.no_grad():
        masked = model(ids, mask, types)
    packed = model.infer(ids, mask, types)
    assert (masked.logits - packed.logits).abs().max() < 1e-5
    for i, (a, b) in enumerate(zip(masked.masks, packed.masks)):
        assert torch.equal(a * mask, b), f"layer {i}"
        expected = topk.retained(mask.sum(1), model.decay, i)
        assert torch.equal(a.sum(1).long(), expected), f"layer {i}: the schedule's counts"
    if len(lengths) > 2:  # the counts differ between examples (and layers), so the packing is exercised
        assert len({int(n) for n in packed.masks[1].sum(1)}) > 1
    assert masked.aux_loss == 0 and packed.aux_loss == 0


def test_its_hand_written_attention_is_layer_infers_and_the_attention_each_token_received(small_bert):
    """topk.infer_layer writes out what the fused Layer.infer computes, to also return the attention each token
    received (results/topk_attention.py times the two against each other on the same inputs)."""
    ids, mask, types = padded_batch(SMALL.vocab_size, [9, 4, 7])
    lengths = mask.sum(1).tolist()
    with torch.no_grad():
        x, _ = small_bert.embed(ids, mask, types)
        packed = x[mask.bool()]                                                     # (T, d)
        layer = small_bert.layers[0]
        y, received = topk.infer_layer(layer, packed, lengths)
        assert torch.allclose(y, layer.infer(packed, lengths), atol=1e-5)
        _, probs = layer(x, padding_bias(mask, x.dtype), with_probs=True)           # (B, nh, N, N)
        assert torch.allclose(received, topk.significance(probs, mask.float())[mask.bool()], atol=1e-5)


def test_dropping_tokens_changes_the_output(small_bert):
    """Not a no-op: at rho < 1 fewer tokens are computed and the logits move."""
    ids, mask, types = padded_batch(SMALL.vocab_size, [12, 9], seed=3)
    with torch.no_grad():
        dense = small_bert(ids, mask, types)
        pruned = topk.TopK(small_bert, rho=0.3).eval()(ids, mask, types)
    assert pruned.masks[1].sum() < mask.sum()
    assert (dense - pruned.logits).abs().max() > 1e-3 * dense.abs().max()  # (a random head: small logits)


def test_with_every_token_kept_it_is_the_dense_model(small_bert):
    ids, mask, types = padded_batch(SMALL.vocab_size, [12, 5, 9], seed=1)
    model = topk.TopK(small_bert).eval()                                 # rho = 1: k = n at every layer
    with torch.no_grad():
        dense = small_bert(ids, mask, types)
        out = model(ids, mask, types)
    assert (out.logits - dense).abs().max() < 1e-5
    assert (model.infer(ids, mask, types).logits - small_bert.infer(ids, mask, types)).abs().max() < 1e-5
    assert all(torch.equal(m, mask.float()) for m in out.masks)


def test_its_flops_as_executed_equal_flop_counter_mode(small_bert):
    """What infer executes (its explicit attention matmuls and the last layer on [CLS] alone) equals flops.py's
    count without padding, "cls" convention, no predictors."""
    model = topk.TopK(small_bert, rho=0.55).eval()
    ids, mask, types = padded_batch(SMALL.vocab_size, [16, 3, 11, 7], seed=2)
    executed, counter = executed_and_counted(model, ids, mask, types)
    skim, dense = counter.totals()
    assert executed == skim
    assert skim < dense


def test_the_operating_point_folds_and_calibrates_to_a_target(small_bert):
    model = topk.TopK(small_bert, rho=0.5).eval()
    model.keep_threshold = 0.5
    assert model.decay == 0.5
    model.keep_threshold = 0.8                                           # odds 4: 0.5^4
    assert model.decay == pytest.approx(0.0625)
    model.keep_threshold = 0.2
    assert model.decay == pytest.approx(0.5 ** 0.25)
    model.freeze(0.8)
    assert (model.rho, model.keep_threshold) == (pytest.approx(0.0625), 0.5)
    state = model.state_dict()                                           # rho travels with the weights
    other = topk.TopK(small_bert, rho=0.9)
    other.load_state_dict(state)
    assert other.rho == pytest.approx(0.0625)
    ids, mask, types = padded_batch(SMALL.vocab_size, [16, 12, 14, 15, 9, 13], seed=4)
    batches = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}]
    model = topk.TopK(small_bert, rho=0.5).eval()
    for target in (1.3, 2.0):
        t = recipe.calibrate_threshold(model, batches, target)
        reached = recipe.speedup_at(model, batches, t)
        assert target <= reached < target * 1.15, (target, reached)


def test_train_py_method_topk_trains_dense_then_under_its_schedule_at_the_target(tiny, tmp_path):
    glue = write_sst2(tmp_path / "glue", SENTENCES * 3)
    write_sst2(glue, SENTENCES[:6], name="dev.tsv")
    out = tmp_path / "run"
    metrics = train.main(["--task", "sst2", "--model", str(tiny), "--data-dir", str(glue), "--method", "topk",
                          "--target-speedup", "1.5", "--min-steps", "0", "--output-dir", str(out),
                          "--timing-repeats", "0"])
    assert [s["stage"] for s in metrics["stages"]] == ["dense", "frozen", "frozen"]
    assert metrics["flops"]["none"]["speedup"] > 1.2  # calibrated on train sentences, measured on dev
    saved = json.loads((out / "config.json").read_text())
    assert 0 < saved["topk"]["rho"] < 1
    evaluated = train.main(["--task", "sst2", "--data-dir", str(glue), "--eval-only", "--checkpoint", str(out),
                            "--timing-repeats", "0"])
    assert evaluated["flops"]["none"]["speedup"] == pytest.approx(metrics["flops"]["none"]["speedup"])
    assert math.isclose(evaluated["accuracy"], metrics["accuracy"])


@pytest.mark.parametrize("flags,says", [
    (["--stages", "dense:1,skim:1"], "no skim stage"),
    (["--skim-coef", "0.5"], "no skim stage"),
    (["--target-speedup", "50"], "[CLS] alone after the first layer"),
])
def test_impossible_topk_runs_are_one_error_line(tiny, glue, tmp_path, flags, says):
    from test_train import one_error_line, run_cli
    result = run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, "--method", "topk",
                     "--output-dir", tmp_path / "o", *flags)
    assert result.returncode == 2 and says in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_sigterm_under_the_schedule_then_resume_gives_the_uninterrupted_runs_model(tiny, glue, tmp_path, monkeypatch):
    """rho is no tensor: it must travel in resume.pt (extra state) for a resumed run to end where a whole one does."""
    import signal

    from test_train import interrupt_at, run_cli
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--method", "topk", "--target-speedup", "1.5",
            "--batch-size", 8, "--timing-repeats", 0, "--min-steps", 0]
    train.main([str(a) for a in args + ["--output-dir", tmp_path / "whole"]])
    with monkeypatch.context() as patch:
        interrupt_at(patch, 5, signal.SIGTERM)  # 4 dense steps, then the first of 2 under the schedule
        assert run_cli(*args, "--output-dir", tmp_path / "cut").returncode == 130
    train.main(["--resume", str(tmp_path / "cut")])
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
