"""Nothing lost, whatever the user does: an evaluation never writes over its checkpoint, a run never replaces
another's folder unasked, --resume continues where it is told, a diverging run stops before it saves, SIGTERM
and a Ctrl-C between stages leave a resumable state, and every bad input is one line (exit 2) with nothing
written."""

import contextlib
import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file, save_file

import bench
import data
import flops
import recipe
from checkpoint import atomic_write
from conftest import SENTENCES, write_sst2
from test_train import ROOT, interrupt_at, main, one_error_line, run_cli

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
    stage's record lists where it trained (flops.machine_line), and the timing says where it was timed."""

    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--stages", "dense:1,skim:1", "--batch-size", 8,
            "--timing-repeats", 1, "--output-dir", tmp_path / "o"]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)                                                      # in the dense stage
        assert run_cli(*args).returncode == 130
    here = flops.machine_line()
    monkeypatch.setattr(flops, "machine_line", lambda device="cpu": "another machine, 1 threads, torch x")
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
    calls, stage_record = [0], recipe.stage_record

    def pressed_during_the_first(*a):
        calls[0] += 1
        if calls[0] == 1:
            signal.raise_signal(signal.SIGINT)
        return stage_record(*a)
    with monkeypatch.context() as patch:
        patch.setattr(recipe, "stage_record", pressed_during_the_first)
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

# -----------------------------------------------------------------------------
# data that is long, odd, or not a file

@contextlib.contextmanager
def at_most(seconds):
    """Fail (TimeoutError) what the block does if it takes longer than `seconds`, rather than hang the suite."""
    def late(*_):
        raise TimeoutError(f"took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, late)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_training_row_of_150000_characters_is_read_and_judged_whole_in_under_a_second(tmp_path):
    words = [f"w{i % 9973}x{i // 9973}" for i in range(20_000)]               # all distinct, 6 to 7 letters
    long_row = " ".join(words)[:150_000]                                       # past csv's 131,072 default
    rows = SENTENCES + [(long_row, 1), (" ".join(words[7:19]), 0)]              # a run of the long row, too
    root = write_sst2(tmp_path / "glue", rows)
    task = data.get_task("sst2")
    with at_most(10):
        started = time.perf_counter()
        examples = data.read_split(task, "train", root)
        whole = data.whole_sentences(examples)
        seconds = time.perf_counter() - started
    assert seconds < 1 and examples[10].text_a == long_row
    assert whole == list(range(11))                     # the short run of the long row is a part of it


def test_whole_sentences_agrees_with_listing_every_run(tmp_path):
    """The trie walk against the definition, computed by brute force: a text is a part iff it is a shorter run of
    whole words of another text."""
    texts = ["a b c d", "b c", "c d", "a b c d e", "x", "b c d", "d e f", "e f", "a", "x y", "b c"]
    examples = [data.Example(t, None, 0) for t in texts]
    runs = {tuple(t.split()[a:b]) for t in texts for a in range(len(t.split())) for b in range(a + 1, len(t.split()) + 1)
            if b - a < len(t.split())}
    expected, seen = [], set()
    for i, t in enumerate(texts):
        if tuple(t.split()) not in runs and t not in seen:
            expected.append(i)
            seen.add(t)
    assert data.whole_sentences(examples) == expected == [3, 6, 9]


@pytest.mark.parametrize("kind, says", [("folder", "is a folder, not a file"),
                                        ("fifo", "is not a regular file (a FIFO"),
                                        ("loop", "is a symbolic link that cannot be followed")])
def test_a_data_file_that_is_not_a_file_is_reported_as_what_it_is(glue, kind, says):
    train, dev = glue / "SST-2" / "train.tsv", glue / "SST-2" / "dev.tsv"
    for path in (train, dev):
        path.unlink()
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(path)                                              # a link to itself: a loop
    task = data.get_task("sst2")
    with pytest.raises(data.DataError) as e:
        data.find_data_dir(task, glue)
    assert says in str(e.value) and "not found" not in str(e.value)
    with pytest.raises(data.DataError) as e:
        data.read_split(task, "dev", glue)                                     # and a FIFO is never opened
    assert str(e.value).startswith(f"{dev} {says}")


def test_an_unreadable_training_file_is_one_line(glue, tiny, tmp_path, monkeypatch):
    read_bytes = pathlib.Path.read_bytes

    def refused(path):
        if path.name == "train.tsv":
            raise PermissionError(13, "Permission denied", str(path))           # as chmod 000 does (not to root)
        return read_bytes(path)
    monkeypatch.setattr(pathlib.Path, "read_bytes", refused)
    line = one_error_line(run_cli("--task", "sst2", "--model", tiny, "--data-dir", glue, *FAST,
                                  "--output-dir", tmp_path / "o"))
    assert "train.tsv cannot be read (Permission denied)" in line and not (tmp_path / "o").exists()


def test_a_regression_score_outside_the_tasks_range_is_refused(tmp_path):
    write(tmp_path, "STS-B", "train.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\t42.0\n")
    with pytest.raises(data.DataError) as e:
        data.read_split(data.get_task("stsb"), "train", tmp_path)
    assert "line 3: score 42.0 lies outside STS-B's range, 0 to 5" in str(e.value)

# -----------------------------------------------------------------------------
# a malformed checkpoint: one line naming the file and the field, nothing written

def edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | changes))
    return edit


def vocab_without_cls(folder):
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").write_text("[PAD]\n[SEP]\n[UNK]\nfilm\n")


def tokenizer_larger_than_the_table(folder):
    import model
    from checkpoint import load_tokenizer
    config = model.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                              intermediate_size=64)
    model.BertForSequenceClassification(config).save_pretrained(folder, load_tokenizer())


@pytest.mark.parametrize("edit, says", [
    (edit_config(num_attention_heads=0), "config.json: num_attention_heads must be a whole number, at least 1, got 0"),
    (edit_config(hidden_size="32"), "config.json: hidden_size must be a whole number, at least 1, got '32'"),
    (edit_config(hidden_dropout_prob=2), "config.json: hidden_dropout_prob must be a probability in [0, 1), got 2"),
    (edit_config(pad_token_id=10 ** 9), "config.json: pad_token_id must be a token id"),
    (edit_config(vocab_size=10 ** 12), "config.json: vocab_size 1000000000000 x hidden_size 32, but the checkpoint's"),
    (edit_config(skim=3), "config.json: 'skim' must be an object of settings, got 3"),
    (edit_config(skim={"tau": "hot"}), "config.json: skim.tau must be a finite number above 0"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json: holds a JSON list, not an object"),
    (lambda f: (f / "tokenizer.json").write_text("{not json"), "tokenizer.json: not a tokenizer the tokenizers library"),
    (vocab_without_cls, "vocab.txt: has no [CLS] token"),
    (lambda f: (f / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}'),
     "tokenizer_config.json: do_lower_case must be true or false, got 'yes'"),
    (lambda f: (f / "tokenizer_config.json").write_text("{,}"), "tokenizer_config.json: not valid JSON"),
    (tokenizer_larger_than_the_table, "its tokenizer gives token ids up to 30521, but config.json's vocab_size is 100"),
])
def test_a_malformed_checkpoint_is_one_line_naming_the_file_and_field_and_nothing_is_written(glue, tiny, tmp_path,
                                                                                             edit, says):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    edit(broken)
    before = files(broken)
    line = one_error_line(run_cli("--task", "sst2", "--eval-only", "--checkpoint", broken, "--data-dir", glue,
                                  "--timing-repeats", 0))
    assert says in line
    assert files(broken) == before and not any(p.is_dir() for p in broken.iterdir())  # no eval folder left inside

# -----------------------------------------------------------------------------
# a Ctrl-C at the end or before the start, a full disk

SMALL = ["--task", "sst2", "--stages", "dense:1,skim:1", "--max-train-samples", 8, *FAST]
NO_ROOM = OSError(errno.ENOSPC, "No space left on device")


def comparable(metrics):
    """metrics.json less what differs between two runs of the same command: the time and the output folder."""
    metrics = json.loads(json.dumps(metrics))
    metrics.pop("train_seconds")
    metrics["args"].pop("output_dir")
    for stage in metrics["stages"]:
        stage.pop("train_seconds")
    return metrics


def test_one_ctrl_c_during_the_final_evaluation_then_the_command_it_suggests_gives_the_uninterrupted_metrics(
        glue, tiny, tmp_path, monkeypatch):
    args = ["--model", tiny, "--data-dir", glue, *SMALL]
    whole = main(*args, "--output-dir", tmp_path / "whole")
    report = recipe.report

    def pressed_as_it_starts(*a):
        signal.raise_signal(signal.SIGINT)
        return report(*a)
    with monkeypatch.context() as patch:
        patch.setattr(recipe, "report", pressed_as_it_starts)
        result = run_cli(*args, "--output-dir", tmp_path / "cut")
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 130 and "twice" not in result.stderr
    assert line == ("interrupted during the final evaluation; the model is saved: finish the evaluation with python "
                    f"train.py --resume {tmp_path / 'cut'}")
    main(*line.split("python train.py ")[1].split())                                 # the command it suggests
    assert comparable(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == comparable(whole)
    assert not (tmp_path / "cut" / "resume.pt").exists()


def test_one_ctrl_c_while_the_data_is_prepared_is_one_interruption_and_leaves_no_folder(glue, tiny, tmp_path,
                                                                                       monkeypatch):
    encode = data.encode

    def pressed(*a):
        signal.raise_signal(signal.SIGINT)
        return encode(*a)
    monkeypatch.setattr(data, "encode", pressed)
    result = run_cli("--model", tiny, "--data-dir", glue, *SMALL, "--output-dir", tmp_path / "o")
    assert result.returncode == 130 and "twice" not in result.stderr
    assert result.stderr.strip().startswith("interrupted before training began or while the data was prepared")
    assert not (tmp_path / "o").exists()


def test_a_disk_without_room_for_the_run_is_one_line_before_training(glue, tiny, tmp_path, monkeypatch):
    import flags
    monkeypatch.setattr(flags.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 10 ** 6,
                                                                                          10 ** 6))
    line = one_error_line(run_cli("--model", tiny, "--data-dir", glue, *SMALL, "--output-dir", tmp_path / "o"))
    assert "--output-dir" in line and "1 MB free, but this run writes up to" in line and not (tmp_path / "o").exists()


def test_a_full_disk_leaves_the_last_good_state_and_says_what_was_not_saved(glue, tiny, tmp_path, monkeypatch):
    """The disk fills up as the state is saved on Ctrl-C, then as the model is saved, then as metrics.json is
    written (each simulated where the real one fails: torch.save's OSError, safetensors' error, the file write):
    each is one line saying what was not saved, the state saved before stays byte for byte, no lone config.json is
    left, the trained weights outlive the failed metrics.json, and the command it suggests finishes the run."""
    from safetensors import SafetensorError

    import checkpoint
    import torch

    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        assert run_cli("--model", tiny, "--data-dir", glue, *SMALL, "--output-dir", out).returncode == 130
    state = (out / "resume.pt").read_bytes()                                        # saved at step 1 of 2
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)

        def no_room(*a, **k):
            raise NO_ROOM
        patch.setattr(torch, "save", no_room)
        result = run_cli("--resume", out)
    line = result.stderr.strip().splitlines()[-1]                                  # after the progress bar: one line
    assert result.returncode == 2 and line == (
        f"error: {out / 'resume.pt'} could not be written (No space left on device; nothing was saved at step 1 of "
        f"stage 2, the run stops (the state saved before is still there: free some space, then python train.py "
        f"--resume {out}))")
    assert (out / "resume.pt").read_bytes() == state

    with monkeypatch.context() as patch:
        def full(*a, **k):
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                                  'space left on device" })')
        patch.setattr(checkpoint, "save_file", full)
        result = run_cli("--resume", out)
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and line.startswith("error: ")
    assert "model.safetensors could not be written (Error while serializing" in line
    assert "nothing of the trained model was saved (the state saved during training is still there" in line
    assert sorted(p.name for p in out.iterdir()) == ["resume.pt"] and (out / "resume.pt").read_bytes() == state

    write_text = pathlib.Path.write_text
    with monkeypatch.context() as patch:
        def metrics_full(path, *a, **k):
            if path.name.startswith(".metrics.json."):
                raise NO_ROOM
            return write_text(path, *a, **k)
        patch.setattr(pathlib.Path, "write_text", metrics_full)
        result = run_cli("--resume", out)
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2
    assert line == (f"error: {out / 'metrics.json'} could not be written (No space left on device; the model is saved: "
                    f"free some space, then finish the evaluation with python train.py --resume {out})")
    weights = (out / "model.safetensors").read_bytes()
    assert not (out / "metrics.json").exists()
    metrics = main("--resume", out)
    assert (out / "model.safetensors").read_bytes() == weights and metrics["train_steps"] == 2

# -----------------------------------------------------------------------------
# one run to a folder, and never into one it reads

def test_two_runs_started_on_one_folder_exactly_one_trains(glue, tiny, tmp_path):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--no-skim", "--max-train-samples", 8, *FAST,
            "--output-dir", tmp_path / "o"]
    first = subprocess.Popen([sys.executable, ROOT / "train.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    started = time.time()
    while not (tmp_path / "o" / recipe.LOCK).exists() and first.poll() is None and time.time() - started < 120:
        time.sleep(0.05)
    second = run_cli(*args)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert one_error_line(second) == (f"error: --output-dir {tmp_path / 'o'} is held by another run, still going "
                                      f"(process {first.pid}, {tmp_path / 'o' / recipe.LOCK}); wait for it to end, "
                                      "or give another folder")
    assert (tmp_path / "o" / "metrics.json").is_file() and not (tmp_path / "o" / recipe.LOCK).exists()


def test_a_lock_left_by_a_process_that_ended_is_taken_over_with_a_line_saying_so(tiny, tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / recipe.LOCK).write_text(f"{ended.pid}\n")
    result = run_cli("--task", "sst2", "--model", tiny, "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.splitlines()[0] == (
        f"note: {tmp_path / 'o' / recipe.LOCK} was left by process {ended.pid}, which is no longer running; this run "
        "takes the folder over")
    assert "nowhere" in result.stderr.splitlines()[-1] and list((tmp_path / "o").iterdir()) == []


def test_resume_into_a_folder_holding_a_finished_run_beside_another_runs_state_is_refused(glue, tiny, tmp_path,
                                                                                         monkeypatch):
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        assert run_cli("--model", tiny, "--data-dir", glue, *SMALL, "--output-dir", out).returncode == 130
    for name in ("config.json", "model.safetensors", "tokenizer.json"):           # a finished run, of another task
        shutil.copy(tiny / name, out / name)
    (out / "metrics.json").write_text(json.dumps({"task": "rte"}))
    before = files(out)
    line = one_error_line(run_cli("--resume", out))
    assert f"--resume {out}: the folder holds a finished run (metrics.json) beside resume.pt, a sst2 run" in line
    assert files(out) == before


@pytest.mark.parametrize("folder", ["default checkpoint", "data"])
def test_a_folder_the_run_reads_is_never_its_output_folder_even_with_overwrite(glue, tmp_path, folder):
    from checkpoint import default_checkpoint_dir
    out = default_checkpoint_dir() if folder == "default checkpoint" else glue / "SST-2"
    before = files(out)
    line = one_error_line(run_cli("--task", "sst2", "--data-dir", glue, *FAST, "--output-dir", out, "--overwrite"))
    assert ("embedded default checkpoint's folder this run reads" if folder == "default checkpoint" else
            "is the --data-dir folder this run reads") in line
    assert files(out) == before

# -----------------------------------------------------------------------------
# small things, second round

def test_a_teacher_trained_on_another_task_is_refused_for_training(glue, tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "teacher")
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], finetuning_task="rte")
    (tmp_path / "teacher" / "config.json").write_text(json.dumps(config))
    line = one_error_line(run_cli("--task", "sst2", "--model", tiny, "--teacher", tmp_path / "teacher", "--data-dir",
                                  glue, *FAST, "--output-dir", tmp_path / "o"))
    assert "--teacher" in line and "was trained on rte, not sst2" in line and not (tmp_path / "o").exists()


def test_help_shows_every_default():
    import argparse

    import flags
    parser = flags.parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        shown = formatter._expand_help(action) if action.help else ""
        value = action.default
        assert "default" in shown and (str(value) in shown or isinstance(value, float) and f"{value:g}" in shown), \
            (action.option_strings, shown)

# -----------------------------------------------------------------------------
# bench.py, by the same rules

def bench_glue(tmp_path):
    root = write_sst2(tmp_path / "glue", SENTENCES[:3])
    return write_sst2(root, SENTENCES[:3], name="dev.tsv")


def run_bench(capsys, *argv):
    """bench.main as the shell runs it: (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        bench.main([str(a) for a in argv])
        raise SystemExit(0)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [(["--repeats", "0"], "--repeats, --batch-sizes, --limit and --threads must be >= 1"),
                                         (["--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
                                         (["--keep-ratios", "2"], "--keep-ratios must lie in (0, 1]")])
def test_bench_a_bad_value_is_one_line_and_exit_2(capsys, flags, says):
    code, err = run_bench(capsys, *flags)
    assert code == 2 and err.strip() == f"error: {says}"


@pytest.mark.parametrize("out", ["a folder", "under a file"])
def test_bench_an_output_it_cannot_write_is_one_line_before_anything_is_timed(tmp_path, capsys, monkeypatch, out):
    monkeypatch.setattr(bench, "bench", lambda args: pytest.fail("the benchmark ran"))
    (tmp_path / "a folder").mkdir()
    (tmp_path / "a file").write_text("")
    path = tmp_path / "a folder" if out == "a folder" else tmp_path / "a file" / "b.json"
    code, err = run_bench(capsys, "--out", path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --out {path} is a folder" if out == "a folder" else
                          f"error: --out {path}: its folder is not writable")


def test_bench_ctrl_c_writes_the_batch_sizes_measured_before_it_or_says_nothing_was(tmp_path, capsys, monkeypatch):
    glue, out = bench_glue(tmp_path), tmp_path / "b.json"
    interleaved, calls = flops.interleaved_pass, [0]

    def pressed_in_the_second_batch_size(*a):
        calls[0] += 1
        if calls[0] == 2:
            signal.raise_signal(signal.SIGINT)
        return interleaved(*a)
    monkeypatch.setattr(flops, "interleaved_pass", pressed_in_the_second_batch_size)
    args = ["--data-dir", glue, "--batch-sizes", 1, 2, "--keep-ratios", 0.5, "--paths", "infer", "--repeats", 1]
    code, err = run_bench(capsys, *args, "--out", out)
    report = json.loads(out.read_text())
    assert code == 0 and report["interrupted"] == "by Ctrl-C during batch size 2: batch sizes 1 are measured"
    assert [d["batch_size"] for d in report["dense"]] == [1] and {r["batch_size"] for r in report["results"]} == {1}
    calls[0] = 1                                                                     # now in the first batch size
    code, err = run_bench(capsys, *args, "--out", tmp_path / "none.json")
    assert code == 130 and err.strip() == "interrupted before a batch size was measured: nothing was written"
    assert not (tmp_path / "none.json").exists()


def test_bench_refuses_a_checkpoint_of_another_task(tiny, tmp_path, capsys):
    import skim
    model = skim.Transkimmer.from_pretrained(tiny, num_labels=2)
    model.bert.config.finetuning_task = "sst2"
    model.save_pretrained(tmp_path / "skimmer")
    code, err = run_bench(capsys, "--checkpoint", tmp_path / "skimmer", "--task", "rte", "--data-dir", bench_glue(tmp_path),
                          "--out", tmp_path / "b.json")
    assert code == 2 and err.strip() == (f"error: --checkpoint {tmp_path / 'skimmer'} was trained on sst2, not rte: time "
                                         "it with --task sst2")
    assert not (tmp_path / "b.json").exists()
