"""torchrun: two gloo processes, each training on half of every batch, end with the weights, the lambdas and the
record of one process trained on the whole batch; rank 0 alone writes; and --resume continues under two
processes a run that one process started."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import model
import train
from conftest import SENTENCES, write_sst2
from test_train import ROOT, interrupt_at, run_cli

# Two processes sum the gradient in another order than one: float rounding, which Adam's normalisation lifts
# to about 2e-5 after these 16 steps (weights of about 0.02 that move by about 0.016). Shares weighed wrongly
# (each process's mean loss counted alike, shares of 3 and 2 in the last batch) differ by 4e-3.
TOL = 1e-4


@pytest.fixture(scope="module")
def no_dropout(tmp_path_factory):
    """The tiny model without dropout, whose random masks would differ between one process and two; with
    --mu0 -8 the skim decisions are taken at a margin that no Gumbel draw crosses (its probability is e^-16 a
    token), so the noise, drawn differently in one process and two, changes nothing either."""
    tokenizer = checkpoint.load_tokenizer()
    config = model.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("no-dropout")
    model.Bert(config).save_pretrained(folder, tokenizer)
    glue = write_sst2(tmp_path_factory.mktemp("glue"), (SENTENCES * 3)[:29])  # a last batch of 5: shares of 3 and 2
    write_sst2(glue, SENTENCES[:6], name="dev.tsv")
    return folder, glue


def flags_for(no_dropout):
    folder, glue = no_dropout
    return ["--task", "sst2", "--model", folder, "--data-dir", glue, "--batch-size", 8, "--lr", "1e-3",
            "--stages", "dense:1,skim:2,frozen:1", "--target-speedup", 2, "--mu0", -8, "--timing-repeats", 0,
            "--group-by-length", "--precision", "fp32"]  # (bfloat16 would round a batch of 8 and two of 4 apart by far
                                                         # more than TOL)


def torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "train.py"), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=300)


def assert_same_weights(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=TOL, rtol=0), name


def test_two_processes_train_what_one_process_trains_on_the_whole_batch(no_dropout, tmp_path):
    one = train.main([str(a) for a in flags_for(no_dropout) + ["--output-dir", tmp_path / "one"]])
    result = torchrun(*flags_for(no_dropout), "--output-dir", tmp_path / "two")
    assert result.returncode == 0, result.stderr
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for a, b in zip(one["stages"], two["stages"]):
        assert a["train_steps"] == b["train_steps"]
        if "trace" in a:  # the controller saw the whole batch's FLOPs in both, so it set the same lambdas
            assert a["trace"]["flops_fraction"] == b["trace"]["flops_fraction"]
            assert a["trace"]["skim_coef"] == pytest.approx(b["trace"]["skim_coef"], abs=1e-4)
            assert a["final_skim_coef"] == pytest.approx(b["final_skim_coef"], abs=1e-4)
    assert two["predictions"] == one["predictions"] and two["flops"] == one["flops"]
    # rank 0 alone writes and speaks: one folder, one metrics.json, one report line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert result.stdout.count("sst2 dev: accuracy") == 1 and "2 processes" in result.stderr


def test_resume_under_two_processes_continues_a_run_one_process_began(no_dropout, tmp_path, monkeypatch):
    whole = train.main([str(a) for a in flags_for(no_dropout) + ["--output-dir", tmp_path / "whole"]])
    with monkeypatch.context() as patch:
        interrupt_at(patch, 7)  # in the skim stage
        assert run_cli(*flags_for(no_dropout), "--output-dir", tmp_path / "cut").returncode == 130
    result = torchrun("--resume", tmp_path / "cut")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    assert_same_weights(tmp_path / "whole", tmp_path / "cut")
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["predictions"] == whole["predictions"] and not (tmp_path / "cut" / "resume.pt").exists()
