"""Nothing lost, whatever the user does: an evaluation never writes over its checkpoint, a run never replaces
another's folder unasked, --resume continues where it is told, a diverging run stops before it saves, SIGTERM
and a Ctrl-C between stages leave a resumable state, and every bad input is one line (exit 2) with nothing
written."""

import json
import os
import shutil
import signal

import pytest
from safetensors.torch import load_file, save_file

import bench
import evaluation
import recipe
from checkpoint import atomic_write
from conftest import SENTENCES
from test_train import interrupt_at, main, one_error_line, run_cli

FAST = ["--batch-size", 8, "--timing-repeats", 0]


def files(folder):
    """{name: bytes} of every file in a folder, to show that nothing in it changed."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def trained(glue, tiny, tmp_path):
    """A small Transkimmer trained on the fixture's SST-2, as train.py saves it."""
    out = tmp_path / "trained"
    main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1", *FAST, "--output-dir", out)
    return out


# -----------------------------------------------------------------------------
# an evaluation, and another run's folder

def test_an_evaluation_with_the_default_output_folder_leaves_its_checkpoint_byte_identical(glue, trained):
    before = files(trained)
    m = main("--task", "sst2", "--eval-only", "--checkpoint", trained, "--keep-threshold", 0.7, "--data-dir", glue,
             "--timing-repeats", 0)
    assert files(trained) == before
    assert m["args"]["output_dir"] == str(trained / "eval-threshold-0.7")
    assert (trained / "eval-threshold-0.7" / "metrics.json").is_file()


def test_an_evaluation_into_its_own_checkpoint_folder_is_refused(glue, trained):
    before = files(trained)
    line = one_error_line(run_cli("--task", "sst2", "--eval-only", "--checkpoint", trained, "--data-dir", glue,
                                  "--output-dir", trained))
    assert "--checkpoint folder this run reads" in line and files(trained) == before


def test_a_run_into_a_folder_holding_another_run_is_refused_unless_overwrite(glue, tiny, trained):
    before = files(trained)
    common = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--max-train-samples", 8, *FAST,
              "--output-dir", trained]
    assert "holds another run" in one_error_line(run_cli(*common)) and files(trained) == before
    m = main(*common, "--overwrite")
    assert m["stages"][0]["stage"] == "dense" and json.loads((trained / "metrics.json").read_text())["args"]["no_skim"]


def test_overwrite_removes_the_old_runs_files_first_so_a_failed_run_leaves_no_mixed_folder(glue, tiny, trained):
    result = run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--lr", "1e30", *FAST,
                     "--output-dir", trained, "--overwrite")
    assert result.returncode == 2                           # it diverged (below) after the old run was cleared
    assert not any((trained / name).exists() for name in recipe.RUN_OUTPUTS)


def test_resume_from_a_copied_folder_writes_only_into_the_copy(glue, tiny, tmp_path, monkeypatch):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1", *FAST]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)
        assert run_cli(*args, "--output-dir", tmp_path / "original").returncode == 130
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    before = files(tmp_path / "original")
    main("--resume", tmp_path / "copy")
    assert files(tmp_path / "original") == before
    assert (tmp_path / "copy" / "model.safetensors").is_file() and not (tmp_path / "copy" / "resume.pt").exists()
    assert json.loads((tmp_path / "copy" / "metrics.json").read_text())["args"]["output_dir"] == str(tmp_path / "copy")


def test_a_stage_resumed_on_another_machine_records_both_machines(glue, tiny, tmp_path, monkeypatch):
    """Two machines round differently, so a run that trained on two is not the run either would make alone: each
    stage's record lists where it trained (timing.machine_line), and the timing says where it was timed."""
    import timing

    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1", "--batch-size", 8,
            "--timing-repeats", 1, "--output-dir", tmp_path / "o"]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)                                                      # in the dense stage
        assert run_cli(*args).returncode == 130
    here = timing.machine_line()
    monkeypatch.setattr(timing, "machine_line", lambda device="cpu": "another machine, 1 threads, torch x")
    m = main("--resume", tmp_path / "o")
    assert [stage["machines"] for stage in m["stages"]] == [[here, "another machine, 1 threads, torch x"],
                                                            ["another machine, 1 threads, torch x"]]
    assert m["machine"] == "another machine, 1 threads, torch x"                  # where "measured" was timed


def test_resume_takes_the_data_folder_anew_when_it_has_moved(glue, tiny, tmp_path, monkeypatch):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", *FAST, "--output-dir", tmp_path / "o"]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        assert run_cli(*args).returncode == 130
    moved = tmp_path / "moved"
    shutil.move(glue, moved)
    assert "not found" in one_error_line(run_cli("--resume", tmp_path / "o"))
    assert main("--resume", tmp_path / "o", "--data-dir", moved)["args"]["data_dir"] == str(moved)

# -----------------------------------------------------------------------------
# a run that diverges, and signals

def test_a_loss_that_turns_non_finite_stops_the_run_naming_the_step_and_saves_nothing(glue, tiny, tmp_path):
    result = run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--lr", "1e30", *FAST,
                     "--output-dir", tmp_path / "o")
    line = result.stderr.strip().splitlines()[-1]                  # after the progress bar: one line
    assert result.returncode == 2 and line.startswith("error: the loss (nan) or its gradient is not finite at step 2 of "
                                                      "stage 1")
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_with_non_finite_weights_is_refused(glue, trained, tmp_path):
    tensors = load_file(trained / "model.safetensors")
    tensors["bert.pooler.dense.weight"][0, :4] = float("nan")
    shutil.copytree(trained, tmp_path / "broken")
    save_file(tensors, tmp_path / "broken" / "model.safetensors")
    line = one_error_line(run_cli("--task", "sst2", "--eval-only", "--checkpoint", tmp_path / "broken", "--data-dir",
                                  glue, "--output-dir", tmp_path / "o"))
    assert "bert.pooler.dense.weight holds NaN or infinite values" in line


def test_sigterm_mid_stage_then_resume_gives_the_uninterrupted_runs_weights(glue, tiny, tmp_path, monkeypatch):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1,frozen:1", *FAST]
    main(*args, "--output-dir", tmp_path / "whole")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 6, signal.SIGTERM)
        assert run_cli(*args, "--output-dir", tmp_path / "cut").returncode == 130
    main("--resume", tmp_path / "cut")
    assert (tmp_path / "cut" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_ctrl_c_during_an_evaluation_between_stages_leaves_a_resumable_state(glue, tiny, tmp_path, monkeypatch):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1,frozen:1", *FAST]
    main(*args, "--output-dir", tmp_path / "whole")
    calls, stage_record = [0], evaluation.stage_record

    def pressed_during_the_first(*a):
        calls[0] += 1
        if calls[0] == 1:
            signal.raise_signal(signal.SIGINT)
        return stage_record(*a)
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "stage_record", pressed_during_the_first)
        result = run_cli(*args, "--output-dir", tmp_path / "cut")
    assert result.returncode == 130 and "interrupted in stage 2/3 (skim) at step 1/" in result.stderr
    main("--resume", tmp_path / "cut")
    assert (tmp_path / "cut" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()

# -----------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written

def write(folder, task_dir, name, text, encoding="utf-8"):
    (folder / task_dir).mkdir(parents=True, exist_ok=True)
    (folder / task_dir / name).write_bytes(text.encode(encoding))


@pytest.mark.parametrize("case, says", [
    ("header-only train", "train.tsv holds no examples (a header line only)"),
    ("header-only dev", "dev.tsv holds no examples (a header line only)"),
    ("latin-1 train", "line 3: not UTF-8 text"),
    ("zero-width text", "line 2: empty text"),
    ("no dev", "has no dev split"),
])
def test_a_bad_data_file_is_one_line_before_training_and_nothing_is_written(glue, tiny, tmp_path, case, says):
    rows = "".join(f"{s}\t{label}\n" for s, label in SENTENCES)
    if case == "header-only train":
        write(glue, "SST-2", "train.tsv", "sentence\tlabel\n")
    elif case == "header-only dev":
        write(glue, "SST-2", "dev.tsv", "sentence\tlabel\n")
    elif case == "latin-1 train":
        write(glue, "SST-2", "train.tsv", "sentence\tlabel\nfine\t1\nun film très réussi\t1\n" + rows, "latin-1")
    elif case == "zero-width text":
        write(glue, "SST-2", "train.tsv", "sentence\tlabel\n\u200b\u200b\t1\n" + rows)
    else:
        (glue / "SST-2" / "dev.tsv").unlink()
    line = one_error_line(run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, *FAST,
                                  "--output-dir", tmp_path / "o"))
    assert says in line
    assert not (tmp_path / "o").exists()                    # the folder the check made is gone again


@pytest.mark.parametrize("flags, says", [
    (["--target-speedup", "inf"], "--target-speedup must be a finite number"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number"),
    (["--mu0", "nan"], "--mu0 must be a finite number"),
    (["--stages", "dense:inf"], "both finite"),
    (["--stages", "dense:1:inf"], "both finite"),
    (["--seed", "-1"], "--seed must lie in [0, 2^32)"),
    (["--seed", "100000000000000000000"], "--seed must lie in [0, 2^32)"),
    (["--seed", "1e20"], "argument --seed: invalid int value"),
    (["--timing-repeats", "-1"], "--timing-repeats is a number of passes"),
    (["--max-seq-length", "1000"], "has 512 positions"),
    (["--output-dir", ""], "--output-dir is empty"),
    (["--model", ""], "--model is empty"),
    (["--target-speedup", "1000"], "every token but [CLS] skimmed at the first layer"),
    (["--target-speedup", "1000", "--method", "topk"], "[CLS] alone after the first layer"),
    (["--target-speedup", "1e9", "--method", "skipmiddle"], "every gate closed at the first layer"),
])
def test_a_bad_flag_is_one_line_before_training_and_nothing_is_written(glue, tiny, tmp_path, flags, says):
    model = [] if "--model" in flags else ["--model", tiny]
    out = [] if "--output-dir" in flags else ["--output-dir", tmp_path / "o"]
    line = one_error_line(run_cli("--task", "sst2", *model, "--data-dir", glue, *FAST, *out, *flags))
    assert says in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize("task, says", [("stsb", "2 output(s), but stsb has 1"), ("rte", "was trained on sst2, not rte"),
                                        ("stsb", "was trained on sst2, not stsb")])
def test_a_checkpoint_evaluated_on_another_task_is_one_line(trained, tiny, tmp_path, task, says):
    if says.startswith("2 output"):  # a 2-label classifier that records no task: its labels alone tell
        from model import BertForSequenceClassification
        BertForSequenceClassification.from_pretrained(tiny, num_labels=2).save_pretrained(tmp_path / "untold")
        trained = tmp_path / "untold"
    glue = tmp_path / "other"
    if task == "stsb":
        write(glue, "STS-B", "train.tsv", "sentence1\tsentence2\tscore\na\tb\t1.0\n")
        write(glue, "STS-B", "dev.tsv", "sentence1\tsentence2\tscore\na\tb\t1.0\n")
    else:
        write(glue, "RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
        write(glue, "RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    line = one_error_line(run_cli("--task", task, "--eval-only", "--checkpoint", trained, "--data-dir", glue,
                                  "--output-dir", tmp_path / "o"))
    assert says in line and not (tmp_path / "o").exists()


def test_bench_refuses_a_dense_checkpoint(glue, tiny, tmp_path, capsys):
    main("--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--max-train-samples", 8, *FAST,
         "--output-dir", tmp_path / "dense")
    with pytest.raises(SystemExit) as e:
        bench.main(["--checkpoint", str(tmp_path / "dense"), "--data-dir", str(glue), "--out", str(tmp_path / "b.json")])
    assert e.value.code == 2 and "is a dense model" in capsys.readouterr().err and not (tmp_path / "b.json").exists()

# -----------------------------------------------------------------------------
# small things

def test_the_saved_model_has_a_plain_files_permissions_like_every_other_file(trained):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in trained.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # what open() makes; mkstemp alone makes 0600


def test_a_temporary_file_left_by_a_killed_write_is_removed_by_the_next_one(tmp_path):
    stray = tmp_path / ".metrics.json.abc123.tmp"                 # what a write killed midway leaves
    stray.write_text("half")
    atomic_write(tmp_path / "metrics.json", lambda p: open(p, "w").write("{}"))
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_error_on_a_fresh_output_folder_leaves_no_empty_folder(glue, tiny, tmp_path):
    line = one_error_line(run_cli("--task", "sst2", "--model", tiny, "--data-dir", tmp_path / "nowhere",
                                  "--output-dir", tmp_path / "a" / "b"))
    assert "nowhere" in line and not (tmp_path / "a").exists()
