"""recipe.py's speedup machinery (not in the paper): the keep threshold calibrated to a target speedup, and the
controller that steers lambda towards it."""

import pytest
import torch

import recipe
import skim
from test_skim import batch, random_skimmer, shared_model_back_in_eval_mode, skimmer  # noqa: F401 (fixtures)


def test_calibration_finds_the_lowest_threshold_that_reaches_the_target(random_skimmer, batch):
    ids, mask = batch
    batches = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}]
    for target in (1.3, 2.0):
        t = recipe.calibrate_threshold(random_skimmer, batches, target)
        z = torch.logit(torch.tensor(t, dtype=torch.float64)).item()
        below = 1 / (1 + torch.exp(torch.tensor(-(z - 32 / 2 ** 16), dtype=torch.float64)).item())  # one bisection step lower
        assert recipe.speedup_at(random_skimmer, batches, t) >= target > recipe.speedup_at(random_skimmer, batches, below)
        assert random_skimmer.keep_threshold == skim.KEEP_THRESHOLD  # the model's own threshold is left as it was
    random_skimmer.train()
    recipe.speedup_at(random_skimmer, batches, 0.5)
    assert random_skimmer.training                                # and its mode: training measures between steps


def test_the_controller_raises_lambda_while_too_slow_lowers_it_when_too_fast_and_ramps_the_target():
    c = recipe.SpeedupController(target_speedup=2.0, total_steps=100, ramp=0.5, kp=1.0, ki=0.1)
    assert c.target() == 1.0
    coefs = [c.update(0.9) for _ in range(50)]                       # the target falls to 0.5 over 50 steps
    assert c.target() == 0.5 and all(b > a for a, b in zip(coefs[10:], coefs[11:]))
    held = [c.update(0.5) for _ in range(5)]                          # on target: the integral holds lambda
    assert held[0] == held[-1] == pytest.approx(c.integral)
    assert c.update(0.3) < held[-1] - 0.2                             # too fast: at once lower, by kp * 0.2 and more
    state = c.state_dict()
    twin = recipe.SpeedupController(target_speedup=2.0, total_steps=100, ramp=0.5, kp=1.0, ki=0.1)
    twin.load_state_dict(state)
    assert twin.update(0.6) == c.update(0.6) and twin.target() == c.target()


def test_a_rescaled_controller_steers_the_other_inputs_estimated_fraction():
    new = lambda: recipe.SpeedupController(target_speedup=2.0, total_steps=10, ramp=0.1, kp=1.0, ki=0.1)  # noqa: E731
    c, twin = new(), new()                       # the target: 1 at step 0, then 1/S = 0.5
    c.rescale(0.4, 0.5)                          # the other inputs run at 0.8 times the batches' fraction
    assert c.update(1.25) == pytest.approx(0) == twin.update(1.0)  # 1.25 * 0.8 = 1: on target, lambda stays 0
    coef = c.update(0.5)                                            # batches at 1/S: too fast for the others
    assert coef < 0 and coef == pytest.approx(twin.update(0.4))
    state = c.state_dict()
    twin = new()
    twin.load_state_dict(state)
    assert twin.update(0.7) == c.update(0.7)     # the ratio is part of the state
    del state["scale"]
    twin.load_state_dict(state)                  # a state saved before rescale existed steered its batches
    assert twin.scale == 1.0


def test_sized_stages_lengthen_a_short_run_by_one_factor_and_leave_a_long_one():
    stages = recipe.parse_stages(recipe.DEFAULT_STAGES)                    # 1 + 0.5 + 0.5 epochs
    # RTE: 2,490 examples, 78 steps an epoch, 156 in all; to 600: every stage by 600 / 156
    sized = recipe.sized_stages(stages, 2490, 32, 600)
    assert [kind for kind, _, _ in sized] == ["dense", "skim", "frozen"] and [lr for *_, lr in sized] == [2e-4, 2e-4, 5e-5]
    assert [e for _, e, _ in sized] == pytest.approx([600 / 156, 300 / 156, 300 / 156], abs=1e-4)
    assert sum(round(78 * e) for _, e, _ in sized) == 600                 # the steps train_stage will take
    # SST-2: 67,349 examples, 4,210 steps already: as given
    assert recipe.sized_stages(stages, 67349, 32, 600) == tuple(stages)
    assert recipe.sized_stages(stages, 2490, 32, 0) == tuple(stages)
