"""results/collect.py: each row's accuracy change is measured against the dense row of its own recipe."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_run(runs, name, accuracy, speedup, no_skim=False, model=None, encoder_only_accuracy=None, teacher=None,
             seed=42, epochs=1.0, freeze_predictors=None):
    """A metrics.json with the fields collect.py reads, as train.py writes them (and, if given, the one
    train.py --eval-only --no-skim writes into encoder-only/)."""
    args = {"model": model, "no_skim": no_skim, "skim_coef": 0.0 if no_skim else 0.3, "tau": 0.1, "mu0": 2.0,
            "predictor_grad": "separate", "predictor_lr": 5e-5, "lr": 5e-5, "epochs": epochs, "batch_size": 32, "seed": seed,
            "teacher": teacher, "distill_coef": 0.5, "distill_temp": 2.0, "freeze_predictors": freeze_predictors}
    metrics = {"args": args, "accuracy": accuracy, "measured_speedup": None if no_skim else speedup * 0.8,
               "flops": {"none": {"speedup": speedup}, "sequence": {"speedup": 2.5 * speedup},
                         "kept_fraction": [1.0] * 6},
               "train_seconds": 60.0, "train_steps": 10}
    (runs / name).mkdir(parents=True)
    (runs / name / "metrics.json").write_text(json.dumps(metrics))
    if encoder_only_accuracy is not None:
        (runs / name / "encoder-only").mkdir()
        (runs / name / "encoder-only" / "metrics.json").write_text(json.dumps({"accuracy": encoder_only_accuracy}))


def fake_operating_point(runs, name, threshold, accuracy, speedup):
    """The metrics.json that train.py --eval-only --keep-threshold writes (results/sweep_thresholds.sh)."""
    out = runs / name / f"threshold-{threshold}"
    args = {"checkpoint": str(runs / name), "keep_threshold": threshold, "output_dir": str(out)}
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({
        "args": args, "accuracy": accuracy, "measured_speedup": speedup * 0.8,
        "flops": {"none": {"speedup": speedup}, "sequence": {"speedup": 2.5 * speedup}, "kept_fraction": [0.5] * 6}}))


def collect(runs, out):
    subprocess.run([sys.executable, str(ROOT / "results" / "collect.py"), "--runs", str(runs), "--out", str(out)],
                   check=True, capture_output=True)


def test_each_row_is_compared_with_the_dense_row_of_its_recipe(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-skim", 0.870, 1.5)
    fake_run(runs, "sst2-fd-dense", 0.900, 1.0, no_skim=True, model="runs/sst2-dense")
    fake_run(runs, "sst2-fd-skim", 0.895, 2.1, model="runs/sst2-dense")
    collect(runs, out)
    rows = {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}
    assert rows["sst2-skim"]["dense_reference"] == "sst2-dense"
    assert rows["sst2-skim"]["accuracy_change_points"] == -1.0
    assert rows["sst2-fd-skim"]["dense_reference"] == "sst2-fd-dense"
    assert rows["sst2-fd-skim"]["accuracy_change_points"] == -0.5
    assert "--model runs/sst2-dense" in rows["sst2-fd-skim"]["command"]
    assert "--model" not in rows["sst2-skim"]["command"]
    assert "-0.5 vs fd-dense" in (out / "sst2.md").read_text()
    assert (out / "sst2_tradeoff.png").stat().st_size > 0


def test_a_distilled_row_is_compared_with_the_dense_row_distilled_alike(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-fd-dense", 0.900, 1.0, no_skim=True, model="runs/sst2-dense")
    fake_run(runs, "sst2-fd-kd-dense", 0.890, 1.0, no_skim=True, model="runs/sst2-dense", teacher="runs/sst2-dense")
    fake_run(runs, "sst2-fd-kd-skim", 0.885, 2.1, model="runs/sst2-dense", teacher="runs/sst2-dense")
    collect(runs, out)
    rows = {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}
    assert rows["sst2-fd-kd-skim"]["dense_reference"] == "sst2-fd-kd-dense"
    assert rows["sst2-fd-kd-skim"]["accuracy_change_points"] == -0.5
    assert "--teacher runs/sst2-dense --distill-coef 0.5" in rows["sst2-fd-kd-skim"]["command"]
    assert "--teacher" not in rows["sst2-fd-dense"]["command"]


def test_a_further_stage_is_compared_with_the_same_stage_from_its_parents_dense_reference(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-fd-dense", 0.900, 1.0, no_skim=True, model="runs/sst2-dense")
    fake_run(runs, "sst2-fd-kd-dense", 0.890, 1.0, no_skim=True, model="runs/sst2-dense", teacher="runs/sst2-dense")
    fake_run(runs, "sst2-fd-skim", 0.870, 2.1, model="runs/sst2-dense")
    # the third stage, half an epoch: dense from each second-stage dense row, frozen from the skimming one
    fake_run(runs, "sst2-kd-third-dense", 0.800, 1.0, no_skim=True, model="runs/sst2-fd-kd-dense", epochs=0.5)
    fake_run(runs, "sst2-third-dense", 0.905, 1.0, no_skim=True, model="runs/sst2-fd-dense", epochs=0.5)
    fake_run(runs, "sst2-third-skim", 0.895, 2.2, model="runs/sst2-fd-skim", epochs=0.5, freeze_predictors=0.7)
    collect(runs, out)
    rows = {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}
    assert rows["sst2-third-skim"]["dense_reference"] == "sst2-third-dense"
    assert rows["sst2-third-skim"]["accuracy_change_points"] == -1.0
    assert rows["sst2-kd-third-dense"]["dense_reference"] == "sst2-kd-third-dense"
    assert [rows[n]["stage"] for n in ("sst2-dense", "sst2-fd-skim", "sst2-third-skim")] == [1, 2, 3]
    assert ("--model runs/sst2-fd-skim --freeze-predictors 0.7 --epochs 0.5" in rows["sst2-third-skim"]["command"]
            and "--skim-coef" not in rows["sst2-third-skim"]["command"])
    assert "| - | - | - | frozen at T 0.7 | - |" in (out / "sst2.md").read_text()


def test_a_command_names_every_recipe_setting_off_train_py_defaults(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-dense-seed43", 0.885, 1.0, no_skim=True, seed=43)
    collect(runs, out)
    rows = {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}
    assert "--seed 43" in rows["sst2-dense-seed43"]["command"]
    assert "--seed" not in rows["sst2-dense"]["command"]


def test_a_row_without_a_dense_row_of_its_recipe_says_so(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-fd-skim", 0.895, 2.1, model="runs/sst2-dense")
    collect(runs, out)
    [skim_row] = [r for r in json.loads((out / "sst2.json").read_text()) if r["skim"]]
    assert skim_row["dense_reference"] is None and skim_row["accuracy_change_points"] is None
    assert "n/a (no dense row)" in (out / "sst2.md").read_text()


def test_a_row_shows_its_encoders_accuracy_without_predictors_when_measured(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-skim", 0.870, 1.5, encoder_only_accuracy=0.8654)
    fake_run(runs, "sst2-other", 0.860, 1.8)
    collect(runs, out)
    rows = {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}
    assert rows["sst2-skim"]["encoder_only_accuracy"] == 0.8654
    assert rows["sst2-other"]["encoder_only_accuracy"] is None
    assert "| -1.0 vs dense | 86.5 |" in (out / "sst2.md").read_text()


def test_operating_points_are_compared_with_their_rows_dense_reference_and_checked_against_the_goal(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-skim", 0.870, 1.5)
    collect(runs, out)
    assert "No row and no operating point meets it." in (out / "sst2.md").read_text()
    assert not (out / "sst2_operating_points.png").exists()

    fake_operating_point(runs, "sst2-skim", 0.3, 0.876, 1.2)
    fake_operating_point(runs, "sst2-skim", 0.8, 0.871, 2.05)  # 0.9 points below dense at 2.05x: the goal
    collect(runs, out)
    [skim_row] = [r for r in json.loads((out / "sst2.json").read_text()) if r["skim"]]
    assert [p["keep_threshold"] for p in skim_row["operating_points"]] == [0.3, 0.8]
    assert [p["accuracy_change_points"] for p in skim_row["operating_points"]] == [-0.4, -0.9]
    assert skim_row["operating_points"][1]["command"].endswith(
        f"--checkpoint {runs / 'sst2-skim'} --keep-threshold 0.8 --output-dir {runs / 'sst2-skim' / 'threshold-0.8'}")
    md = (out / "sst2.md").read_text()
    assert "| sst2-skim | 0.5 (the row above) | 87.0 | -1.0 vs dense |" in md
    assert "- sst2-skim at keep threshold 0.8: 2.05x, -0.9 points" in md
    assert "| skim (dense) | 1.20x, -0.4 | 1.50x, -1.0 | 2.05x, -0.9 |" in md  # a run a line, a threshold a column
    assert (out / "sst2_operating_points.png").stat().st_size > 0
