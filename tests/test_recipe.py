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


def test_a_short_stage_gets_the_integral_gain_scaled_so_that_lambda_grows_as_far_over_it():
    """ki is KI = 0.02 per step on a stage of KI_STEPS = 1,052 steps (SST-2's skim stage) or longer, and
    0.02 * 1052 / steps on a shorter one: held too slow by the same error throughout, a 150-step stage and
    SST-2's end with the same integral."""
    assert recipe.SpeedupController(2.0, total_steps=1052).ki == 0.02
    assert recipe.SpeedupController(2.0, total_steps=5000).ki == 0.02
    assert recipe.SpeedupController(2.0, total_steps=150).ki == pytest.approx(0.02 * 1052 / 150)
    assert recipe.SpeedupController(2.0, total_steps=150, ki=0.1).ki == 0.1          # a gain given is kept
    ends = []
    for steps in (150, 1052):
        c = recipe.SpeedupController(2.0, total_steps=steps, ramp=1e-9)            # the target 0.5 after step 1
        for _ in range(steps):
            c.update(0.9)                                                          # then 0.4 too slow, every step
        ends.append(c.integral)
    assert ends[1] == pytest.approx(0.02 * (-0.1 + 1051 * 0.4))
    assert ends[0] == pytest.approx(ends[1], rel=0.01)                             # without the scaling: a seventh


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


def test_the_default_recipe_of_each_glue_task_by_its_training_set_size():
    """recipe.task_sized on the official training sets' sizes at batch 32 and MIN_STEPS 600: SST-2 (67,349) has
    the large-task recipe as it is; CoLA (8,551: 268 steps an epoch, 1,608 in 6 epochs) the small one as it is;
    RTE (2,490: 78 an epoch, 468) and WNLI (635: 20, 120) the small one, lengthened to 600 steps."""
    epochs = lambda n: [e for _, e, _ in recipe.task_sized("transkimmer", n, 32, 600)]  # noqa: E731
    assert epochs(67349) == [1.0, 0.5, 0.5]
    assert epochs(8551) == [3.0, 1.5, 1.5]
    assert epochs(2490) == pytest.approx([3 * 600 / 468, 1.5 * 600 / 468, 1.5 * 600 / 468], abs=1e-4)
    assert epochs(635) == [15.0, 7.5, 7.5]
    assert [lr for *_, lr in recipe.task_sized("transkimmer", 2490, 32, 600)] == [5e-5] * 3


@pytest.mark.parametrize("reached, warned", [(1.0, True), (1.95, False)])
def test_a_run_that_cannot_reach_its_target_says_so(monkeypatch, capsys, reached, warned):
    """recipe.finish: when no keep threshold brings the calibration sentences within 3% of --target-speedup
    (calibrate_threshold then returns the largest it tried), one warning line says where the model ends."""
    from types import SimpleNamespace
    model = SimpleNamespace(freeze=lambda t: None, eval=lambda: model)
    monkeypatch.setattr(recipe, "calibrate_threshold", lambda *a: 0.99)
    monkeypatch.setattr(recipe, "speedup_at", lambda *a: reached)
    records = [{}]
    recipe.finish(model, SimpleNamespace(target_speedup=2.0, keep_threshold=None), records, calibration=[])
    assert records[-1]["calibrated_speedup"] == reached
    err = capsys.readouterr().err
    assert ("no keep threshold reaches --target-speedup 2" in err) == warned
    assert (f"ends at {reached:.2f}x" in err) == warned
