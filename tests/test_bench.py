"""bench.py: its "cut" pass, the ceiling a pruned pass is measured against, computes exactly what pruning
with forced decisions computes, and a run on a few sentences reports every column it promises."""

import json
import math

import pytest
import torch

import bench
import skim


@pytest.mark.parametrize("ratio", [0.5, 0.25])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_the_dense_model_on_the_cut_batch_computes_what_forced_pruning_computes(tiny, ratio, batch_size):
    torch.manual_seed(0)
    m = skim.Transkimmer.from_pretrained(tiny, num_labels=2).eval()
    L = m.config.num_hidden_layers
    lengths = [9, 5, 7][:batch_size]
    ids = torch.randint(1000, 2000, (batch_size, max(lengths)))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    batch = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    decisions = bench.forced_decisions(mask, ratio, L)
    cut = bench.cut_to_kept(batch, ratio)
    with torch.inference_mode():
        pruned = m.infer(batch["input_ids"], mask, batch["token_type_ids"], decisions=decisions).logits
        dense_on_cut = m.bert.infer(cut["input_ids"], cut["attention_mask"], cut["token_type_ids"])
        masked = m(batch["input_ids"], mask, batch["token_type_ids"], decisions=decisions).logits
        dense_forward_on_cut = m.bert(cut["input_ids"], cut["attention_mask"], cut["token_type_ids"])
    assert torch.allclose(pruned, dense_on_cut, atol=1e-5) and torch.allclose(masked, dense_forward_on_cut, atol=1e-5)
    assert cut["attention_mask"].sum(1).tolist() == [math.ceil(ratio * n) for n in lengths]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_run_reports_the_ceiling_and_the_overhead_of_each_forced_pass(tmp_path, dtype):
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    rows = ["a gripping , beautifully acted film .", "dull and lifeless", "it 's a charming , funny ride"]
    for split in ("train", "dev"):
        (glue / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{r}\t1\n" for r in rows))
    out = tmp_path / "bench.json"
    bench.main(["--data-dir", str(glue), "--batch-sizes", "1", "2", "--keep-ratios", "1", "0.5", "--repeats", "1",
                "--dtype", dtype, "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["dtype"] == dtype
    forced = [r for r in report["results"] if r["keep_ratio"] == 0.5]
    assert len(forced) == 6                                                       # 2 batch sizes x 3 paths
    fixed = [r for r in forced if r["path"] == "fixed"]
    assert all(r["capacity"] == [0.5] * 6 and r["host_syncs"] == "not checked (cpu)" for r in fixed)
    # one sentence keeps ceil(0.5 n) tokens, exactly its columns: nothing is padded, so executed = counted
    assert all(r["flops_speedup_executed"] == pytest.approx(r["flops_speedup"]) for r in fixed if r["batch_size"] == 1)
    for r in forced:
        assert r["no_overhead_speedup"] == pytest.approx(r["dense_seconds"] / r["cut_seconds"])
        assert r["overhead"] == pytest.approx(r["pruned_seconds"] / r["cut_seconds"])
    assert all("overhead" not in r for r in report["results"] if r["keep_ratio"] == 1)


def test_the_device_sets_the_default_output_and_a_missing_gpu_is_one_clear_error(capsys):
    assert bench.parse_args([]).out == "out/bench_cpu.json"  # not the committed results/bench_cpu.json
    if torch.cuda.is_available():
        assert bench.parse_args(["--device", "cuda"]).out == "out/bench_cuda.json"
        return
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cuda"])
    assert "--device cuda: no CUDA device is available here" in capsys.readouterr().err
