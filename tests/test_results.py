"""results/collect.py and results/plots.py: each row's accuracy change is measured against the dense row of
its own recipe, the record in results/sst2.json is enough to make the tables and pictures again, and the
goal (>= 2x FLOPs, at most one point below that dense row) is checked on every row and operating point."""

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
import collect as collect_py  # noqa: E402  (results/ is a folder of scripts, not a package)
import plots  # noqa: E402


def fake_run(runs, name, accuracy, speedup, no_skim=False, model=None, encoder_only_accuracy=None, teacher=None,
             seed=42, epochs=1.0, freeze_predictors=None, holdout=None):
    """A metrics.json with the fields collect.py reads, as train.py writes them (and, if given, the one
    train.py --eval-only --no-skim writes into encoder-only/)."""
    args = {"model": model, "no_skim": no_skim, "skim_coef": 0.0 if no_skim else 0.3, "tau": 0.1, "mu0": 2.0,
            "predictor_grad": "separate", "predictor_lr": 5e-5, "lr": 5e-5, "epochs": epochs, "batch_size": 32, "seed": seed,
            "teacher": teacher, "distill_coef": 0.5, "distill_temp": 2.0, "freeze_predictors": freeze_predictors,
            "holdout": holdout}
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


class Output(NamedTuple):
    stdout: str
    stderr: str


def collect(runs, out, pictures=False):
    """results/collect.py, in this process (a fresh one costs seconds of imports); it draws the pictures only
    when asked, as they take most of its time."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        collect_py.main(["--runs", str(runs), "--out", str(out)] + ([] if pictures else ["--no-plots"]))
    return Output(stdout.getvalue(), stderr.getvalue())


def read_rows(out):
    return {r["run"]: r for r in json.loads((out / "sst2.json").read_text())}


def test_each_row_is_compared_with_the_dense_row_of_its_recipe(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-skim", 0.870, 1.5)
    fake_run(runs, "sst2-fd-dense", 0.900, 1.0, no_skim=True, model="runs/sst2-dense")
    fake_run(runs, "sst2-fd-skim", 0.895, 2.1, model="runs/sst2-dense")
    collect(runs, out, pictures=True)
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
    collect(runs, out, pictures=True)
    assert "No row and no operating point meets it." in (out / "sst2.md").read_text()
    assert not (out / "sst2_operating_points.png").exists()

    fake_operating_point(runs, "sst2-skim", 0.3, 0.876, 1.2)
    fake_operating_point(runs, "sst2-skim", 0.8, 0.871, 2.05)  # 0.9 points below dense at 2.05x: the goal
    fake_operating_point(runs, "sst2-skim", 0.7, 0.878, 1.99)  # 0.2 points below, but short of 2x
    fake_operating_point(runs, "sst2-skim", 0.9, 0.869, 2.50)  # 2.5x, but 1.1 points below
    collect(runs, out, pictures=True)
    [skim_row] = [r for r in json.loads((out / "sst2.json").read_text()) if r["skim"]]
    assert [p["keep_threshold"] for p in skim_row["operating_points"]] == [0.3, 0.7, 0.8, 0.9]
    assert [p["accuracy_change_points"] for p in skim_row["operating_points"]] == [-0.4, -0.2, -0.9, -1.1]
    assert skim_row["operating_points"][2]["command"].endswith(
        f"--checkpoint {runs / 'sst2-skim'} --keep-threshold 0.8 --output-dir {runs / 'sst2-skim' / 'threshold-0.8'}")
    md = (out / "sst2.md").read_text()
    assert "| sst2-skim | 0.5 (the row above) | 87.0 | -1.0 vs dense |" in md
    assert "- sst2-skim at keep threshold 0.8: 2.05x, -0.9 points" in md
    assert "at keep threshold 0.7" not in md and "at keep threshold 0.9" not in md
    # a run a line, a threshold a column
    assert "| skim (dense) | 1.20x, -0.4 | 1.50x, -1.0 | 1.99x, -0.2 | 2.05x, -0.9 | 2.50x, -1.1 |" in md
    assert (out / "sst2_operating_points.png").stat().st_size > 0


def test_the_record_alone_remakes_the_tables_and_new_runs_join_it(tmp_path):
    runs, out, later = tmp_path / "runs", tmp_path / "out", tmp_path / "later"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-skim", 0.870, 1.5)
    fake_operating_point(runs, "sst2-skim", 0.3, 0.876, 1.2)
    collect(runs, out)
    later.mkdir()
    shutil.copy(out / "sst2.json", later / "sst2.json")  # another machine: the record, and none of the runs
    collect(tmp_path / "no-runs", later)
    assert (later / "sst2.md").read_text() == (out / "sst2.md").read_text()
    assert (later / "sst2.json").read_text() == (out / "sst2.json").read_text()

    new_runs = tmp_path / "new-runs"
    fake_run(new_runs, "sst2-dense", 0.890, 1.0, no_skim=True)  # the dense row again: it replaces the old one
    fake_run(new_runs, "sst2-other", 0.885, 2.1)
    collect(new_runs, later)
    rows = read_rows(later)
    assert sorted(rows) == ["sst2-dense", "sst2-other", "sst2-skim"]
    assert rows["sst2-skim"]["accuracy_change_points"] == -2.0  # the record's row, against the new dense row
    assert rows["sst2-skim"]["operating_points"][0]["accuracy_change_points"] == -1.4
    assert rows["sst2-other"]["accuracy_change_points"] == -0.5


def test_a_run_trained_on_fewer_sentences_is_left_out(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-ref-dense", 0.870, 1.0, no_skim=True, holdout=2000)  # train.py --holdout 2000
    collect(runs, out)
    assert list(read_rows(out)) == ["sst2-dense"]


def test_the_headline_draws_each_named_run_against_its_own_dense_row(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    fake_run(runs, "sst2-dense", 0.880, 1.0, no_skim=True)
    fake_run(runs, "sst2-dense-seed43", 0.900, 1.0, no_skim=True, seed=43)
    fake_run(runs, "sst2-skim", 0.875, 2.1)
    fake_run(runs, "sst2-skim-seed43", 0.890, 2.2, seed=43)
    for name, accuracy in (("sst2-skim", 0.870), ("sst2-skim-seed43", 0.880)):
        fake_operating_point(runs, name, 0.3, accuracy, 1.8)
        fake_operating_point(runs, name, 0.9, accuracy - 0.05, 3.0)  # beyond the headline's thresholds
    result = collect(runs, out, pictures=True)
    assert "no headline picture" in result.stderr and not (out / "sst2_headline.png").exists()

    rows = read_rows(out)
    curves = {name: [(p["keep_threshold"], p["accuracy_change_points"]) for p in plots.headline_points(rows[name])]
              for name in ("sst2-skim", "sst2-skim-seed43")}
    assert curves == {"sst2-skim": [(0.3, -1.0), (0.5, -0.5)], "sst2-skim-seed43": [(0.3, -2.0), (0.5, -1.0)]}
    plots.main(["--json", str(out / "sst2.json"), "--out", str(out), "--headline", "sst2-skim", "sst2-skim-seed43"])
    assert (out / "sst2_headline.png").stat().st_size > 0
