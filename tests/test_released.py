"""methods/released.py: the authors' released computation. With both of its departures switched off it is our
skim.Transkimmer; with them on, the skimmed tokens leak into the kept ones, which real pruning (infer) and our
Transkimmer never let happen; every token kept, it is the dense model. Then the released recipe as resolved."""

import copy

import pytest
import torch

import flags
from methods import released
import skim
from conftest import padded_batch, small_config
from model import BertForSequenceClassification


def with_random_predictors(model, seed=0):
    """Predictors that skim about half the tokens, so that the decisions matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.predictors.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="module")
def pair():
    """A Released and a skim.Transkimmer on the same BERT weights and predictors, in eval mode."""
    torch.manual_seed(0)
    bert = BertForSequenceClassification(small_config(4))
    with torch.no_grad():  # sharper attention than a random init's near-uniform one, as a trained model's
        for layer in bert.layers:
            layer.attn.qkv.weight.mul_(20)
    ours = with_random_predictors(skim.Transkimmer(copy.deepcopy(bert), tau=1.0, mu0=5.0)).eval()
    theirs = released.Released(copy.deepcopy(bert)).eval()
    theirs.predictors.load_state_dict(ours.predictors.state_dict())
    return theirs, ours


@pytest.fixture(scope="module")
def batch():
    return padded_batch(100, [12, 9, 5, 12])


def skimming(mask, L, seed=1):
    """L random (B, N) 0/1 decisions that skim about a third of the tokens at each layer."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(mask.shape, generator=g) > 0.35).float() for _ in range(L)]


def switched(model, stream, renormalise):
    m = copy.deepcopy(model)
    m.stream, m.renormalise = stream, renormalise
    return m


@torch.no_grad()
def test_with_both_switches_off_it_computes_our_transkimmer(pair, batch):
    theirs, ours = pair
    ids, mask, types = batch
    decisions = skimming(mask, 4)
    honest = switched(theirs, stream=False, renormalise=True)
    a, b = honest(ids, mask, types, decisions=decisions), ours(ids, mask, types, decisions=decisions)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    for ma, mb in zip(a.masks, b.masks):
        assert torch.equal(ma, mb)
    # and the predictors' own decisions, argmax at evaluation, are ours too
    honest.sampled_eval = False
    torch.testing.assert_close(honest(ids, mask, types).logits, ours(ids, mask, types).logits, atol=1e-6, rtol=0)


def test_in_training_both_switches_off_it_draws_and_computes_what_our_transkimmer_does(pair, batch):
    theirs, ours = pair
    ids, mask, types = batch
    honest = switched(theirs, stream=False, renormalise=True).train()
    ours = copy.deepcopy(ours).train()
    ours.predictor_grad = honest.predictor_grad = "joint"
    for m in (honest, ours):  # no dropout: the two must draw the same Gumbel noise, and nothing else
        for module in m.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    torch.manual_seed(5)
    a = honest(ids, mask, types)
    torch.manual_seed(5)
    b = ours(ids, mask, types)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks))


def skimmed_changed(ids, mask):
    """Decisions that skim tokens 3 to 7 of every example at the first layer, and the ids with those tokens changed."""
    decisions = [torch.ones_like(mask, dtype=torch.float) for _ in range(4)]
    decisions[0][:, 3:8] = 0
    other = ids.clone()
    other[:, 3:8] = (other[:, 3:8] + 17) % 99 + 1
    return decisions, other


def moved_by(model, ids, other, mask, types, decisions):
    return (model(other, mask, types, decisions=decisions).logits
            - model(ids, mask, types, decisions=decisions).logits).abs().max()


@torch.no_grad()
@pytest.mark.parametrize("stream", [True, False])
def test_changing_only_skimmed_tokens_moves_the_released_pass_but_not_honest_pruning(pair, batch, stream):
    """Tokens skimmed at the first layer, their ids changed: without renormalisation (with or without the
    every-token stream) the released pass's logits move; infer's and our Transkimmer's do not."""
    theirs, ours = pair
    ids, mask, types = batch
    decisions, other = skimmed_changed(ids, mask)
    assert moved_by(switched(theirs, stream, renormalise=False), ids, other, mask, types, decisions) > 1e-3
    for m in (theirs, ours):
        a, b = m.infer(ids, mask, types, decisions=decisions), m.infer(other, mask, types, decisions=decisions)
        torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(ids, mask, types, decisions=decisions).logits,
                               ours(other, mask, types, decisions=decisions).logits, atol=1e-6, rtol=0)


@torch.no_grad()
def test_the_every_token_stream_alone_leaks_nothing_into_the_logits(pair, batch):
    """Renormalised, a kept token attends to kept tokens alone, so the skimmed tokens' states, updated or not, are
    never read: the stream costs every token's compute but moves nothing (its leak needs the denominator)."""
    theirs, _ = pair
    ids, mask, types = batch
    decisions, other = skimmed_changed(ids, mask)
    assert moved_by(switched(theirs, stream=True, renormalise=True), ids, other, mask, types, decisions) < 1e-5


@torch.no_grad()
def test_every_token_kept_the_released_pass_is_the_dense_model(pair, batch):
    theirs, _ = pair
    ids, mask, types = batch
    keep_all = [torch.ones_like(mask, dtype=torch.float) for _ in range(4)]
    torch.testing.assert_close(theirs(ids, mask, types, decisions=keep_all).logits,
                               theirs.bert(ids, mask, types), atol=1e-5, rtol=0)


@torch.no_grad()
def test_infer_is_the_honest_masked_computation_for_the_same_decisions(pair, batch):
    theirs, ours = pair
    ids, mask, types = batch
    decisions = skimming(mask, 4, seed=3)
    honest = switched(theirs, stream=False, renormalise=True)
    torch.testing.assert_close(theirs.infer(ids, mask, types, decisions=decisions).logits,
                               honest(ids, mask, types, decisions=decisions).logits, atol=1e-5, rtol=0)
    # with its own decisions: infer's argmax, taken on the pruned states, is the honest argmax pass
    honest.sampled_eval = False
    a, b = theirs.infer(ids, mask, types), honest(ids, mask, types)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks))


@torch.no_grad()
def test_sampled_evaluation_draws_new_decisions_and_argmax_does_not(pair, batch):
    theirs, _ = pair
    ids, mask, types = batch
    first, second = theirs(ids, mask, types).masks, theirs(ids, mask, types).masks
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    argmax = switched(theirs, True, False)
    argmax.sampled_eval = False
    assert all(torch.equal(a, b) for a, b in zip(argmax(ids, mask, types).masks, argmax(ids, mask, types).masks))


def test_the_released_skim_loss_counts_padding_over_the_padded_length():
    """Two examples of 4 positions, one with 2 of padding; a layer keeps [CLS], a real token and a padding
    position of the second: the released loss is the batch's mean kept count over 4, (2 + 2) / 2 / 4, where ours
    counts real tokens over real tokens, (2 + 1) / 6."""
    keep = torch.tensor([[1., 1., 0., 0.], [1., 0., 0., 1.]])
    pad = torch.tensor([[1., 1., 1., 1.], [1., 1., 0., 0.]])
    assert released.released_skim_loss([keep]).item() == pytest.approx(0.5)
    assert skim.skim_loss([keep * pad], pad).item() == pytest.approx(3 / 6)


def test_saved_and_loaded_it_keeps_its_switches_and_settings(pair, tmp_path, batch):
    theirs, _ = pair
    m = switched(theirs, stream=False, renormalise=True)
    m.sampled_eval = False
    m.save_pretrained(tmp_path)
    back = released.Released.from_pretrained(tmp_path)
    assert (back.stream, back.renormalise, back.sampled_eval, back.tau, back.mu0) == (False, True, False, 1.0, 5.0)
    ids, mask, types = batch
    with torch.no_grad():
        torch.testing.assert_close(back(ids, mask, types).logits, m(ids, mask, types).logits, atol=1e-6, rtol=0)


def test_the_released_recipe_resolves_to_the_authors_hyperparameters(tmp_path):
    glue = tmp_path / "glue" / "MRPC"
    glue.mkdir(parents=True)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    for split in ("train", "dev"):
        (glue / f"{split}.tsv").write_text(header + "1\t1\t2\ta b\tc d\n0\t3\t4\te f\tg h\n")
    argv = ["--task", "mrpc", "--method", "released", "--recipe", "released", "--data-dir", str(tmp_path / "glue"),
            "--output-dir", str(tmp_path / "out")]
    s, _ = flags.parse(argv)
    assert s.stages == (("skim", 5.0, 2e-5),)   # MRPC and WNLI: 5 epochs in their script
    assert (s.batch_size, s.skim_coef, s.warmup, s.weight_decay, s.max_grad_norm) == (64, 0.5, 0.0, 0.0, 0.0)
    assert (s.tau, s.mu0, s.predictor_grad, s.target_speedup, s.min_steps, s.predictor_lr) == (1.0, 5.0, "joint",
                                                                                              None, 0, None)
    assert (s.method, s.recipe) == ("released", "released")
    s, _ = flags.parse(["--task", "mrpc", "--recipe", "released", "--data-dir", str(tmp_path / "glue"),
                        "--output-dir", str(tmp_path / "out2")])
    assert s.method == "transkimmer" and s.stages == (("skim", 5.0, 2e-5),)  # the honest model, the same recipe
    with pytest.raises(flags.UsageError, match="drop --lr"):
        flags.parse(argv + ["--lr", "1e-4"])
    with pytest.raises(flags.UsageError, match="--method topk"):
        flags.parse(["--task", "mrpc", "--method", "topk", "--recipe", "released"])


def test_a_released_run_is_scored_three_ways_on_the_same_weights(glue, tiny, tmp_path):
    """train.py --method released --recipe released: metrics.json holds the released pass with sampled decisions
    (5 samplings), with argmax decisions, and honest pruning, each with its FLOPs speedup; the honest one is the
    saved model's infer on dev, and the argmax one its released pass at argmax."""
    import numpy as np
    import data
    import train
    out = tmp_path / "o"
    m = train.main([str(a) for a in ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--method", "released",
                                     "--recipe", "released", "--timing-repeats", 0, "--output-dir", out]])
    scored = m["scored"]
    assert len(scored["released_sampled"]) == released.SAMPLINGS
    assert {"accuracy", "predictions", "flops_speedup", "kept_fraction"} <= set(scored["honest"])
    model = released.Released.from_pretrained(out).eval()
    task = data.get_task("sst2")
    dev = data.encode(model.tokenizer, data.read_split(task, "dev", glue), task.max_seq_length)
    batch = next(data.batches(dev, len(dev)))
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        assert model.infer(*inputs).logits.argmax(-1).tolist() == scored["honest"]["predictions"]
        model.sampled_eval = False
        assert model(*inputs).logits.argmax(-1).tolist() == scored["released_argmax"]["predictions"]
    assert np.isfinite([r["flops_speedup"] for r in scored["released_sampled"]]).all()
