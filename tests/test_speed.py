"""What makes training faster without changing what it trains: the length-grouped batches (data.batch_rows) are
drawn from the seed and the epoch alone, so a resumed run, or two processes, train on exactly the batches of one
uninterrupted run; the padding the training benchmark reports is the padding counted; bfloat16 autocast changes
one step's loss by rounding only, and leaves every weight and optimizer state in float32; --precision auto takes
bf16 only where the machine multiplies bfloat16 in hardware; and the released recipe trains as its authors did,
on random batches in float32."""

import json
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data
import flops
import flags
import skim
import train
from conftest import padded_batch, small_config
from model import BertForSequenceClassification
from test_train import interrupt_at, main, run_cli, settings_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
import bench_train  # noqa: E402


def recorded_batches(monkeypatch):
    """The input_ids of every batch train_stage trains on, in order (train.py moves each to the device)."""
    seen, to_device = [], train.to_device

    def recording(batch, device):
        seen.append(batch["input_ids"].clone())
        return to_device(batch, device)
    monkeypatch.setattr(train, "to_device", recording)
    return seen


@pytest.mark.parametrize("k", [3, 6])  # in the first epoch of 4 batches, and in the second
def test_a_run_resumed_after_k_batches_trains_on_batch_k_plus_1_of_the_uninterrupted_order(glue, tiny, tmp_path,
                                                                                           monkeypatch, k):
    args = ["--task", "sst2", "--model", tiny, "--data-dir", glue, "--batch-size", 8, "--no-skim", "--epochs", 2,
            "--timing-repeats", 0, "--group-by-length"]
    with monkeypatch.context() as patch:
        whole = recorded_batches(patch)
        result = run_cli(*args, "--output-dir", tmp_path / "whole")
    assert result.returncode == 0 and len(whole) == 8                               # 30 rows: 4 batches an epoch
    # length-grouped batches, said in the printed line and in metrics.json
    assert "length-grouped batches" in result.stderr
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["args"]["group_by_length"] is True
    rows = [[tuple(row[row != 0].tolist()) for row in b] for b in whole]          # each row's tokens, no padding
    first, second = sum(rows[:4], []), sum(rows[4:], [])
    assert len(first) == 30 and sorted(first) == sorted(second)                     # each epoch: the 30 rows
    assert first != second                                                          # in another order
    for b in rows:  # grouped: one megabatch here, so every batch is sorted longest first
        assert [len(r) for r in b] == sorted((len(r) for r in b), reverse=True)
    with monkeypatch.context() as patch:
        cut = recorded_batches(patch)
        interrupt_at(patch, k)
        assert run_cli(*args, "--output-dir", tmp_path / "cut").returncode == 130
    with monkeypatch.context() as patch:
        resumed = recorded_batches(patch)
        main("--resume", tmp_path / "cut")
    assert len(cut) == k and len(resumed) == 8 - k
    assert all(torch.equal(a, b) for a, b in zip(cut + resumed, whole, strict=True))


def test_the_processes_shares_of_a_grouped_batch_make_up_the_global_batch():
    lengths = np.random.default_rng(0).integers(3, 40, size=70).tolist()
    items = [{"input_ids": list(range(1, n + 1)), "token_type_ids": [0] * n, "label": i} for i, n in enumerate(lengths)]
    for world in (2, 3):
        for batch in data.batches(items, 16, shuffle=True, seed=1, group_by_length=True):  # the last one holds 6
            shares = [train.share_of(batch, rank, world) for rank in range(world)]
            labels = sorted(label for shard, _ in shares for label in shard["labels"].tolist())
            assert labels == sorted(batch["labels"].tolist())                       # each row in one share, once
            assert sum(weight for _, weight in shares) == pytest.approx(world)      # DDP's average: the batch's mean
            for shard, weight in shares:
                assert weight == pytest.approx(len(shard["labels"]) * world / len(batch["labels"]))
    one = next(data.batches(items[:1], 16))  # a batch of one row under two processes: rank 1 runs it at weight 0
    assert train.share_of(one, 1, 2)[1] == 0 and len(train.share_of(one, 1, 2)[0]["labels"]) == 1


def test_the_padding_ratio_the_benchmark_reports_is_the_padding_of_the_batches_train_py_trains_on(glue):
    import checkpoint
    encoded = bench_train.training_set("sst2", glue, checkpoint.load_tokenizer())
    lengths = [len(e["input_ids"]) for e in encoded]
    assert len(lengths) == 30
    for grouped in (False, True):
        batches = list(data.batches(encoded, 4, shuffle=True, seed=bench_train.SEED, group_by_length=grouped))
        positions = sum(b["input_ids"].numel() for b in batches)                    # computed: the padded tensors
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        assert tokens == sum(lengths)
        assert bench_train.padding_ratio(lengths, 4, grouped) == pytest.approx(positions / tokens, abs=1e-12)
    # by hand: lengths 2, 3, 5, 4 in batches of 2, grouped: (5, 4) and (3, 2), in either order -> (5 + 5 + 3 + 3) / 14
    assert bench_train.padding_ratio([2, 3, 5, 4], 2, True) == pytest.approx(16 / 14)


# bfloat16 keeps 8 significant bits: each operand of a product is rounded by up to 2^-9 (0.2%) of its size. On this
# 2-layer model, with logits of order 1 (weights drawn at std 0.2), the loss (1.50) moved by 0.07% (torch 2.13, AMD
# EPYC); the tolerance, 1% of the loss, leaves room for other kernels' rounding
BF16_LOSS_TOLERANCE = 0.01


def one_step(precision):
    """One training step of a tiny Transkimmer as train.py takes it, from the same weights and noise. -> (the
    loss, the model's output, the model, its optimizer)."""
    config = small_config(2)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0  # no dropout: the same model each time
    config.initializer_range = 0.2  # logits of order 1 (at BERT's 0.02 they are about 0.02: no rounding to see)
    torch.manual_seed(0)
    model = skim.Transkimmer(BertForSequenceClassification(config), mu0=2.0).train()
    settings = SimpleNamespace(device="cpu", precision=precision, predictor_lr=None, weight_decay=0.01)
    optimizer = train.optimizer_for(model, settings, 1e-2)
    ids, mask, types = padded_batch(config.vocab_size, [12, 7, 9, 3])
    labels = torch.tensor([0, 1, 2, 1])
    torch.manual_seed(1)  # the same Gumbel noise
    with train.autocast(settings):
        out = model(ids, mask, types)
    loss = skim.total_loss(train.task_loss(out.logits.float(), labels, SimpleNamespace(labels=(0, 1, 2))),
                           out.aux_loss, 0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), out, model, optimizer


def test_one_bf16_step_is_within_rounding_of_fp32_and_leaves_weights_and_optimizer_state_in_fp32():
    fp32_loss, fp32_out, _, _ = one_step("fp32")
    bf16_loss, bf16_out, model, optimizer = one_step("bf16")
    assert bf16_out.logits.dtype == torch.bfloat16 and fp32_out.logits.dtype == torch.float32  # autocast ran
    assert 0 < abs(bf16_loss - fp32_loss) < BF16_LOSS_TOLERANCE * abs(fp32_loss)
    # the estimator's softmax and the skim loss in float32, so the same noise takes the same decisions
    assert bf16_out.aux_loss.dtype == torch.float32 and all(m.dtype == torch.float32 for m in bf16_out.masks)
    assert all(torch.equal(a, b) for a, b in zip(bf16_out.masks, fp32_out.masks))
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
        for key, value in optimizer.state[p].items():
            assert value.dtype == torch.float32, (name, key)
    assert len(optimizer.state) == len(list(model.parameters()))                    # every parameter was stepped


def test_the_estimator_and_the_skim_loss_compute_in_float32_from_bfloat16_inputs():
    logits = torch.randn(4, 6, 2).bfloat16()
    gumbel = torch.randn(4, 6, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sample = skim.straight_through_gumbel_softmax(logits, 0.1, gumbel)
    assert sample.dtype == torch.float32
    assert torch.equal(sample, skim.straight_through_gumbel_softmax(logits.float(), 0.1, gumbel))
    masks, pad = [sample[..., 1].bfloat16()] * 3, torch.ones(4, 6).bfloat16()
    assert skim.skim_loss(masks, pad).dtype == torch.float32
    assert skim.straight_through_gumbel_softmax(logits.double(), 0.1, gumbel).dtype == torch.float64  # kept as is


def test_auto_precision_is_bf16_only_where_the_machine_multiplies_bfloat16_in_hardware(monkeypatch):
    assert flops.native_bf16("cpu", {"avx2", "avx512f"}) is False                 # PyTorch would emulate it
    assert flops.native_bf16("cpu", {"avx2", "avx512f", "avx512_bf16"}) is True   # AMD Zen 4, Intel Cooper Lake
    assert flops.native_bf16("cpu", {"amx_bf16", "amx_tile"}) is True             # Intel Sapphire Rapids
    for cpu, expected in (({"avx2"}, "fp32"), ({"avx512_bf16"}, "bf16")):
        monkeypatch.setattr(flops, "cpu_flags", lambda cpu=cpu: set(cpu))
        assert flags.resolve_precision("auto", "cpu") == expected
        assert flags.resolve_precision("fp32", "cpu") == "fp32" and flags.resolve_precision("bf16", "cpu") == "bf16"


def test_grouping_and_auto_precision_are_the_default_and_the_released_recipe_trains_on_random_batches_in_float32(
        glue, tmp_path):
    """Measured before adopted (results/README.md, section 6): the default groups by length, in bf16 where the machine
    multiplies it; the old default is two flags away."""
    ours = settings_of(glue, tmp_path, "--task", "sst2")
    assert ours.group_by_length and ours.precision == flags.resolve_precision("auto", "cpu")
    old = settings_of(glue, tmp_path, "--task", "sst2", "--no-group-by-length", "--precision", "fp32")
    assert not old.group_by_length and old.precision == "fp32"
    assert settings_of(glue, tmp_path, "--task", "sst2", "--precision", "bf16").precision == "bf16"
    theirs = settings_of(glue, tmp_path, "--task", "sst2", "--recipe", "released")
    assert theirs.precision == "fp32" and not theirs.group_by_length
    for flag in (["--precision", "bf16"], ["--group-by-length"], ["--no-group-by-length"]):
        with pytest.raises(flags.UsageError, match="drop " + flag[0]):
            settings_of(glue, tmp_path, "--task", "sst2", "--recipe", "released", *flag)


def test_a_state_saved_before_grouping_and_precision_existed_resumes_on_random_batches_in_float32(glue, tmp_path):
    saved = asdict(settings_of(glue, tmp_path, "--task", "sst2"))
    del saved["group_by_length"], saved["precision"]
    old = flags.Settings(**saved)
    assert not old.group_by_length and old.precision == "fp32"
