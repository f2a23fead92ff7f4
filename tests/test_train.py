"""train.py end to end on a tiny fixture, and its one-line errors for bad input."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
import torch

import data
import flags
import recipe
import flops
import train
from conftest import SENTENCES, write_sst2

ROOT = Path(__file__).resolve().parents[1]
class Result(NamedTuple):
    returncode: int
    stderr: str


def run_process(*args):
    """The CLI as a user runs it: a fresh process, so argument parsing and exit codes are real."""
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def run_cli(*args):
    """The CLI in this process (a new process costs seconds of importing torch): train.cli is what
    `python train.py` runs, exit code and stderr included (test_an_error_from_a_fresh_process checks the two agree)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = train.cli([str(a) for a in args])
    return Result(code, stderr.getvalue())


def main(*args):
    """train.main in this process (faster than a subprocess), with the arguments as a shell passes them."""
    return train.main([str(a) for a in args])


DETERMINISTIC = ["accuracy", "eval_samples", "flops"]


def test_train_end_to_end_writes_everything_and_eval_only_reproduces_metrics(glue, tiny, tmp_path):
    out = tmp_path / "out"
    common = ["--data-dir", glue, "--batch-size", 8, "--timing-repeats", 1]
    trained = main("--task", "sst2", "--model", tiny, "--skim-coef", 0.5, "--epochs", 2, "--lr", "1e-4", "--output-dir", out, *common)
    for name in ["config.json", "model.safetensors", "tokenizer.json", "metrics.json", "retention.png",
                 "skimmed_tokens.html"]:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 8  # 30 examples / batch 8 = 4 steps an epoch, 2 epochs
    assert len(metrics["flops"]["kept_fraction"]) == 3  # one per layer
    assert metrics["measured_speedup"] == pytest.approx(metrics["dense_seconds"] / metrics["pruned_seconds"], rel=1e-2)
    assert "skim" in json.loads((out / "config.json").read_text())
    assert (out / "retention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = main("--task", "sst2", "--eval-only", "--checkpoint", out, "--output-dir", tmp_path / "re", *common)
    for key in DETERMINISTIC:
        assert again[key] == trained[key], key


def test_eval_only_no_skim_evaluates_a_transkimmer_checkpoint_with_every_token_kept(glue, tiny, tmp_path):
    import skim

    m = skim.Transkimmer.from_pretrained(tiny, num_labels=2)
    for p in m.predictors:
        p.reset_parameters(mu0=-5.0, std=0.02)  # predictors that skim nearly every token
    m.save_pretrained(tmp_path / "ckpt", m.bert.tokenizer)
    common = ["--task", "sst2", "--data-dir", glue, "--eval-only", "--checkpoint", tmp_path / "ckpt",
              "--timing-repeats", 0]
    skimmed = main(*common, "--output-dir", tmp_path / "skimmed")
    encoder = main(*common, "--no-skim", "--output-dir", tmp_path / "encoder")
    assert max(skimmed["flops"]["kept_fraction"][1:]) < 0.5
    assert encoder["flops"]["kept_fraction"] == [1.0] * 3


def test_keep_threshold_moves_a_saved_models_operating_point(glue, tiny, tmp_path):
    import skim

    saved = skim.Transkimmer.from_pretrained(tiny, num_labels=2)
    for p in saved.predictors:
        p.reset_parameters(mu0=0.5, std=0.1)  # predictors unsure enough that the threshold matters
    saved.save_pretrained(tmp_path / "ckpt", saved.bert.tokenizer)
    common = ["--task", "sst2", "--data-dir", glue, "--eval-only", "--checkpoint", tmp_path / "ckpt",
              "--timing-repeats", 0]
    default = main(*common, "--output-dir", tmp_path / "default")
    kept = {t: sum(main(*common, "--keep-threshold", t, "--output-dir", tmp_path / f"t{t}")["flops"]["kept_fraction"])
            for t in (0.2, 0.5, 0.8)}
    assert kept[0.2] > kept[0.5] > kept[0.8]
    assert kept[0.5] == sum(default["flops"]["kept_fraction"])
    assert json.loads((tmp_path / "t0.8" / "metrics.json").read_text())["args"]["keep_threshold"] == 0.8


def test_freeze_predictors_trains_the_encoder_alone_and_saves_the_threshold_folded_in(glue, tiny, tmp_path):
    import math

    import skim
    from safetensors.torch import load_file

    saved = skim.Transkimmer.from_pretrained(tiny, num_labels=2)
    for p in saved.predictors:
        p.reset_parameters(mu0=0.5, std=0.1)
    saved.save_pretrained(tmp_path / "ckpt", saved.bert.tokenizer)
    m = main("--task", "sst2", "--data-dir", glue, "--model", tmp_path / "ckpt", "--freeze-predictors", 0.7,
             "--batch-size", 8, "--max-train-samples", 16, "--timing-repeats", 0, "--output-dir", tmp_path / "out")
    before, after = load_file(tmp_path / "ckpt" / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    predictors = [name for name in before if name.startswith(skim.SKIM_PREFIX)]
    assert predictors and before.keys() == after.keys()
    for name in predictors:
        expected = before[name].clone()
        if name.endswith("fc2.bias"):
            expected[1] -= math.log(0.7 / 0.3)  # the keep logit, lowered by the threshold's log-odds
        assert torch.equal(after[name], expected), name
    assert any(not torch.equal(after[name], before[name]) for name in before.keys() - set(predictors))
    assert m["args"]["freeze_predictors"] == 0.7 and m["stages"] == [
        {"stage": "frozen", "epochs": 1.0, "keep_threshold": 0.7, "machines": [flops.machine_line()], "train_steps": 2,
         "train_seconds": m["train_seconds"]}]


def test_freeze_predictors_needs_a_model_with_trained_predictors(glue, tiny, tmp_path):
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--model", tiny, "--freeze-predictors",
                                  "--output-dir", tmp_path / "o"))
    assert "--freeze-predictors" in line and "no trained skim predictors" in line


def test_same_seed_gives_the_same_numbers(glue, tiny, tmp_path):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--stages", "dense:1,skim:1,frozen:1", "--timing-repeats", 0,
            "--max-train-samples", 16, "--lr", "1e-4"]
    a = main(*args, "--output-dir", tmp_path / "a")
    b = main(*args, "--output-dir", tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a["flops"] == b["flops"] and a["accuracy"] == b["accuracy"]


def test_dense_baseline_trains_and_reports_no_speedup(glue, tiny, tmp_path):
    m = main(*["--task", "sst2", "--model", tiny, "--no-skim", "--data-dir", glue, "--batch-size", 8, "--epochs", 1,
                    "--max-train-samples", 8, "--output-dir", tmp_path / "dense"])
    assert m["flops"]["none"]["speedup"] == pytest.approx(1.0)
    assert "skim" not in json.loads((tmp_path / "dense" / "config.json").read_text())


def tiny_transkimmer():
    import model
    import skim

    config = model.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=16)
    return skim.Transkimmer(model.BertForSequenceClassification(config))


@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_a_predictor_gradient_spike_shrinks_the_encoder_step_only_when_clipped_jointly(mode):
    import torch

    m = tiny_transkimmer()
    m.predictor_grad = mode
    for p in m.bert.parameters():
        p.grad = torch.full_like(p, 1e-3)  # encoder gradient norm well under 1
    for p in m.predictors.parameters():
        p.grad = torch.full_like(p, 1e3)   # a straight-through spike
    for group in train.clip_groups(m, SimpleNamespace(predictor_grad=mode)):
        torch.nn.utils.clip_grad_norm_(group, 1.0)
    encoder = torch.cat([p.grad.flatten() for p in m.bert.parameters()])
    predictors = torch.cat([p.grad.flatten() for p in m.predictors.parameters()])
    assert predictors.norm() <= 1.0 + 1e-5
    if mode == "separate":
        assert torch.all(encoder == 1e-3)
    else:
        assert encoder.max() < 1e-6  # scaled down with the spike


def settings_of(glue, tmp_path, *flag_values):
    """The Settings that train.py resolves from these flags (with the fixture's data and a fresh output folder)."""
    return flags.parse(["--data-dir", str(glue), "--output-dir", str(tmp_path / "settings"), *map(str, flag_values)])[0]


@pytest.mark.parametrize("method", ["transkimmer", "topk", "skipmiddle"])
def test_the_reachable_speedup_check_draws_nothing_from_the_runs_random_stream(glue, tmp_path, method, monkeypatch):
    """flags.check_reachable asks the method's class for its bound on a run's dense first-stage model (no model
    is built for it), so it draws nothing and a run trains as it would without the check."""
    import methods
    settings = settings_of(glue, tmp_path, "--method", method, "--target-speedup", 1.2)  # within every bound here
    dense = methods.Dense(tiny_transkimmer().bert)
    mask = torch.ones(2, 5, dtype=torch.long)
    calibration = [{"input_ids": torch.ones_like(mask), "attention_mask": mask, "token_type_ids": 0 * mask}]
    def built(*a, **k):
        raise AssertionError("a model was built to check the flag")
    monkeypatch.setattr(methods.METHODS[method], "__init__", built)
    torch.manual_seed(0)
    flags.check_reachable(settings, dense, calibration)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))
    with pytest.raises(flags.UsageError, match="reachable"):                       # and it does check
        flags.check_reachable(dataclasses_replace(settings, target_speedup=1e12), dense, calibration)


def test_predictors_learn_at_their_own_rate_and_the_encoder_at_the_stages(glue, tmp_path):
    m = tiny_transkimmer()
    args = settings_of(glue, tmp_path, "--predictor-lr", "3e-4", "--skim-coef")
    lr_of = {id(p): g["lr"] for g in train.optimizer_for(m, args, 1e-5).param_groups for p in g["params"]}
    assert len(lr_of) == len(list(m.parameters()))  # every parameter is optimised, once
    assert all(lr_of[id(p)] == 1e-5 for p in m.bert.parameters())
    assert all(lr_of[id(p)] == 3e-4 for p in m.predictors.parameters())
    default = train.optimizer_for(m, settings_of(glue, tmp_path, "--skim-coef"), 1e-5)
    assert {g["lr"] for g in default.param_groups} == {1e-5}


def test_a_bare_skim_coef_is_the_papers_lambda_for_the_task(glue, tmp_path):
    assert settings_of(glue, tmp_path, "--task", "sst2", "--skim-coef").skim_coef == data.get_task("sst2").skim_coef
    assert settings_of(glue, tmp_path, "--task", "sst2", "--skim-coef", "0.7").skim_coef == 0.7


def test_each_stage_trains_at_its_own_learning_rate_or_at_lr(glue, tiny, tmp_path, monkeypatch):
    assert settings_of(glue, tmp_path, "--stages", "dense:1:1e-3,skim:0.5,frozen:2:2e-5", "--lr", "3e-4").stages == (
        ("dense", 1.0, 1e-3), ("skim", 0.5, 3e-4), ("frozen", 2.0, 2e-5))
    assert settings_of(glue, tmp_path, "--stages", "dense:1").stages == (("dense", 1.0, flags.LR),)
    assert settings_of(glue, tmp_path, "--no-skim", "--lr", "1e-4").stages == (("dense", 1.0, 1e-4),)
    assert all(lr is not None for _, _, lr in recipe.parse_stages(recipe.DEFAULT_STAGES))  # the recipe names its own
    peaks, optimizer_for = [], train.optimizer_for
    monkeypatch.setattr(train, "optimizer_for", lambda *a: peaks.append(a[-1]) or optimizer_for(*a))
    main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--lr", "3e-4", "--stages",
         "dense:1:1e-3,skim:1,frozen:1:2e-5", "--timing-repeats", 0, "--output-dir", tmp_path / "o")
    assert peaks == [1e-3, 3e-4, 2e-5]
    recorded = json.loads((tmp_path / "o" / "metrics.json").read_text())["args"]["stages"]
    assert recorded == [["dense", 1.0, 1e-3], ["skim", 1.0, 3e-4], ["frozen", 1.0, 2e-5]]


def test_distill_loss_is_the_tempered_kl_from_teacher_to_student_times_t_squared():
    import numpy as np
    import torch

    import data

    student, teacher = torch.tensor([[2.0, -1.0], [0.5, 0.0]]), torch.tensor([[0.0, 1.0], [3.0, -2.0]])
    t = 2.0
    ps, pt = [np.exp(x / t) / np.exp(x / t).sum(-1, keepdims=True) for x in (student.numpy(), teacher.numpy())]
    by_hand = t * t * (pt * np.log(pt / ps)).sum(-1).mean()
    sst2, stsb = data.get_task("sst2"), data.get_task("stsb")
    assert train.distill_loss(student, teacher, sst2, t).item() == pytest.approx(by_hand, rel=1e-5)
    assert train.distill_loss(teacher, teacher, sst2, t).item() == pytest.approx(0.0, abs=1e-6)
    regression = train.distill_loss(student[:, :1], teacher[:, :1], stsb, t).item()
    assert regression == pytest.approx(((2.0 - 0.0) ** 2 + (0.5 - 3.0) ** 2) / 2)


@pytest.fixture
def teacher(tiny, tmp_path):
    """A classifier checkpoint to distil from (its head is untrained; only its being a fixed target matters)."""
    import model

    m = model.BertForSequenceClassification.from_pretrained(tiny, num_labels=2)
    m.save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_a_teacher_replaces_the_labels_in_proportion_to_distill_coef(glue, tiny, teacher, tmp_path):
    """With --distill-coef 1 the labels no longer matter: flipping them all leaves the trained model
    unchanged. With --distill-coef 0 the teacher no longer matters: the model is the one trained without it."""
    flipped = write_sst2(tmp_path / "flipped", [(s, 1 - label) for s, label in SENTENCES * 3])
    write_sst2(flipped, SENTENCES[:6], name="dev.tsv")
    common = ["--task", "sst2", "--model", tiny, "--skim-coef", 0.3, "--batch-size", 8, "--max-train-samples", 16,
              "--lr", "1e-4", "--timing-repeats", 0]
    weights = {}
    for name, extra in {"labels": ["--data-dir", glue, "--teacher", teacher, "--distill-coef", 1],
                        "flipped": ["--data-dir", flipped, "--teacher", teacher, "--distill-coef", 1],
                        "coef0": ["--data-dir", glue, "--teacher", teacher, "--distill-coef", 0],
                        "none": ["--data-dir", glue]}.items():
        main(*common, *extra, "--output-dir", tmp_path / name)
        weights[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert weights["labels"] == weights["flipped"]
    assert weights["coef0"] == weights["none"]
    assert weights["labels"] != weights["none"]


# -----------------------------------------------------------------------------
# bad input: exit code 2 and one line on stderr

def one_error_line(result):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_unknown_task(glue):
    assert "sst3" in one_error_line(run_cli("--task", "sst3", "--data-dir", glue))


def test_an_error_from_a_fresh_process_is_one_line_and_exit_code_2(glue, tmp_path):
    result = run_process("--task", "sst2", "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "o")
    assert one_error_line(result) == one_error_line(run_cli("--task", "sst2", "--data-dir", tmp_path / "nowhere",
                                                            "--output-dir", tmp_path / "o"))


def test_missing_data(tmp_path):
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "o"))
    assert "nowhere" in line


def test_malformed_tsv_row(glue, tmp_path):
    (glue / "SST-2" / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\nno label here\n")
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--output-dir", tmp_path / "o"))
    assert "dev.tsv" in line and "3" in line


def test_label_outside_the_task_set(glue, tmp_path):
    (glue / "SST-2" / "dev.tsv").write_text("sentence\tlabel\na fine film\t7\n")
    assert "7" in one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--output-dir", tmp_path / "o"))


def test_batch_size_zero(glue):
    assert "--batch-size" in one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--batch-size", 0))


def test_predictor_lr_not_positive(glue):
    assert "--predictor-lr" in one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--predictor-lr", -1))


def test_unwritable_output_dir(glue, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert "not writable" in one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--output-dir", blocker / "out"))


def test_checkpoint_that_is_not_a_model_folder(glue, tmp_path):
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--eval-only", "--checkpoint", tmp_path,
                                  "--output-dir", tmp_path / "o"))
    assert "config.json" in line


def teacher_error(glue, tiny, teacher, out):
    """The one error line of a short training run given --teacher `teacher`."""
    return one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--model", tiny, "--teacher", teacher,
                                  "--max-train-samples", 8, "--output-dir", out))


def test_teacher_without_a_classifier(glue, tiny, tmp_path):
    import model

    model.Bert.from_pretrained(tiny).save_pretrained(tmp_path / "base")  # a pre-trained encoder, no task head
    line = teacher_error(glue, tiny, tmp_path / "base", tmp_path / "o")
    assert "--teacher" in line and "classifier" in line


def test_teacher_for_another_number_of_labels(glue, tiny, tmp_path):
    import model

    model.BertForSequenceClassification.from_pretrained(tiny, num_labels=3).save_pretrained(tmp_path / "three")
    line = teacher_error(glue, tiny, tmp_path / "three", tmp_path / "o")
    assert "3 output(s)" in line


@pytest.mark.parametrize("flags, says", [(["--teacher", "x", "--distill-coef", "1.5"], "--distill-coef weighs"),
                                         (["--teacher", "x", "--distill-temp", "0"], "--distill-temp must be positive"),
                                         (["--teacher", "x", "--eval-only", "--checkpoint", "y"], "--teacher is for"),
                                         (["--distill-coef", "0.5"], "need --teacher"),
                                         (["--keep-threshold", "1"], "a probability in (0, 1)"),
                                         (["--keep-threshold", "0.7", "--no-skim"], "--no-skim keeps every token"),
                                         (["--keep-threshold", "0.7", "--stages", "dense:1"], "train a dense model"),
                                         (["--stages", "skim:1,dense:1"], "cannot follow a skim stage"),
                                         (["--stages", "frozen:1,skim:1"], "cannot follow a frozen stage"),
                                         (["--stages", "skim"], "is not KIND:EPOCHS"),
                                         (["--stages", "skim:1:fast"], "is not KIND:EPOCHS"),
                                         (["--stages", "skim:1:0"], "LR > 0"),
                                         (["--stages", "skim:1:1e-4:2"], "is not KIND:EPOCHS"),
                                         (["--lr", "1e-4"], "set their own learning rates"),
                                         (["--stages", "dense:1", "--epochs", "2"], "with --stages give each"),
                                         (["--epochs", "2"], "the default recipe has stages"),
                                         (["--skim-coef", "0.3", "--target-speedup", "2"], "give one of them"),
                                         (["--target-speedup", "1"], "above 1"),
                                         (["--no-skim", "--target-speedup", "2"], "needs a skim or frozen stage"),
                                         (["--steer-every", "-1"], "at least 0"),
                                         (["--skim-coef", "0.3", "--steer-every", "50"], "has no such stage"),
                                         (["--stages", "dense:1,frozen:1", "--steer-every", "50"], "no such stage"),
                                         (["--freeze-predictors", "--target-speedup", "2"], "give one of them"),
                                         (["--freeze-predictors", "--stages", "frozen:1"], "is a one-stage run"),
                                         (["--save-every", "-1"], "--save-every"),
                                         (["--max-grad-norm", "-1"], "--max-grad-norm"),
                                         (["--holdout", "5", "--eval-only", "--checkpoint", "y"], "--eval-only trains"),
                                         (["--freeze-predictors", "1"], "a keep threshold in (0, 1)"),
                                         (["--freeze-predictors", "--no-skim"], "--no-skim has no predictors"),
                                         (["--freeze-predictors", "--eval-only", "--checkpoint", "y"],
                                          "--eval-only trains nothing"),
                                         (["--freeze-predictors", "0.6", "--keep-threshold", "0.6"],
                                          "already sets the keep threshold"),
                                         (["--freeze-predictors", "0.6", "--skim-coef", "0.3"], "keeps them fixed"),
                                         (["--freeze-predictors", "--predictor-lr", "1e-4"], "keeps them fixed")])
def test_impossible_flag_combinations(glue, flags, says):
    assert says in one_error_line(run_cli("--task", "sst2", "--data-dir", glue, *flags))


@pytest.mark.parametrize("threshold", ["0.7", "0.5"])  # 0.5, the default, is still a flag a dense model cannot take
def test_keep_threshold_on_a_dense_checkpoint(glue, tiny, tmp_path, threshold):
    import model

    model.BertForSequenceClassification.from_pretrained(tiny, num_labels=2).save_pretrained(tmp_path / "dense")
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", glue, "--eval-only", "--checkpoint",
                                  tmp_path / "dense", "--keep-threshold", threshold, "--output-dir", tmp_path / "o"))
    assert "dense model" in line and "--keep-threshold" in line


def test_teacher_with_another_vocabulary(glue, tiny, tmp_path):
    import model

    config = model.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=16)
    model.BertForSequenceClassification(config).save_pretrained(tmp_path / "small")
    line = teacher_error(glue, tiny, tmp_path / "small", tmp_path / "o")
    assert "vocabulary of 50 tokens" in line

# -----------------------------------------------------------------------------
# the recipe in one command: stages, a target speedup, resuming

WORDS = "good bad fine awful great dull film plot actors story boring moving funny tedious a the and of it is".split()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """400 random sentences over 20 words, positive when they hold 'good' or 'great': a task the tiny model
    learns in a few hundred steps, on which most tokens can be skimmed."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(400):
        words = rng.choice(WORDS, size=rng.integers(4, 21))
        rows.append((" ".join(words), int("good" in words or "great" in words)))
    root = write_sst2(tmp_path_factory.mktemp("synthetic"), rows)
    return write_sst2(root, rows[:64], name="dev.tsv")


def test_target_speedup_steers_the_flops_fraction_to_the_target_and_holds_it(synthetic, tiny, tmp_path, monkeypatch):
    """At the controller's own gain, ki = KI = 0.02 per step (the 150-step stage here would get 7 times that,
    SpeedupController.KI_STEPS: with it this tiny model overshoots, to 0.45 over the last third). On random
    batches: on train.py's default, length-grouped batches (25 an epoch here, one megabatch: each batch of one
    length) this model overshoots to about 0.41 over the last third (measured; results/log.md, "Training speed,
    measured"), a limit of the controller on grouped batches; whether it acts on SST-2 is not measured (its three
    grouped runs ended at 1.93x-2.00x, after calibration)."""
    monkeypatch.setattr(recipe.SpeedupController, "KI_STEPS", 150)
    m = main("--task", "sst2", "--model", tiny, "--data-dir", synthetic, "--stages", "skim:6", "--no-group-by-length",
             "--target-speedup", 2, "--lr", "1e-3", "--batch-size", 16, "--timing-repeats", 0,
             "--output-dir", tmp_path / "o")
    trace = np.array(m["stages"][0]["trace"]["flops_fraction"])                     # one per step
    assert len(trace) == 150 and trace[:5].min() > 0.95                             # starts out dense
    last_third = trace[100:]
    assert abs(last_third.mean() - 0.5) < 0.04                                      # reaches 1/S ...
    assert np.abs(last_third.reshape(5, 10).mean(1) - 0.5).max() < 0.06             # ... and holds it
    assert m["stages"][0]["calibrated_speedup"] == pytest.approx(2.0, abs=0.02)     # then lands on it


def test_steer_every_steers_the_calibration_sentences_to_the_target_not_the_batches(synthetic, tiny, tmp_path,
                                                                                    monkeypatch):
    """SST-2's sentences are skimmed more than its training phrases at the same lambda. Here the sentences'
    measurement (recipe.speedup_at on the calibration batches) is replaced by a stand-in that behaves so: the
    model's own FLOPs fraction f on them, sampled as in training, squared (1 when nothing is skimmed, 0.5
    where the batches run at 0.71). A tiny random model's real measurement is too coarse to steer a test
    by: its predictors, thresholded, decide nearly alike for every token, so it jumps between all kept and
    almost nothing. Steered on the batches alone, the batches would end at 1/S and the stand-in at 1/S^2."""
    def sentences(model, batches, keep_threshold):
        rng = torch.get_rng_state()                                   # the run's random draws stay the run's
        with torch.no_grad():
            model.train()
            f = np.mean([train.flops_fraction(model, model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).masks,
                                              b, 1) for b in batches])
        torch.set_rng_state(rng)
        return 1 / f ** 2
    monkeypatch.setattr(recipe, "speedup_at", sentences)
    monkeypatch.setattr(recipe.SpeedupController, "KI_STEPS", 200)  # the controller's own gain, as the test above
    m = main("--task", "sst2", "--model", tiny, "--data-dir", synthetic, "--stages", "skim:8", "--target-speedup", 2,
             "--steer-every", 10, "--lr", "1e-3", "--batch-size", 16, "--timing-repeats", 0,
             "--output-dir", tmp_path / "o")
    trace = m["stages"][0]["trace"]
    assert len(trace["sentence_fraction"]) == 19                                    # every 10 of 200 steps
    # the tiny model answers lambda late, so the stand-in swings about 1/S (here 0.39 to 0.56 after the ramp);
    # steered on the batches it would end near 0.25
    assert abs(np.mean(trace["sentence_fraction"][-5:]) - 0.5) < 0.1                # the sentences near 1/S ...
    assert np.mean(trace["flops_fraction"][-50:]) > 0.6                             # ... the batches well above it


def test_the_threshold_is_calibrated_on_whole_sentences_not_on_their_phrases():
    sentences = [f"sentence {i} is a whole one ." for i in range(6)]
    texts = sentences + [s.split(" is")[0] for s in sentences] + ["a whole one", "is a whole"]
    examples = [data.Example(t, None, 0) for t in texts]
    encoded = [{"input_ids": [i], "token_type_ids": [0], "label": 0} for i in range(len(texts))]  # id = row
    settings = SimpleNamespace(batch_size=32, device="cpu")  # all that calibration_batches reads
    rows = torch.cat([b["input_ids"][:, 0] for b in recipe.calibration_batches(examples, encoded, settings)])
    assert sorted(rows.tolist()) == list(range(len(sentences)))


def test_a_fixed_skim_coef_is_the_papers_lambda_and_is_not_steered(synthetic, tiny, tmp_path):
    kept = {}
    for coef in (0, 2):
        m = main("--task", "sst2", "--model", tiny, "--data-dir", synthetic, "--skim-coef", coef, "--epochs", 2, "--mu0", 0.5,
                 "--lr", "1e-3", "--batch-size", 16, "--timing-repeats", 0, "--output-dir", tmp_path / str(coef))
        assert m["args"]["target_speedup"] is None and "trace" not in m["stages"][0]
        kept[coef] = np.mean(m["flops"]["kept_fraction"])
    assert kept[2] < kept[0] - 0.1


def test_the_default_recipe_is_dense_then_skim_then_frozen_at_the_calibrated_threshold(glue, tiny, tmp_path):
    args = settings_of(glue, tmp_path, "--task", "sst2", "--min-steps", 0)  # the fixture's 30 rows: a small task
    assert args.stages == tuple(recipe.parse_stages(recipe.SMALL_TASK_STAGES)) and args.target_speedup == flags.TARGET_SPEEDUP
    sized = settings_of(glue, tmp_path, "--task", "sst2").stages  # by default, sized to the fixture's 30 rows
    assert sized == recipe.sized_stages(recipe.parse_stages(recipe.SMALL_TASK_STAGES), 30, 32, recipe.MIN_STEPS) != args.stages
    m = main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--stages",
             "dense:1,skim:1,frozen:1", "--timing-repeats", 0, "--output-dir", tmp_path / "o")
    assert [r["stage"] for r in m["stages"]] == ["dense", "skim", "frozen"]
    # each stage before the last is evaluated as it ends: the dense stage is the run's own dense model
    dense = main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--no-skim",
                 "--timing-repeats", 0, "--output-dir", tmp_path / "dense")
    assert m["stages"][0]["dev"]["predictions"] == dense["predictions"]
    assert m["stages"][0]["dev"]["accuracy"] == dense["accuracy"] and m["stages"][0]["dev"]["flops_speedup"] == 1.0
    assert "dev" in m["stages"][1] and "dev" not in m["stages"][2]
    # the skim stage is also scored where the run would leave it: at the threshold calibrated to the target,
    # the very threshold the frozen stage then trains at
    at_target = m["stages"][1]["dev_at_target"]
    assert at_target["keep_threshold"] == m["stages"][2]["keep_threshold"]
    assert at_target["flops_speedup"] != m["stages"][1]["dev"]["flops_speedup"]
    assert [r["train_steps"] for r in m["stages"]] == [4, 4, 4] and m["train_steps"] == 12
    assert 0 < m["stages"][2]["keep_threshold"] < 1                                  # calibrated, then frozen
    assert json.loads((tmp_path / "o" / "config.json").read_text())["skim"]       # one saved Transkimmer
    assert not (tmp_path / "o" / "resume.pt").exists()                              # a finished run leaves no state


def interrupt_at(monkeypatch, step, signum=None):
    """Press Ctrl-C (a real SIGINT to this process; or send `signum`) during the step-th training step of the run."""
    import signal

    import skim

    calls, total_loss = [0], skim.total_loss

    def counting(*args):
        calls[0] += 1
        if calls[0] == step:
            signal.raise_signal(signum or signal.SIGINT)
        return total_loss(*args)
    monkeypatch.setattr(skim, "total_loss", counting)


@pytest.mark.parametrize("step", [2, 6, 11])  # in the dense, the skim and the frozen stage
def test_an_interrupted_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(glue, tiny, tmp_path,
                                                                                       monkeypatch, step):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--lr", "1e-3",
            "--stages", "dense:1,skim:1,frozen:1", "--steer-every", 2, "--timing-repeats", 0]
    whole = main(*args, "--output-dir", tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_at(patch, step)
        result = run_cli(*args, "--output-dir", tmp_path / "cut")
    assert result.returncode == 130
    assert result.stderr.strip().splitlines()[-1].endswith(f"python train.py --resume {tmp_path / 'cut'}")
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = main("--resume", tmp_path / "cut")
    assert (tmp_path / "cut" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    for key in ["accuracy", "flops", "predictions", "train_steps"]:
        assert resumed[key] == whole[key], key
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in resumed["stages"]] == \
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in whole["stages"]]


def test_resume_takes_no_other_flag_and_needs_a_saved_state(tmp_path):
    assert "drop --lr" in one_error_line(run_cli("--resume", tmp_path, "--lr", "1e-4"))
    assert "no resume.pt" in one_error_line(run_cli("--resume", tmp_path))
    assert "no resume.pt" in one_error_line(run_cli(f"--resume={tmp_path}"))
    (tmp_path / "resume.pt").write_bytes(b"not a torch file")
    assert "cannot be read" in one_error_line(run_cli("--resume", tmp_path))


def test_keep_layers_trains_a_smaller_dense_model_and_reports_its_speedup_over_the_checkpoint(glue, tiny, tmp_path):
    import flops
    import model

    m = main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--keep-layers", "0,2",
             "--batch-size", 8, "--timing-repeats", 0, "--output-dir", tmp_path / "o")
    saved = model.BertForSequenceClassification.from_pretrained(tmp_path / "o")
    assert saved.config.num_hidden_layers == 2 and len(m["flops"]["kept_fraction"]) == 2
    lengths = [len(t["input_ids"]) for t in train.data.encode(saved.tokenizer, train.data.read_split(
        train.data.get_task("sst2"), "dev", glue), 64)]
    three = model.BertConfig(**{**vars(saved.config), "num_hidden_layers": 3})
    expected = sum(flops.dense_flops(n, three) for n in lengths) / sum(flops.dense_flops(n, saved.config) for n in lengths)
    assert m["flops_speedup_over_checkpoint"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("value, says", [("0", "give K"), ("x", "give K"), ("2,1", "increasing"), ("1,1", "increasing"),
                                         ("=-1,2", "from 0"), ("5", "has 3 layers")])
def test_keep_layers_with_a_bad_value(glue, tiny, tmp_path, value, says):
    flag = f"--keep-layers{value}" if value.startswith("=") else ["--keep-layers", value]  # =-1,2: not a flag
    line = one_error_line(run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim",
                                  *([flag] if isinstance(flag, str) else flag), "--output-dir", tmp_path / "o"))
    assert "--keep-layers" in line and says in line


def test_a_task_of_fewer_than_small_task_training_examples_gets_the_small_task_recipe(glue, tmp_path, monkeypatch):
    """The rule (recipe.SMALL_TASK_STAGES, results/log.md "GLUE: a recipe sized for a small task"): below
    SMALL_TASK training examples, counted after --holdout and before --max-train-samples, the default recipe is
    dense 3 epochs, skim 1.5 and frozen 1.5, all at 5e-5; from SMALL_TASK on, dense 1 at 2e-4, skim 0.5 at 2e-4
    and frozen 0.5 at 5e-5. Stages the user writes are as written. The fixture's train.tsv has 30 rows."""
    monkeypatch.setattr(recipe, "MIN_STEPS", 0)
    stages = lambda *flag_values: settings_of(glue, tmp_path, *flag_values).stages  # noqa: E731
    small = (("dense", 3.0, 5e-5), ("skim", 1.5, 5e-5), ("frozen", 1.5, 5e-5))
    large = (("dense", 1.0, 2e-4), ("skim", 0.5, 2e-4), ("frozen", 0.5, 5e-5))
    assert stages() == small                                              # 30 < 20,000
    monkeypatch.setattr(recipe, "SMALL_TASK", 30)
    assert stages() == large                                              # 30 is not fewer than 30
    assert stages("--max-train-samples", 5) == large                      # the task's size, not the cut
    assert stages("--holdout", 1) == small                                # 29 left to train on
    assert stages("--holdout", 1, "--method", "topk") == (("dense", 3.0, 5e-5), ("frozen", 1.5, 5e-5), ("frozen", 1.5, 5e-5))
    assert stages("--holdout", 1, "--stages", "dense:1,skim:1") == (("dense", 1.0, 5e-5), ("skim", 1.0, 5e-5))


def test_a_small_task_trains_its_predictors_at_sst2s_rate_scaled_to_its_skim_stage(glue, tmp_path, monkeypatch):
    """recipe.small_task_predictor_lr: on a small task the default recipe's predictors learn at 2e-4 x 1,052 / (the
    skim stage's steps), counted as train.py counts them (on what it trains on: after --max-train-samples); a
    large task, written stages, a method without a skim stage and --predictor-lr keep theirs."""
    monkeypatch.setattr(recipe, "MIN_STEPS", 0)
    plr = lambda *flag_values: settings_of(glue, tmp_path, *flag_values).predictor_lr  # noqa: E731
    assert plr() == pytest.approx(2e-4 * 1052 / 2)                        # 30 rows: 1 step an epoch, 1.5 -> 2 steps
    assert plr("--batch-size", 5) == pytest.approx(2e-4 * 1052 / 9)       # 6 steps an epoch x 1.5
    assert plr("--batch-size", 5, "--max-train-samples", 10) == pytest.approx(2e-4 * 1052 / 3)  # 2 x 1.5
    assert plr("--predictor-lr", 1e-3) == 1e-3
    assert plr("--stages", "dense:1,skim:1") is None
    assert plr("--method", "topk") is None
    monkeypatch.setattr(recipe, "SMALL_TASK", 30)
    assert plr() is None                                                  # a large task: the skim stage's own lr
    monkeypatch.setattr(recipe.SpeedupController, "KI_STEPS", 1)
    monkeypatch.setattr(recipe, "SMALL_TASK", 31)
    assert plr() == pytest.approx(2e-4)                                   # a stage longer than SST-2's: not scaled down


def test_the_default_recipe_is_sized_to_the_task_and_written_stages_are_as_written(glue, tmp_path, monkeypatch):
    """--min-steps (default recipe.MIN_STEPS for the default recipe): counted on the training file (30 rows here,
    one step an epoch), less --holdout, not cut by --max-train-samples; --stages and one-stage runs as written."""
    monkeypatch.setattr(recipe, "MIN_STEPS", 8)
    monkeypatch.setattr(recipe, "SMALL_TASK", 1)  # the fixture's 30 rows are a large task here: DEFAULT_STAGES
    epochs = lambda *flag_values: [e for _, e, _ in settings_of(glue, tmp_path, *flag_values).stages]  # noqa: E731
    assert epochs() == [4.0, 2.0, 2.0]                                    # 2 epochs, 2 steps -> 8 steps
    assert settings_of(glue, tmp_path).min_steps == 8
    assert epochs("--max-train-samples", 5) == [4.0, 2.0, 2.0]            # the task's size, not the cut
    assert epochs("--min-steps", 4) == [2.0, 1.0, 1.0]
    assert epochs("--min-steps", 0) == [1.0, 0.5, 0.5]
    assert epochs("--stages", "dense:1,skim:1") == [1.0, 1.0]             # written: as written
    assert epochs("--no-skim") == [1.0]
    assert epochs("--stages", "dense:2", "--keep-layers", 2, "--min-steps", 8) == [8.0]  # the recipe's budget, densely
    assert epochs("--batch-size", 5) == [1.0, 0.5, 0.5]                   # 6 steps an epoch: 12 already
    assert epochs("--holdout", 20, "--batch-size", 5) == [2.0, 1.0, 1.0]  # 10 rows left, 2 steps an epoch: 4 -> 8
    monkeypatch.setattr(recipe, "SMALL_TASK", 31)                         # and a small one: 6 epochs, 6 steps
    assert epochs() == pytest.approx([4.0, 2.0, 2.0])                     # 3 + 1.5 + 1.5, each by 8 / 6
    assert epochs("--min-steps", 0) == [3.0, 1.5, 1.5]
    for bad, says in [(["--min-steps", -1], "--min-steps N: N is a number of optimizer steps"),
                      (["--eval-only", "--checkpoint", tmp_path, "--min-steps", 5], "--eval-only trains nothing")]:
        with pytest.raises(flags.UsageError, match=says):
            settings_of(glue, tmp_path, *bad)
