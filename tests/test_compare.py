"""results/compare.py: the paired tests are the textbook ones (scipy as the reference), the seeds' rows are
summarised from each run's own predictions against the dev labels, and every goal is checked, met or missed."""

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
import compare  # noqa: E402  (results/ is a folder of scripts, not a package)

SEEDS = (42, 43, 44)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcnemar_is_the_exact_binomial_test_on_the_sentences_the_two_disagree_on(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(300) < 0.85, rng.random(300) < 0.8
    only_a, only_b, p = compare.mcnemar(a, b)
    assert (only_a, only_b) == ((a & ~b).sum(), (~a & b).sum())
    assert p == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9)


def test_the_paired_bootstrap_gives_the_mean_difference_over_seeds_and_an_interval_around_it():
    rng = np.random.default_rng(0)
    b = rng.random((3, 500)) < 0.8
    assert compare.paired_bootstrap(b, b) == (0.0, 0.0, 0.0)          # the same answers: no difference at all
    a = b.copy()
    a[0, np.flatnonzero(~b[0])[:15]] = True                          # seed 0 gets 15 more sentences right
    diff, low, high = compare.paired_bootstrap(a, b)
    assert diff == pytest.approx(100 * 15 / 500 / 3)
    assert 0 < low < diff < high
    # paired: a second model that differs from b on the same 15 sentences only, but is right on other
    # ones too, gives a wider interval than the tightly paired one
    c = a.copy()
    flip = rng.choice(500, 60, replace=False)
    c[1, flip] = ~c[1, flip]
    _, low_c, high_c = compare.paired_bootstrap(c, b)
    assert high_c - low_c > high - low


def write_dev(root, labels):
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"sentence {i}\t{y}\n" for i, y in enumerate(labels)))
    return root


def fake_recipe_run(runs, name, predictions, speedup, dense_predictions=None, over_checkpoint=None,
                    skim_predictions=None, device=None, args=None):
    """The fields of a train.py metrics.json that compare.py reads."""
    m = {"predictions": list(map(int, predictions)), "flops": {"none": {"speedup": speedup}}, "stages": []}
    if device or args:
        m["args"] = {"device": device or "cpu", **(args or {})}
    if dense_predictions is not None:
        m["stages"] = [{"stage": "dense", "dev": {"predictions": list(map(int, dense_predictions)), "flops_speedup": 1.0}},
                       {"stage": "skim", "dev": {"predictions": [], "flops_speedup": 2.3}}]
    if skim_predictions is not None:
        m["stages"][1]["dev_at_target"] = {"predictions": list(map(int, skim_predictions)), "flops_speedup": 2.01}
    if over_checkpoint:
        m["flops_speedup_over_checkpoint"] = over_checkpoint
    (runs / f"{name}.json").write_text(json.dumps(m))


def wrong_on(labels, k, rng):
    """The labels with k of them, chosen at random, wrong."""
    p = labels.copy()
    idx = rng.choice(len(p), k, replace=False)
    p[idx] = 1 - p[idx]
    return p


def test_the_report_summarises_each_row_over_its_seeds_and_checks_every_goal(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    glue = write_dev(tmp_path / "glue", labels)
    runs = tmp_path / "recipe"
    runs.mkdir()
    wrong = {"dense": [20, 22, 24], "recipe": [22, 26, 24], "layers3": [30, 28, 35], "skimstage": [23, 25, 27]}
    for i, seed in enumerate(SEEDS):
        fake_recipe_run(runs, f"t20-seed{seed}", wrong_on(labels, wrong["recipe"][i], rng), 2.0 + 0.02 * i,
                        dense_predictions=wrong_on(labels, wrong["dense"][i], rng),
                        skim_predictions=wrong_on(labels, wrong["skimstage"][i], rng))
        fake_recipe_run(runs, f"layers3-seed{seed}", wrong_on(labels, wrong["layers3"][i], rng), 1.0, over_checkpoint=2.0)
    fake_recipe_run(runs, "t30-seed42", wrong_on(labels, 40, rng), 2.8)               # 7% short of its target
    fake_recipe_run(runs, "layers2-seed42", wrong_on(labels, 50, rng), 1.0, over_checkpoint=3.0)
    compare.main(["--runs", str(runs), "--data-dir", str(glue), "--out", str(tmp_path / "out")])
    out = json.loads((tmp_path / "out.json").read_text())
    text = (tmp_path / "out.md").read_text()
    for key, k in wrong.items():
        accs = [100 * (1 - w / 200) for w in k]
        assert out["rows"][key]["accuracy"] == pytest.approx(accs)
        assert f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" in text
    assert out["rows"]["layers3"]["flops_speedup"] == [2.0, 2.0, 2.0]
    assert out["rows"]["skimstage"]["flops_speedup"] == [2.01] * 3 and out["rows"]["skimstage"]["measured_speedup"] == [None] * 3
    assert "target-speedup 1.5 | not run yet" in text and "recipe15" not in out["rows"]
    assert out["goals"] == {"recipe: dev speedup within 3% of 2.0": True,            # 2.00, 2.02, 2.04
                            "recipe30: dev speedup within 3% of 3.0": False,
                            "recipe: mean accuracy within 0.5 points of dense": False,  # 12% wrong against 11%
                            "recipe: mean accuracy above the 3-layer model's": True}
    assert "recipe vs dense" in text and "recipe vs layers3" in text and "recipe vs skimstage" in text
    assert out["rows"]["layers2"]["flops_speedup"] == [3.0] and "| recipe30 vs layers2 | +5.00, " in text
    assert "recipe15 vs layers4" not in text                                         # neither was run
    # t30-seed42 meets seed 42's dense stage alone: 40 wrong against 20 of 200 (dense, seed 42)
    line = next(l for l in text.splitlines() if l.startswith("| recipe30 vs dense |"))
    assert line.startswith("| recipe30 vs dense | -10.00, ") and ";" not in line      # one seed, not three
    lines = compare.curves(compare.load_rows(runs, labels))                          # the picture's points
    assert [x for x, *_ in lines["dense, 6 layers, then the first 4, 3 and 2 layers"]] == [1.0, 2.0, 3.0]
    assert [x for x, *_ in lines["the recipe, at targets 1.5, 2 and 3"]] == pytest.approx([2.02, 2.8])
    assert lines["the recipe, at targets 1.5, 2 and 3"][0][3] == out["rows"]["recipe"]["accuracy"]
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


def test_a_row_holds_every_seed_of_its_runs_and_says_where_each_was_trained(tmp_path):
    labels = np.array([0, 1] * 10)
    glue = write_dev(tmp_path / "glue", labels)
    runs = tmp_path / "recipe"
    runs.mkdir()
    for seed, device in [(50, "cuda"), (42, None), (9, "cpu")]:
        fake_recipe_run(runs, f"layers3-seed{seed}", labels, 1.0, over_checkpoint=2.0, device=device)
    fake_recipe_run(runs, "layers2-seed42", labels, 1.0, over_checkpoint=3.0)
    rows = compare.load_rows(runs, labels)
    assert rows["layers3"]["names"] == ["layers3-seed9", "layers3-seed42", "layers3-seed50"]   # by seed, not by name
    assert rows["layers3"]["devices"] == ["cpu", "cpu", "cuda"]                                 # no device: an older run, cpu
    compare.main(["--runs", str(runs), "--data-dir", str(glue), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out.md").read_text()
    assert "| 9, 42, 50 (2 cpu, 1 cuda) | 100.00 ± 0.00 |" in text
    assert "| 42 (1 cpu) | 100.00 (one seed) |" in text                                         # no spread to show


def test_seeds_reports_a_subset_of_the_seeds_and_writes_nothing(tmp_path, capsys):
    labels = np.array([0, 1] * 10)
    glue = write_dev(tmp_path / "glue", labels)
    runs = tmp_path / "recipe"
    runs.mkdir()
    for seed, wrong in [(42, 0), (43, 2), (45, 4)]:
        fake_recipe_run(runs, f"layers3-seed{seed}", wrong_on(labels, wrong, np.random.default_rng(seed)), 1.0,
                        over_checkpoint=2.0)
    compare.main(["--runs", str(runs), "--data-dir", str(glue), "--out", str(tmp_path / "out"), "--seeds", "42", "43"])
    assert "| 42, 43 (2 cpu) | 95.00 ± 7.07 |" in capsys.readouterr().out      # 100 and 90; not seed 45's 80
    assert not list(tmp_path.glob("out*"))


def test_runs_whose_skim_stage_was_not_scored_at_the_target_leave_that_row_out(tmp_path):
    labels = np.array([0, 1] * 10)
    glue = write_dev(tmp_path / "glue", labels)
    runs = tmp_path / "recipe"
    runs.mkdir()
    for seed in SEEDS:
        fake_recipe_run(runs, f"t20-seed{seed}", labels, 2.0, dense_predictions=labels,
                        skim_predictions=labels if seed != 44 else None)
    rows = compare.load_rows(runs, labels)
    assert {"recipe", "dense"} <= set(rows) and "skimstage" not in rows


def test_predictions_for_another_dev_set_are_an_error(tmp_path):
    glue = write_dev(tmp_path / "glue", [0, 1, 1])
    runs = tmp_path / "recipe"
    runs.mkdir()
    for seed in SEEDS:
        fake_recipe_run(runs, f"t20-seed{seed}", [0, 1], 2.0, dense_predictions=[0, 1])
    with pytest.raises(SystemExit, match="2 predictions, but the dev set has 3"):
        compare.main(["--runs", str(runs), "--data-dir", str(glue), "--out", str(tmp_path / "out")])


def test_pair_prints_the_paired_comparison_of_two_runs(tmp_path, capsys):
    labels = np.array([0, 1] * 50)
    glue = write_dev(tmp_path / "glue", labels)
    a, b = labels.copy(), labels.copy()
    a[:6] = 1 - a[:6]                                            # A wrong on 6 sentences, B on 2 others
    b[10:12] = 1 - b[10:12]
    for name, preds in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"predictions": preds.tolist()}))
    compare.main(["--data-dir", str(glue), "--pair", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    p = stats.binomtest(2, 8, 0.5).pvalue
    assert "94.00 vs" in out and "98.00: only A right on 2, only B on 6" in out and f"p = {p:.2f}" in out
    assert "A - B = -4.00 points" in out


def test_time_models_times_each_saved_model_against_the_recipes_own_dense_model(tiny, tmp_path, monkeypatch):
    """--time: every saved model of the rows is timed on its packed path beside the 6-layer dense model (the
    recipe run's encoder and classifier, every token kept), and measured = dense seconds / its seconds."""
    import torch

    import model
    import skim
    import flops

    glue = write_dev(tmp_path / "glue", [0, 1] * 6)
    runs = tmp_path / "runs"
    recipe = skim.Transkimmer.from_pretrained(tiny, num_labels=2)
    for p in recipe.predictors:
        p.reset_parameters(mu0=-5.0, std=0.02)                         # skims nearly every token
    recipe.save_pretrained(runs / "sst2-recipe-t20-seed42", recipe.bert.tokenizer)
    small = model.keep_layers(model.BertForSequenceClassification.from_pretrained(tiny, num_labels=2), [0])
    small.save_pretrained(runs / "sst2-recipe-layers3-seed42", small.tokenizer)

    calls, real_pass = [], flops.interleaved_pass

    def spy(passes, device="cpu"):  # the real timing, with each model's output kept to check what was timed
        batch = next(iter(passes.values()))[1][0]
        calls.append({"batch": batch, **{name: run(batches[0]) for name, (run, batches) in passes.items()}})
        seconds = real_pass(passes, device)
        calls[-1]["seconds"] = seconds
        return seconds
    monkeypatch.setattr(flops, "interleaved_pass", spy)
    rows = {"recipe": {"names": ["t20-seed42", "t20-seed45"]}, "layers3": {"names": ["layers3-seed42"]}}
    measured = compare.time_models(rows, runs, glue, batch_size=4, repeats=3)

    assert set(measured) == {"t20-seed42", "layers3-seed42"}           # t20-seed45 has no saved model here
    assert len(calls) == 2 * (1 + 3)                                   # per model: a warm-up pass, then the repeats
    for i, speedup in enumerate(measured.values()):                    # measured = dense seconds / its seconds
        timed = [c["seconds"] for c in calls[4 * i + 1: 4 * i + 4]]
        assert speedup == round(statistics.median(s["dense"] for s in timed)
                                / statistics.median(s["pruned"] for s in timed), 3)
    saved = skim.Transkimmer.from_pretrained(runs / "sst2-recipe-t20-seed42")   # the reference: the recipe's own
    for first in calls[0], calls[4]:                                            # encoder, every token kept, for both
        b = first["batch"]
        with torch.inference_mode():
            assert torch.allclose(first["dense"], saved.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                  atol=1e-5)
    assert any(c["pruned"].masks[-1].sum() < c["batch"]["attention_mask"].sum() for c in calls)  # the recipe skims


def test_a_rerun_keeps_every_timing_and_times_only_the_runs_not_timed_yet(tmp_path, monkeypatch):
    """Redrawing the table without --time used to erase the measured column; --time timed everything again."""
    labels = np.array([0, 1] * 10)
    glue = write_dev(tmp_path / "glue", labels)
    runs = tmp_path / "recipe"
    runs.mkdir()
    fake_recipe_run(runs, "t20-seed42", labels, 2.0, dense_predictions=labels)
    fake_recipe_run(runs, "layers3-seed42", labels, 1.0, over_checkpoint=2.0)
    skipped = []

    def timed(rows, folders, data_dir, batch_size, repeats, skip=()):  # what time_models would measure
        skipped.append(set(skip))
        return {n: s for n, s in {"t20-seed42": 1.5, "layers3-seed42": 2.25}.items() if n not in skip}
    monkeypatch.setattr(compare, "time_models", timed)
    out = ["--runs", str(runs), "--data-dir", str(glue), "--out", str(tmp_path / "out")]
    written = lambda: json.loads((tmp_path / "out.json").read_text())
    compare.main(out + ["--time", "saved"])
    assert written()["timings"] == {"t20-seed42": 1.5, "layers3-seed42": 2.25}
    compare.main(out)                                                        # no --time: the timings stay
    assert written()["rows"]["recipe"]["measured_speedup"] == [1.5]
    text = (tmp_path / "out.md").read_text()
    assert "| 2.00x | 1.50x |" in text and "the measured speedups by `python results/compare.py --time saved" in text
    fake_recipe_run(runs, "t20-seed43", labels, 2.0, dense_predictions=labels)
    compare.main(out + ["--time", "saved"])                                  # only what has no timing yet
    assert skipped[-1] == {"t20-seed42", "layers3-seed42"}
    compare.main(out + ["--time", "saved", "--retime"])                      # all of them again
    assert skipped[-1] == set()
    with pytest.raises(SystemExit):                                          # it would only erase them
        compare.main(out + ["--retime"])
    assert written()["timings"] == {"t20-seed42": 1.5, "layers3-seed42": 2.25}


def test_paired_meets_two_models_on_the_seeds_both_have(tmp_path, capsys):
    labels = np.array([0, 1] * 50)
    glue = write_dev(tmp_path / "glue", labels)
    ref = tmp_path / "reference"
    ref.mkdir()
    rng = np.random.default_rng(1)
    for seed, wrong in [(42, 5), (43, 10)]:
        fake_recipe_run(ref, f"hf-seed{seed}", wrong_on(labels, wrong, rng), 1.0)
    for seed, wrong in [(43, 20), (44, 0)]:
        fake_recipe_run(ref, f"ours-seed{seed}", wrong_on(labels, wrong, rng), 1.0)
    compare.main(["--data-dir", str(glue), "--paired", str(ref / "hf"), str(ref / "ours")])
    out = capsys.readouterr().out
    assert "seeds 43;" in out and "seed 43: A 90.00, B 80.00, A - B +10.00" in out and "seed 42" not in out
    fake_recipe_run(ref, "other-seed7", labels, 1.0)
    with pytest.raises(SystemExit, match="no seed has both"):
        compare.main(["--data-dir", str(glue), "--paired", str(ref / "hf"), str(ref / "other")])


def test_paired_runs_for_another_dev_set_are_one_clear_error(tmp_path):
    glue = write_dev(tmp_path / "glue", [0, 1, 1])
    ref = tmp_path / "reference"
    ref.mkdir()
    fake_recipe_run(ref, "hf-seed42", [0, 1, 1], 1.0)
    fake_recipe_run(ref, "ours-seed42", [0, 1], 1.0)
    with pytest.raises(SystemExit, match="ours-seed42.json: 2 predictions, but the dev set has 3"):
        compare.main(["--data-dir", str(glue), "--paired", str(ref / "hf"), str(ref / "ours")])


def test_a_stand_in_is_made_for_dense_runs_alone_and_once_per_checkpoint_and_layers(tiny):
    """compare.stand_in, which times a fewer-layers run whose model is gone: only a run trained densely throughout
    gets one (a skimming run's time depends on its weights), cut to its layers, and runs alike share one."""
    import methods

    cache = {}
    three = compare.stand_in({"model": str(tiny), "stages": [["dense", 2.0]], "keep_layers": [0, 1]}, cache)
    assert isinstance(three, methods.Dense) and len(three.bert.layers) == 2
    assert compare.stand_in({"model": str(tiny), "stages": [["dense", 2.0, 5e-5]], "keep_layers": [0, 1]}, cache) is three
    whole = compare.stand_in({"model": str(tiny), "stages": [["dense", 1.0]]}, cache)
    assert len(whole.bert.layers) == 3 and whole is not three
    for skims in ({"model": str(tiny), "stages": [["dense", 1.0], ["skim", 0.5], ["frozen", 0.5]]},
                  {"model": str(tiny), "stages": [["dense", 1.0], ["frozen", 1.0]], "method": "topk"}, {}):
        assert compare.stand_in(skims, cache) is None
