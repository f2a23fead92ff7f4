"""results/alternatives.py: each method's rows are read from its own folder, pairs are made only of seeds trained
on the same kind of device, and the verdict at 2x names the leader, its margin and whether the margin exceeds
the seed-to-seed spread, and waits while any method lacks three seeds there."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
sys.path.insert(0, str(ROOT / "tests"))
import alternatives  # noqa: E402  (results/ is a folder of scripts, not a package)
import compare  # noqa: E402
from test_compare import fake_recipe_run, write_dev  # noqa: E402

SEEDS = (42, 43, 44)
WRONG = {"t20": [24, 26, 25], "layers3": [22, 23, 21], "topk20": [12, 14, 13], "sm20": [40, 42, 41]}  # of 200


def make_runs(tmp_path, labels, sm20_devices=("cpu", "cpu", "cpu"), sm20_seeds=SEEDS, layers3_args=None):
    """Fake runs of every method at 2x, seeds 42-44, in results/'s two folders; the wrong sentences of each run
    are the first k of a fixed order, so that two runs disagree on exactly the difference of their k."""
    order = np.random.default_rng(0).permutation(len(labels))
    def wrong(k):
        p = labels.copy()
        p[order[:k]] = 1 - p[order[:k]]
        return p
    recipe, alt = tmp_path / "results" / "recipe", tmp_path / "results" / "alternatives"
    recipe.mkdir(parents=True), alt.mkdir()
    for i, seed in enumerate(SEEDS):
        fake_recipe_run(recipe, f"t20-seed{seed}", wrong(WRONG["t20"][i]), 2.0, dense_predictions=wrong(10))
        fake_recipe_run(recipe, f"layers3-seed{seed}", wrong(WRONG["layers3"][i]), 1.0, over_checkpoint=2.0,
                        args=layers3_args)
        fake_recipe_run(alt, f"topk20-seed{seed}", wrong(WRONG["topk20"][i]), 2.02)
    for i, (seed, device) in enumerate(zip(sm20_seeds, sm20_devices)):
        fake_recipe_run(alt, f"sm20-seed{seed}", wrong(WRONG["sm20"][i]), 1.99, device=device)
    m = json.loads((alt / "topk20-seed42.json").read_text())
    m["flops"]["kept_fraction"] = [1.0, 0.5, 0.25]
    (alt / "topk20-seed42.json").write_text(json.dumps(m))
    return tmp_path / "results"


def run_alternatives(tmp_path, results, glue):
    alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(tmp_path / "out")])
    return json.loads((tmp_path / "out.json").read_text()), (tmp_path / "out.md").read_text()


def test_every_method_at_2x_is_read_from_its_folder_and_the_leader_is_named_with_its_paired_margin(tmp_path):
    labels = np.random.default_rng(1).integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    out, text = run_alternatives(tmp_path, make_runs(tmp_path, labels), glue)
    for key, wrong in WRONG.items():
        assert out["rows"][key]["accuracy"] == pytest.approx([100 * (1 - w / 200) for w in wrong])
    assert out["rows"]["dense"]["accuracy"] == pytest.approx([95.0] * 3)            # the t20 runs' dense stage
    assert "| static top-k (PoWER-BERT) | 1.5x | not run yet |" in text
    assert "[1.0, 0.5, 0.25]" in text                                              # the one run that recorded it
    # top-k leads (13 wrong on average) over the 3 layers (22): by 4.5 points, every seed right on 8 to 10 more
    # sentences and wrong on none more, far beyond a spread of 0.5
    assert out["verdict"].startswith("At 2x the best is static top-k (93.50 ± 0.50), 4.50 points above the first 3 "
                                     "layers (89.00 ± 0.50; paired over seeds 42, 43, 44: +4.50 [+")
    assert out["verdict"].endswith("a difference that exceeds the seed-to-seed spread.")
    assert "| topk20 vs sm20 | 42: +14.00, 28 : 0, p = 0.00;" in text


def test_the_methods_are_paired_at_every_target_where_two_have_run(tmp_path):
    labels = np.random.default_rng(1).integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    results = make_runs(tmp_path, labels)
    six_wrong = labels.copy()
    six_wrong[:6] = 1 - six_wrong[:6]                                                # 97.00
    fake_recipe_run(results / "alternatives", "topk15-seed42", labels, 1.5)          # none wrong: 100.00
    fake_recipe_run(results / "alternatives", "sm15-seed42", six_wrong, 1.5)
    out, text = run_alternatives(tmp_path, results, glue)
    assert "| topk15 vs sm15 | 42: +3.00, 6 : 0, p = 0.03 |" in text
    assert out["pairs"]["topk15 vs dense"]["seeds"] == [42]                          # dense: the t20 runs' stage
    assert not any(k.startswith("t15 ") or k.endswith(" t15") for k in out["pairs"])  # not run: not paired
    assert "topk15 vs t20" not in out["pairs"]                                      # only at the same target


def test_seeds_trained_on_another_device_are_not_paired_and_the_verdict_waits_for_three_seeds(tmp_path):
    labels = np.random.default_rng(1).integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    out, text = run_alternatives(tmp_path, make_runs(tmp_path, labels, sm20_devices=("cuda", "cpu", "cpu")), glue)
    line = next(l for l in text.splitlines() if l.startswith("| topk20 vs sm20 |"))
    assert "42:" not in line and "43:" in line and "44:" in line                     # seed 42 of sm20: on cuda
    assert out["rows"]["sm20"]["trained_on"] == ["cuda", "cpu", "cpu"] and out["pairs"]["topk20 vs sm20"]["seeds"] == [43, 44]

    results = make_runs(tmp_path / "two", labels, sm20_seeds=(42, 43))
    out, text = run_alternatives(tmp_path, results, glue)
    assert out["verdict"] is None and "waits for three seeds of every method" in text


def test_time_finds_a_method_saved_by_run_alternatives_and_times_it_at_batch_1_and_32(tmp_path, tiny):
    """--time: a model results/run_alternatives.sh saved (runs/sst2-alt-NAME/) is timed by the one timing
    function at both batch sizes; a row whose model is not on this machine says so, unless it is a dense one
    (fewer layers): that is timed on the checkpoint it started from, cut to its layers, and marked so."""
    timed_once(tmp_path, tiny)


def executed(m, glue):
    """torch's FlopCounterMode over one pass of m.infer on the test's dev set at batch 32 (SDPA's math kernel,
    whose matrix products it counts)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for b in compare.dev_batches(glue, 32):
            m.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    return counter.get_total_flops()


def timed_once(tmp_path, tiny):
    import methods
    import model
    from methods import skipmiddle
    from model import BertForSequenceClassification

    labels = np.random.default_rng(1).integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    results = make_runs(tmp_path, labels, layers3_args={"model": str(tiny), "stages": [["dense", 2.0]],
                                                         "keep_layers": [0, 1]})
    sm = skipmiddle.SkipMiddle(BertForSequenceClassification.from_pretrained(tiny, num_labels=2))
    sm.save_pretrained(tmp_path / "runs" / "sst2-alt-sm20-seed42", sm.bert.tokenizer)
    alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(tmp_path / "out"),
                       "--time", str(tmp_path / "runs"), "--repeats", "1"])
    out = json.loads((tmp_path / "out.json").read_text())
    for bs in ("1", "32"):
        timed = out["rows"]["sm20"]["measured_speedup"][bs]
        assert timed[0] > 0 and timed[1:] == [None, None]                          # seeds 43, 44: not saved here
        assert out["rows"]["topk20"]["measured_speedup"][bs] == [None] * 3
        assert all(x > 0 for x in out["rows"]["layers3"]["measured_speedup"][bs])  # 2 of tiny's 3 layers
        assert len(set(out["rows"]["layers3"]["measured_speedup"][bs])) == 1        # one stand-in, timed once
    assert out["timings"]["layers3-seed42"]["model"].startswith("stand-in")
    assert out["timings"]["sm20-seed42"]["model"] == "saved"
    text = (tmp_path / "out.md").read_text()
    layers3 = next(l for l in text.splitlines() if l.startswith("| fewer layers (4, 3, 2) | 2x |"))
    assert layers3.count("x)\\*") == 3 and "\\* timed on the checkpoint cut to the run's layers" in text
    # FLOPs as run, against torch's own count of what each infer executes over dev at batch 32
    saved = methods.load_saved(tmp_path / "runs" / "sst2-alt-sm20-seed42")
    two_layers = methods.Dense(model.keep_layers(BertForSequenceClassification.from_pretrained(tiny, num_labels=2), [0, 1]))
    for name, m in (("sm20-seed42", saved), ("layers3-seed43", two_layers)):
        assert out["timings"][name]["flops_executed"] == pytest.approx(executed(saved.bert, glue) / executed(m, glue),
                                                                       abs=1e-3)
    assert out["timings"]["layers3-seed43"]["flops_executed"] > 1.4                # 2 layers of 3, [CLS] alone in the last
    assert "| skip the middle layers | 2x | 42, 43, 44 (3 cpu) |" in text and "x / " in text
    assert "not timed" in next(l for l in text.splitlines() if l.startswith("| static top-k (PoWER-BERT) | 2x |"))
    assert "Timed by `python results/alternatives.py --time " in text                 # and on what machine, when,
    timed_line = text.split("Timed by `python results/alternatives.py --time ")[1].splitlines()[0]
    assert all(name in timed_line for name in out["timings"])                         # and which runs
    return results, glue, out


def test_a_rerun_keeps_the_timings_and_times_only_the_runs_not_timed_yet(tmp_path, tiny, monkeypatch):
    """Adding a seed and rerunning the script must not lose what was timed before, nor time it again."""
    import flops
    results, glue, first = timed_once(tmp_path, tiny)
    out = tmp_path / "out"
    alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(out)])  # no --time
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["rows"]["sm20"]["measured_speedup"] == first["rows"]["sm20"]["measured_speedup"]
    assert again["timings"] == first["timings"] and "sm20-seed42" in again["timings"]
    import methods
    calls, loaded, load_saved, stand_in = [], [], methods.load_saved, compare.stand_in

    def counted(load):  # a loader that records each model it makes
        return lambda *a, **k: (m := load(*a, **k)) is not None and loaded.append(a) or m
    monkeypatch.setattr(flops, "measure_speedup", lambda *a, **k: calls.append(1) or {"measured_speedup": 9.0})
    monkeypatch.setattr(methods, "load_saved", counted(load_saved))
    monkeypatch.setattr(compare, "stand_in", counted(stand_in))
    alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(out), "--time",
                       str(tmp_path / "runs"), "--repeats", "1"])
    assert calls == [] and json.loads(out.with_suffix(".json").read_text())["timings"] == first["timings"]
    assert loaded == []                                                 # every model timed before: none even loaded
    monkeypatch.undo()
    monkeypatch.setattr(flops, "measure_speedup", lambda *a, **k: calls.append(1) or {"measured_speedup": 9.0})
    alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(out), "--time",
                       str(tmp_path / "runs"), "--repeats", "1", "--retime"])  # sm20-seed42 and one stand-in for
    # the three layers3 runs (one checkpoint, the same layers), at 2 batch sizes
    assert len(calls) == 2 * 2 and json.loads(out.with_suffix(".json").read_text())["rows"]["sm20"]["measured_speedup"] == {
        "1": [9.0, None, None], "32": [9.0, None, None]}
    kept = out.with_suffix(".json").read_text()
    with pytest.raises(SystemExit):                                     # --retime alone would only erase them
        alternatives.main(["--results", str(results), "--data-dir", str(glue), "--out", str(out), "--retime"])
    assert out.with_suffix(".json").read_text() == kept


def test_topk_attention_times_the_hand_written_and_the_fused_layers_on_the_inputs_topk_meets(tmp_path, tiny):
    """results/topk_attention.py: one pass of a saved top-k model records what its layers receive; both ways of
    running them are timed on exactly those inputs, and a model of another method is one error line."""
    from methods import topk
    import topk_attention
    from model import BertForSequenceClassification

    glue = write_dev(tmp_path / "glue", np.random.default_rng(1).integers(0, 2, 40))
    model = topk.TopK(BertForSequenceClassification.from_pretrained(tiny, num_labels=2), rho=0.6)
    model.save_pretrained(tmp_path / "topk", model.bert.tokenizer)
    batches = compare.dev_batches(glue, 8)
    seen = topk_attention.recorded_inputs(model.eval(), batches)
    assert len(seen) == len(batches) * (len(model.bert.layers) - 1)                  # every layer but the last
    assert [len(x) for _, x, _ in seen[:2]] == [sum(n) for _, _, n in seen[:2]]      # packed: no padding
    assert sum(seen[1][2]) < sum(seen[0][2])                                         # the second layer on fewer
    topk_attention.main([str(tmp_path / "topk"), "--data-dir", str(glue), "--batch-sizes", "8", "--repeats", "1",
                         "--out", str(tmp_path / "out.json")])
    r = json.loads((tmp_path / "out.json").read_text())["results"]["8"]
    assert r["calls"] == len(seen) and min(r["layers_by_hand_seconds"], r["layers_fused_seconds"], r["infer_seconds"]) > 0
    with pytest.raises(SystemExit, match="is not a top-k model"):
        topk_attention.main([str(tiny), "--data-dir", str(glue), "--out", str(tmp_path / "no.json")])


@pytest.mark.parametrize("same_model", [True, False])
def test_a_run_timed_by_bench_py_as_the_same_model_takes_that_timing_and_says_so(tmp_path, same_model):
    """BENCHED: t20-seed42's model is the default command's, which bench.py timed with the one timing function;
    its timing is taken only while the two runs' dev predictions and tokens kept per layer are the same."""
    labels = np.random.default_rng(1).integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    results = make_runs(tmp_path, labels)
    run = json.loads((results / "recipe" / "t20-seed42.json").read_text())
    run["flops"]["kept_fraction"] = kept = [1.0, 0.5, 0.25]
    (results / "recipe" / "t20-seed42.json").write_text(json.dumps(run))
    twin = {"predictions": run["predictions"] if same_model else [1 - p for p in run["predictions"]],
            "flops": {"kept_fraction": kept}}
    (results / "default_command_1thread.json").write_text(json.dumps(twin))
    machine = {"date": "2026-12-02T15:16:13+00:00", "cpu": "AMD EPYC", "threads": 2, "torch": "2.13.0+cpu",
               "loadavg_before": [0.5, 0, 0]}
    bench = {"command": "python bench.py --checkpoint out/sst2", "machine": machine,
             "results": [{"path": "infer", "batch_size": 32, "kept_fraction": kept, "flops_speedup": 1.7476}],
             "measured": [{"batch_size": 1, "measured_speedup": 0.948}, {"batch_size": 32, "measured_speedup": 1.522}]}
    (results / "bench_cpu_checkpoint.json").write_text(json.dumps(bench))
    out, text = run_alternatives(tmp_path, results, glue)
    line = next(l for l in text.splitlines() if l.startswith("| Transkimmer | 2x |"))
    if same_model:
        assert out["rows"]["t20"]["measured_speedup"] == {"1": [0.948, None, None], "32": [1.522, None, None]}
        assert "0.95x / 1.52x (1.75x)†" in line and "Timed by `python bench.py --checkpoint out/sst2` on 2026-12-02" in text
    else:
        assert "not timed" in line and "†" not in text
