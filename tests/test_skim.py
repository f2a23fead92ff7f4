"""skim.py: each claim of the method checked against an independent computation (the dense model,
the layer run on kept tokens alone, torch's gumbel_softmax, brute-force counts)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import model
import skim
from gpu import fixed
from skim import Transkimmer, straight_through_gumbel_softmax

SENTENCES = [
    "a gripping, beautifully acted film.",
    "The plot is thin and the jokes fall flat; I wanted my two hours back!",
    "it's not bad",
    "an utterly charming and hilarious film that reminded me why i fell in love with movies",
    "dull",
]


@pytest.fixture(scope="module")
def skimmer():
    torch.manual_seed(0)
    return Transkimmer.from_pretrained(num_labels=2).eval()


@pytest.fixture(autouse=True)
def shared_model_back_in_eval_mode(skimmer):
    """Some tests wrap the module's one encoder in a Transkimmer and call .train() on it; the tests after
    them expect it in evaluation mode (no dropout), so every test hands it back that way."""
    yield
    skimmer.eval()


@pytest.fixture(scope="module")
def batch(skimmer):
    encodings = skimmer.tokenizer.encode_batch(SENTENCES)
    N = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(encodings), N, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = 1
    return ids, mask


def random_predictors(model, seed, mu0=0.0, std=0.5):
    """Predictors that skim a good share of tokens (an untrained Eq. 9 init keeps everything)."""
    torch.manual_seed(seed)
    for p in model.predictors:
        p.reset_parameters(mu0=mu0, std=std)


@pytest.fixture
def random_skimmer(skimmer):
    m = Transkimmer(skimmer.bert, tau=0.1)
    random_predictors(m, seed=1, mu0=0.3)
    return m.eval()


def force_keep(model):
    with torch.no_grad():
        for p in model.predictors:
            p.fc2.bias.copy_(torch.tensor([-1e4, 1e4]))


# -----------------------------------------------------------------------------
# the skimmed model reduces to the dense one

@torch.no_grad()
def test_all_kept_equals_the_dense_model(skimmer, batch):
    ids, mask = batch
    m = Transkimmer(skimmer.bert).eval()
    force_keep(m)
    dense = skimmer.bert(ids, mask)
    pruned = m(ids, mask, prune=True)
    assert all(torch.equal(k, mask.float()) for k in pruned.masks)
    assert torch.equal(pruned.logits, dense)  # the pruned path runs the dense computation itself
    # the masked path renormalises attention by a sum that is 1 only up to rounding
    assert (m(ids, mask).logits - dense).abs().max() <= 1e-6
    # the fast paths: pruned inference with nothing to prune runs the dense inference itself
    fast = m.infer(ids, mask)
    assert all(torch.equal(k, mask.float()) for k in fast.masks)
    assert torch.equal(fast.logits, skimmer.bert.infer(ids, mask))
    one = ids[2:3, :int(mask[2].sum())]                                             # batch 1, no padding
    assert torch.equal(m.infer(one).logits, skimmer.bert.infer(one))


@torch.no_grad()
def test_at_init_nearly_every_token_is_kept_and_logits_match_dense(skimmer, batch):
    ids, mask = batch
    real = mask.sum().item()
    out = skimmer(ids, mask)
    assert (out.logits - skimmer.bert(ids, mask)).abs().max() <= 1e-5
    assert all(torch.equal(k, mask.float()) for k in out.masks)  # argmax: every token kept
    # with training-time Gumbel noise, over many draws
    skimmer.train()
    try:
        torch.manual_seed(0)
        kept = [sum((k * mask).sum().item() for k in skimmer(ids, mask).masks) for _ in range(20)]
    finally:
        skimmer.eval()
    fraction = sum(kept) / (20 * len(skimmer.predictors) * real)
    assert fraction >= 0.999


# -----------------------------------------------------------------------------
# real pruning computes what masked skimming computes

def decisions_with_a_fully_skimmed_example(mask, L, seed):
    g = torch.Generator().manual_seed(seed)
    decisions = [(torch.rand(mask.shape, generator=g) < 0.7).float() for _ in range(L)]
    decisions[0][2] = 0.0  # example 2: every token but [CLS] skimmed at layer 0
    return decisions


def tight_capacity(m, ids, mask, decisions):
    """gpu/fixed.py's infer_fixed's smallest capacities that drop nothing here: each layer's largest kept count (forward's),
    as a fraction of the padded length."""
    return [float(k.sum(1).max()) / ids.shape[1] for k in m(ids, mask, decisions=decisions).masks]


def fixed_tight(m, ids, mask, decisions):
    out, overflow = fixed.infer_fixed(m, ids, mask, None, tight_capacity(m, ids, mask, decisions), decisions)
    assert not overflow.any()
    return out


PATHS = {  # every inference path that really removes tokens: name -> run(model, ids, mask, decisions)
    "prune": lambda m, ids, mask, decisions: m(ids, mask, prune=True, decisions=decisions),
    "infer": lambda m, ids, mask, decisions: m.infer(ids, mask, decisions=decisions),
    "fixed": fixed_tight,
}


def inputs_of(kind, ids, mask, decisions):
    """(ids, mask, decisions) triples: the padded batch itself, or each example alone (batch 1) at its own
    length, or alone padded with 3 extra positions (whose decisions say keep: padding must stay skimmed)."""
    if kind == "padded batch":
        return [(ids, mask, decisions)]
    out = []
    for b, n in enumerate(mask.sum(1).tolist()):
        pad = 3 if kind == "batch 1, padded" else 0
        one_ids = F.pad(ids[b:b + 1, :n], (0, pad))
        one_mask = F.pad(mask[b:b + 1, :n], (0, pad))
        one_decisions = [F.pad(d[b:b + 1, :n], (0, pad), value=1.0) for d in decisions] if decisions else None
        out.append((one_ids, one_mask, one_decisions))
    return out


@torch.no_grad()
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kind", ["padded batch", "batch 1", "batch 1, padded"])
@pytest.mark.parametrize("decided", ["forced", "predicted"])
def test_each_pruned_path_equals_masked(random_skimmer, batch, path, kind, decided):
    """Real pruning computes what masked skimming computes: the same logits, to float rounding, and the
    same masks, with given decisions (example 2 keeps only [CLS] from layer 0 on) and with the
    predictors deciding."""
    ids, mask = batch
    decisions = decisions_with_a_fully_skimmed_example(mask, len(random_skimmer.predictors), seed=0) \
        if decided == "forced" else None
    skimmed, only_cls = 0, False
    for x, m, d in inputs_of(kind, ids, mask, decisions):
        masked = random_skimmer(x, m, decisions=d)
        pruned = PATHS[path](random_skimmer, x, m, d)
        assert (masked.logits - pruned.logits).abs().max() <= 1e-5
        assert all(torch.equal(a, b) for a, b in zip(masked.masks, pruned.masks))
        assert torch.all(masked.masks[0][m == 0] == 0)
        skimmed += (m.sum() - masked.masks[-1].sum()).item()
        only_cls = only_cls or bool((masked.masks[0].sum(1) == 1).any())
    assert only_cls or decided == "predicted", "the forced decisions leave an example with [CLS] alone"
    kept = 1 - skimmed / mask.sum().item()
    assert 0.05 < kept < 0.9, "the test needs decisions that skim some tokens but not all"


@torch.no_grad()
def test_packed_inference_equals_masked_when_every_example_keeps_a_different_number(random_skimmer, batch):
    """Transkimmer.infer packs the kept tokens of the whole batch into one tensor, each example attending
    over its own: with decisions under which, at every layer, no two examples keep the same number of
    tokens (and one keeps [CLS] alone throughout), it computes the masked model's logits and masks."""
    ids, mask = batch
    B, N = ids.shape
    L = len(random_skimmer.predictors)
    lengths = mask.sum(1)                                                          # (B,): 9, 19, 7, 18, 3
    decisions = []
    for i in range(L):                                                             # layer i: each example's first
        keep = lengths - i                                                         # n_b - i tokens (all distinct),
        keep[lengths.argmin()] = 1                                                 # the shortest [CLS] alone
        decisions.append((torch.arange(N)[None, :] < keep[:, None]).float())       # (B, N)
    masked = random_skimmer(ids, mask, decisions=decisions)
    packed = random_skimmer.infer(ids, mask, decisions=decisions)
    counts = torch.stack([(m * mask).sum(1) for m in masked.masks])                # (L, B)
    assert all(len(set(c.tolist())) == B for c in counts), "at every layer each example keeps its own number"
    assert (counts.min(1).values == 1).all(), "an example keeps [CLS] alone"
    assert (masked.logits - packed.logits).abs().max() <= 1e-5
    assert torch.equal(masked.logits.argmax(-1), packed.logits.argmax(-1))
    assert all(torch.equal(a, b) for a, b in zip(masked.masks, packed.masks))


@torch.no_grad()
def test_packed_inference_in_bfloat16_keeps_the_decisions_and_follows_the_masked_logits(skimmer, batch):
    """bench.py --dtype bfloat16: the packed path runs in bfloat16 end to end and, with the same decisions,
    computes what the masked bfloat16 model computes, and what float32 computes, to bfloat16's rounding
    (8 bits of mantissa). A classifier head of unit-variance weights makes the logits large enough to see."""
    ids, mask = batch
    m = Transkimmer(copy.deepcopy(skimmer.bert), tau=0.1)
    random_predictors(m, seed=1, mu0=0.3)
    m.bert.classifier.weight.normal_(std=1.0)
    decisions = decisions_with_a_fully_skimmed_example(mask, len(m.predictors), 0)
    reference = m.eval()(ids, mask, decisions=decisions).logits                    # float32
    m = m.to(torch.bfloat16)
    decisions = [d.to(torch.bfloat16) for d in decisions]
    masked, packed = m(ids, mask, decisions=decisions), m.infer(ids, mask, decisions=decisions)
    scale = reference.abs().max()
    assert packed.logits.dtype == torch.bfloat16 and scale > 1
    assert all(torch.equal(a, b) for a, b in zip(masked.masks, packed.masks))
    assert (masked.logits.float() - packed.logits.float()).abs().max() <= 0.02 * scale
    assert 0 < (packed.logits.float() - reference).abs().max() <= 0.05 * scale


# -----------------------------------------------------------------------------
# the operating point: keep where p(keep) > keep_threshold

@torch.no_grad()
def test_the_default_threshold_decides_by_argmax(random_skimmer, batch):
    ids, mask = batch
    x = random_skimmer.bert.embeddings(ids, torch.zeros_like(ids))                  # the first predictor's input
    argmax = random_skimmer.predictors[0](x).argmax(-1)
    assert 0 < argmax.sum() < argmax.numel(), "the test needs decisions of both kinds"
    assert torch.equal(random_skimmer.decide(random_skimmer.predictors[0], x), argmax.to(x.dtype))


@torch.no_grad()
@pytest.mark.parametrize("threshold", [0.01, 0.5, 0.99])
def test_the_threshold_is_a_cutoff_on_the_softmax_keep_probability(random_skimmer, batch, threshold):
    ids, mask = batch
    random_skimmer.keep_threshold = threshold
    x = random_skimmer.bert.embeddings(ids, torch.zeros_like(ids))
    p_keep = F.softmax(random_skimmer.predictors[0](x), dim=-1)[..., 1]
    expected = (p_keep > threshold).to(x.dtype)
    assert 0 < expected.sum() < expected.numel(), "the test needs decisions of both kinds"
    assert torch.equal(random_skimmer.decide(random_skimmer.predictors[0], x), expected)


@torch.no_grad()
def test_a_lower_threshold_keeps_more_and_pruning_still_equals_masking(random_skimmer, batch):
    ids, mask = batch
    kept = {}
    for threshold in (0.01, 0.5, 0.99):
        random_skimmer.keep_threshold = threshold
        masked = random_skimmer(ids, mask)
        for pruned in (random_skimmer(ids, mask, prune=True), random_skimmer.infer(ids, mask)):
            assert (masked.logits - pruned.logits).abs().max() <= 1e-5
            assert all(torch.equal(a, b) for a, b in zip(masked.masks, pruned.masks))
            assert pruned.aux_loss == masked.aux_loss
        kept[threshold] = masked.aux_loss.item()
    assert kept[0.01] > kept[0.5] > kept[0.99]


# -----------------------------------------------------------------------------
# frozen predictors: the encoder trains on under the decisions evaluation takes

def frozen_copy(source, threshold):
    """A Transkimmer sharing `source`'s encoder, with a copy of its predictors frozen at `threshold`."""
    m = Transkimmer(source.bert, tau=source.tau)
    m.predictors.load_state_dict(source.predictors.state_dict())
    m.freeze(threshold)
    return m


@torch.no_grad()
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_freezing_at_a_threshold_gives_its_decisions_at_the_default_one(random_skimmer, batch, threshold):
    ids, mask = batch
    random_skimmer.keep_threshold = threshold
    at_threshold = random_skimmer(ids, mask).masks
    frozen = frozen_copy(random_skimmer, threshold).eval()
    assert frozen.keep_threshold == skim.KEEP_THRESHOLD
    assert all(torch.equal(a, b) for a, b in zip(frozen(ids, mask).masks, at_threshold))
    assert all(torch.equal(a, b) for a, b in zip(frozen(ids, mask, prune=True).masks, at_threshold))
    assert all(torch.equal(a, b) for a, b in zip(frozen.infer(ids, mask).masks, at_threshold))


@torch.no_grad()
def test_frozen_predictors_decide_in_training_without_noise(random_skimmer, batch):
    ids, mask = batch
    x = random_skimmer.bert.embeddings(ids, torch.zeros_like(ids))                  # the first predictor's input
    frozen = frozen_copy(random_skimmer, 0.5)
    evaluation = frozen.eval().decide(frozen.predictors[0], x)
    assert 0 < evaluation.sum() < evaluation.numel(), "the test needs decisions of both kinds"
    sampled = random_skimmer.train().decide(random_skimmer.predictors[0], x)
    frozen.train()
    try:
        assert not torch.equal(sampled, evaluation), "the test needs sampled decisions that differ"
        assert all(torch.equal(frozen.decide(frozen.predictors[0], x), evaluation) for _ in range(3))
    finally:
        frozen.eval()  # the encoder is the module-scoped fixture's


def test_frozen_predictors_train_the_encoder_alone_as_under_fixed_decisions():
    """The encoder's gradient under frozen predictors is the gradient with their decisions given as
    constants: no straight-through path is left, and the predictors get no gradient at all."""
    config = model.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    m = Transkimmer(model.BertForSequenceClassification(config))
    random_predictors(m, seed=3)
    m.freeze(0.5)
    ids, mask = torch.randint(1, 50, (4, 9)), torch.ones(4, 9, dtype=torch.long)
    with torch.no_grad():
        decisions = [keep.clone() for keep in m.eval()(ids, mask).masks]
    assert 0 < sum(d.sum() for d in decisions) < 3 * decisions[0].numel(), "the test needs skimmed tokens"
    m.train()
    grads = []
    for given in (None, decisions):
        m.zero_grad()
        m(ids, mask, decisions=given).logits.sum().backward()
        grads.append([p.grad.clone() for p in m.bert.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert any(g.abs().sum() > 0 for g in grads[0])
    assert all(p.grad is None and not p.requires_grad for p in m.predictors.parameters())


@torch.no_grad()
def test_skim_attention_layer_equals_the_layer_on_kept_tokens_alone(skimmer):
    layer = skimmer.bert.layers[0].eval()
    torch.manual_seed(0)
    B, N, d = 3, 9, skimmer.config.hidden_size
    x = torch.randn(B, N, d)
    pad = torch.ones(B, N)
    pad[1, 6:] = 0
    keep = skim.update_keep(pad, (torch.rand(B, N) < 0.5).float())
    out = layer(x, model.padding_bias(pad, x.dtype), keep)
    for b in range(B):
        kept = keep[b].bool()
        alone = layer(x[b, kept][None], torch.zeros(1, 1, 1, int(kept.sum())))[0]
        assert (out[b, kept] - alone).abs().max() <= 1e-5


# -----------------------------------------------------------------------------
# the gradient estimator (Eq. 5)

def test_estimator_forward_is_exactly_one_hot():
    torch.manual_seed(0)
    for tau in (0.1, 1.0, 10.0):
        y = straight_through_gumbel_softmax(torch.randn(1000, 2) * 3, tau)
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(y.sum(-1), torch.ones(1000))


def test_estimator_gradient_is_the_relaxed_samples_gradient():
    torch.manual_seed(0)
    logits = torch.randn(50, 2, requires_grad=True)
    g = skim.sample_gumbel(logits)
    w = torch.randn(50, 2)
    (straight_through_gumbel_softmax(logits, 0.5, g) * w).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    (F.softmax((logits + g) / 0.5, dim=-1) * w).sum().backward()  # autograd through the relaxed sample
    assert torch.allclose(ours, logits.grad, atol=1e-7)
    assert ours.abs().sum() > 0


def test_estimator_equals_torch_gumbel_softmax_hard_on_the_same_noise():
    logits = (torch.randn(200, 2, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_()
    w = torch.randn(200, 2)
    torch.manual_seed(123)
    ours = straight_through_gumbel_softmax(logits, 0.1)
    (ours * w).sum().backward()
    ours_grad = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(123)
    ref = F.gumbel_softmax(logits, tau=0.1, hard=True)
    (ref * w).sum().backward()
    assert torch.equal(ours, ref)
    assert torch.allclose(ours_grad, logits.grad, atol=1e-6)


def test_keep_frequency_matches_the_softmax_probability():
    """Gumbel-max: P(argmax(logits + g) = 1) = softmax(logits)[1]. n = 200,000 draws per probability;
    tolerance 5 standard errors, sqrt(p(1-p)/n) <= 0.0011, so a false failure has odds ~1e-6."""
    torch.manual_seed(0)
    n = 200_000
    for p_keep in (0.02, 0.3, 0.5, 0.9, 0.995):
        logits = torch.tensor([0.0, torch.logit(torch.tensor(p_keep)).item()]).expand(n, 2)
        freq = straight_through_gumbel_softmax(logits, 0.1)[:, 1].mean().item()
        assert abs(freq - p_keep) <= 5 * (p_keep * (1 - p_keep) / n) ** 0.5, p_keep


# -----------------------------------------------------------------------------
# training: gradients, masks, loss

def test_gradients_reach_every_predictor_in_a_training_step(skimmer, batch):
    """Wiring test: the gradient of task + skim loss reaches every parameter of every predictor.
    (At the paper's init, mu0 = 5 with tau = 0.1, the relaxed gradient is ~exp(-100) and underflows;
    a smaller mu0 makes the decisions uncertain enough for the gradient to be visible.)"""
    ids, mask = batch
    m = Transkimmer(skimmer.bert, tau=1.0, mu0=0.5).train()
    torch.manual_seed(0)
    out = m(ids, mask)
    loss = skim.total_loss(F.cross_entropy(out.logits, torch.tensor([1, 0, 1, 1, 0])), out.aux_loss, 0.3)
    loss.backward()
    for i, p in enumerate(m.predictors):
        for name, param in p.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, f"predictor {i} {name}"
    m.zero_grad()
    skimmer.bert.zero_grad()


def grad_mass(module):
    return sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None)


def test_separate_predictor_grad_keeps_the_decisions_gradient_out_of_the_encoder(skimmer, batch):
    """--predictor-grad separate: same forward pass; the skim loss (a function of the decisions only)
    no longer reaches the encoder, while the task loss still does and the predictors still learn."""
    ids, mask = batch
    grads, logits = {}, {}
    for mode in ("joint", "separate"):
        m = Transkimmer(skimmer.bert, tau=1.0, mu0=0.5).train()
        random_predictors(m, seed=3, mu0=0.5)
        m.predictor_grad = mode
        skimmer.bert.zero_grad()
        torch.manual_seed(0)
        out = m(ids, mask)
        out.aux_loss.backward(retain_graph=True)
        grads[mode] = {"encoder": grad_mass(m.bert), "predictors": grad_mass(m.predictors)}
        skimmer.bert.zero_grad()
        F.cross_entropy(out.logits, torch.tensor([1, 0, 1, 1, 0])).backward()
        grads[mode]["task->encoder"] = grad_mass(m.bert)
        logits[mode] = out.logits.detach()
        skimmer.bert.zero_grad()
    torch.testing.assert_close(logits["separate"], logits["joint"], rtol=0, atol=0)
    assert grads["joint"]["encoder"] > 0
    assert grads["separate"]["encoder"] == 0
    assert grads["separate"]["predictors"] > 0 and grads["separate"]["task->encoder"] > 0


@pytest.mark.parametrize("train", [True, False])
def test_masks_keep_cls_never_keep_padding_and_never_grow(random_skimmer, batch, train):
    ids, mask = batch
    random_skimmer.train(train)
    torch.manual_seed(0)
    with torch.no_grad():
        masks = random_skimmer(ids, mask).masks
    random_skimmer.eval()
    previous = mask.float()
    for keep in masks:
        assert set(keep.unique().tolist()) <= {0.0, 1.0}
        assert torch.all(keep[:, 0] == 1)
        assert torch.all(keep[mask == 0] == 0)
        assert torch.all(keep <= previous)
        previous = keep
    assert previous.sum() < mask.sum(), "these predictors should skim something"


@torch.no_grad()
def test_skim_loss_equals_a_brute_force_count(random_skimmer, batch):
    ids, mask = batch
    out = random_skimmer(ids, mask)
    fractions = []
    for keep in out.masks:
        kept = sum(1 for b in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[b, j] and keep[b, j])
        fractions.append(kept / int(mask.sum()))
    assert abs(out.aux_loss.item() - sum(fractions) / len(fractions)) <= 1e-6


def test_unbalanced_init_biases():
    torch.manual_seed(0)
    biases = torch.stack([skim.SkimPredictor(16, mu0=5.0).fc2.bias for _ in range(200)])
    assert abs(biases[:, 1].mean() - 5.0) < 0.01 and abs(biases[:, 0].mean() + 5.0) < 0.01


# -----------------------------------------------------------------------------
# checkpoints

def test_save_and_load_round_trip(random_skimmer, batch, tmp_path):
    ids, mask = batch
    random_skimmer.tau = 0.2
    random_skimmer.save_pretrained(tmp_path)
    again = Transkimmer.from_pretrained(tmp_path)
    assert again.tau == 0.2
    with torch.no_grad():
        a, b = random_skimmer(ids, mask), again(ids, mask)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks))


def test_predictors_that_do_not_fit_are_one_clear_error(random_skimmer, tmp_path):
    from safetensors.torch import load_file, save_file
    random_skimmer.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["skim.0.fc2.bias"] = torch.zeros(3)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(model.ModelError) as e:
        Transkimmer.from_pretrained(tmp_path)
    assert "skim predictors" in str(e.value) and "\n" not in str(e.value)


# -----------------------------------------------------------------------------
# not in the paper: reaching a target speedup
