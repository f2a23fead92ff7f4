"""gpu/fixed.py, Transkimmer's pruning in fixed shapes: where it overflows and where it computes exactly what the
masked model computes, that it reads nothing back to the host, and that what it executes is counted. (That it
equals the masked forward at capacities that drop nothing: tests/test_skim.py, with the other pruned paths.)"""

import pytest
import torch

from gpu import fixed
from test_flops import count, random_batch, random_decisions, reference_flops, skimmer_on, small_bert, SMALL  # noqa: F401
from test_skim import batch, random_skimmer, shared_model_back_in_eval_mode, skimmer, tight_capacity  # noqa: F401


@torch.no_grad()
def test_fixed_capacity_flags_the_examples_it_overflows_and_computes_the_others_exactly(random_skimmer, batch):
    """infer_fixed below the tight capacities: an example that keeps more tokens than a layer's capacity is
    flagged (and loses its last ones); every other example still gets the masked model's logits and masks.
    fixed.capacity_for gives capacities at which nothing overflows."""
    ids, mask = batch
    masked = random_skimmer(ids, mask)
    tight = tight_capacity(random_skimmer, ids, mask, None)
    counts = torch.stack([k.sum(1) for k in masked.masks])                        # (L, B)
    C = int(counts[1].max()) - 1                                                   # layer 1 one token short
    capacity = [1.0, C / ids.shape[1]] + [1.0] * (len(tight) - 2)
    out, overflow = fixed.infer_fixed(random_skimmer, ids, mask, None, capacity)
    over = (counts[1:] > C).any(0)                                                 # kept more than C at layer 1 on
    assert over.any() and not over.all(), "the test needs some examples over the capacity and some under"
    assert torch.equal(overflow, over)
    assert (out.logits[~over] - masked.logits[~over]).abs().max() <= 1e-5
    assert all(torch.equal(a[~over], b[~over]) for a, b in zip(out.masks, masked.masks))
    assert all(int(k.sum(1).max()) <= C for k in out.masks[1:])
    fit = fixed.capacity_for(random_skimmer, [{"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}])
    assert fit == pytest.approx(tight) and not fixed.infer_fixed(random_skimmer, ids, mask, None, fit)[1].any()


@torch.no_grad()
def test_fixed_capacity_inference_reads_nothing_back_to_the_host(random_skimmer, batch, monkeypatch):
    """infer_fixed has no data-dependent shape and no host synchronisation: on the CPU, where nothing
    synchronises, every tensor method that would read a value back (item, tolist, nonzero, bool, int, float)
    is made to fail during the call; infer, which reads its kept counts back, fails under the same patch."""
    ids, mask = batch
    capacity = tight_capacity(random_skimmer, ids, mask, None)
    def read_back(*args, **kwargs):
        raise AssertionError("a value was read back to the host")
    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, read_back)
    fixed.infer_fixed(random_skimmer, ids, mask, None, capacity)
    with pytest.raises(AssertionError, match="read back"):
        random_skimmer.infer(ids, mask)


@pytest.mark.parametrize("forced", [True, False])
def test_fixed_capacity_count_equals_flop_counter_mode_on_its_columns(small_bert, forced):
    """fixed.infer_fixed runs layer i on C_i columns (fixed.fixed_columns) of every example, whatever each
    keeps: what it executes is fixed.padded_to_columns' count ("all": its last layer computes every column),
    more than the no-padding count of its masks."""
    skimmer = skimmer_on(small_bert, seed=4)
    ids, mask = random_batch(SMALL.vocab_size, [14, 3, 9, 12, 1], seed=5)
    decisions = random_decisions(mask, SMALL.num_hidden_layers, 0.8, seed=6) if forced else None
    capacity = [0.9, 0.6, 0.5]
    with torch.inference_mode():
        masks = fixed.infer_fixed(skimmer, ids, mask, None, capacity, decisions)[0].masks
    columns = fixed.fixed_columns(capacity, ids.shape[1])
    assert columns == [13, 9, 7]                                                   # ceil(0.9 * 14), ...
    executed = count(SMALL, *fixed.padded_to_columns(columns, mask), predictors=not forced)["none"]
    assert executed["skim"] == reference_flops(fixed.infer_fixed, skimmer, ids, mask, None, capacity, decisions)
    assert executed["skim"] > count(SMALL, masks, mask, predictors=not forced)["none"]["skim"]
