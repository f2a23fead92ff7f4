"""results/glue.py: its bootstrap is compare.py's for accuracy and brackets the metric's difference otherwise, a
--keep-layers model's speedup is counted over the whole checkpoint, with and without padding, and the goals judge
differences on paired seeds (the drop) and paired intervals (above the 3 layers); the summary table's rows, and the
README's GLUE rows are glue.md's as they are."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "results"))
import compare  # noqa: E402
import glue  # noqa: E402


def test_the_accuracy_bootstrap_is_compares_and_other_metrics_are_recomputed_on_each_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    a = [np.where(rng.random(300) < 0.8, labels, 1 - labels) for _ in range(2)]
    b = [np.where(rng.random(300) < 0.7, labels, 1 - labels) for _ in range(2)]
    assert glue.metric_bootstrap("accuracy", a, b, labels, 500) == compare.paired_bootstrap(
        [x == labels for x in a], [x == labels for x in b], 500)
    diff, low, high = glue.metric_bootstrap("matthews", a, b, labels, 500)
    import data
    by_hand = np.mean([data.matthews_corrcoef(x, labels) - data.matthews_corrcoef(y, labels) for x, y in zip(a, b)])
    assert diff == pytest.approx(100 * by_hand) and low < diff < high
    assert glue.metric_bootstrap("pearson", a, a, labels, 200) == (0.0, 0.0, 0.0)


def test_a_keep_layers_models_speedup_is_over_the_whole_checkpoint():
    head = 10.0
    flops = {"head": head, "none": {"dense": 3 * 100 + head, "skim": 3 * 100 + head},
             "sequence": {"dense": 3 * 300 + head, "skim": 3 * 100 + head}}
    m = {"flops": flops, "args": {"keep_layers": [0, 1, 2], "checkpoint_layers": 6}}
    assert glue.over_checkpoint(m, "none") == pytest.approx((6 * 100 + head) / (3 * 100 + head))
    assert glue.over_checkpoint(m, "sequence") == pytest.approx((6 * 300 + head) / (3 * 100 + head))
    m["args"] = {"keep_layers": None, "checkpoint_layers": None}
    assert glue.over_checkpoint(m, "sequence") == pytest.approx((3 * 300 + head) / (3 * 100 + head))


def test_one_seed_shows_no_spread_and_leaves_the_spread_goal_unjudged():
    one, two = glue.spread([80.0]), glue.spread([80.0, 82.0])
    assert one == (80.0, None) and two == (81.0, pytest.approx(2 ** 0.5))
    assert glue.fmt(one, unit="x") == "80.00x" and "±" in glue.fmt(two)
    assert glue.fmt(one) == "80.00" and glue.fmt(None) == "—"
    row = lambda score, speedup: {"accuracy": score, "speedup": (speedup, None)}  # noqa: E731
    s = {"dense": row(one, 1.0), "recipe2": row((79.0, None), 2.0), "layers3": row((78.0, None), 2.0)}
    g = glue.goals("rte", s, {})
    assert g["at 2x: within dense's seed-to-seed spread"] is None
    s["dense"] = row(two, 1.0)  # 81 - 1.41 = 79.59 > 79: missed, not unjudged
    assert glue.goals("rte", s, {})["at 2x: within dense's seed-to-seed spread"] is False


def test_above_the_3_layers_is_judged_by_the_paired_interval_not_by_the_means():
    s = {"recipe2": {"accuracy": (79.0, None), "speedup": (2.0, None)}, "layers3": {"accuracy": (78.0, None)}}
    goal = "at 2x: above the 3-layer model"
    def verdict(low, high):
        return glue.goals("rte", s, {"recipe2 vs layers3": {"diff": 1.0, "low": low, "high": high}})[goal]
    assert verdict(+0.2, +1.8) is True
    assert verdict(-0.5, +2.5) == "level" and "MISSED" in glue.VERDICT["level"]  # a mean 1 point above, not told apart
    assert verdict(-3.0, -0.1) is False
    assert goal not in glue.goals("rte", s, {})  # no seed of the two rows pairs (another machine): not judged


def test_the_drop_is_paired_over_the_seeds_both_rows_have():
    """Dense has seeds 42 and 43, the recipe at the paper's speedup only 42: its drop is seed 42's, everywhere it is
    shown (the goal, the table, the average), not dense's mean less the recipe's."""
    labels = np.array([0, 1] * 50)
    right, wrong_10 = labels.copy(), labels.copy()
    wrong_10[:10] = 1 - wrong_10[:10]
    run = lambda seed, preds: {"seed": seed, "preds": preds, "machine": "Intel Xeon",  # noqa: E731
                               "metrics": {"accuracy": 100 * float((preds == labels).mean())}}
    dense = [run(42, right), run(43, wrong_10)]  # 100 and 90: mean 95
    paper = [run(42, wrong_10)]                  # 90: 10 below its own seed's dense, 5 below dense's mean
    pairs = {"recipepaper vs dense": glue.compare_rows("rte", paper, dense, labels)}
    assert pairs["recipepaper vs dense"]["seeds"] == [42]
    assert glue.drop(pairs, "recipepaper") == pytest.approx(10.0)
    s = {"dense": {"accuracy": (95.0, 7.07)},
         "recipepaper": {"accuracy": (90.0, None), "speedup": (3.0, None)}}
    assert "at the paper's speedup: drop +10.00 <= the paper's -3.20" in glue.goals("rte", s, pairs)
    results = {"rte": {"summary": s, "pairs": pairs}}
    assert glue.average_drops(results, ["rte"]).startswith("our average drop at the paper's speedups +10.00 points")


def test_the_average_drop_is_over_the_tasks_named_ours_beside_the_papers():
    def res(dense, ours, speedup):
        return {"summary": {"dense": {"accuracy": (dense, None)},
                            "recipepaper": {"accuracy": (ours, None), "speedup": (speedup, None)}},
                "pairs": {"recipepaper vs dense": {"diff": ours - dense}}}
    results = {"rte": res(70.0, 66.0, 3.0), "wnli": res(40.0, 56.0, 6.0)}
    text = glue.average_drops(results, ["rte"])
    paper = glue.PAPER["rte"]
    assert text.startswith("our average drop at the paper's speedups +4.00 points at 3.00x")
    assert f"{paper[0] - paper[1]:+.2f} at {paper[2]:.2f}x" in text
    assert "-6.00 points at 4.50x" in glue.average_drops(results, ["rte", "wnli"])  # (4 - 16) / 2, (3 + 6) / 2


def test_seeds_pair_only_on_one_machine_and_the_seeds_column_names_each_machine():
    record = lambda *machines: {"stages": [{"machines": list(machines)}, {}], "args": {"device": "cpu"}}  # noqa: E731
    intel = "Intel(R) Xeon(R) Processor, 1 threads, torch 2.13.0+cpu"
    assert glue.machine_of(record(intel)) == "Intel Xeon"
    assert glue.machine_of(record(intel, "AMD EPYC, 1 threads, torch 2.13.0+cpu")) == "AMD EPYC + Intel Xeon"
    assert glue.machine_of({"stages": [{"machines": None}], "args": {"device": "cuda"}}) == "cuda"
    labels = np.array([0, 1] * 20)
    run = lambda seed, machine: {"seed": seed, "preds": labels, "machine": machine,  # noqa: E731
                                 "metrics": {"accuracy": 100.0}}
    a = [run(42, "Intel Xeon"), run(43, "Intel Xeon"), run(44, "AMD EPYC")]
    b = [run(42, "Intel Xeon"), run(43, "AMD EPYC"), run(44, "AMD EPYC")]
    assert glue.compare_rows("rte", a, b, labels)["seeds"] == [42, 44]
    assert glue.compare_rows("rte", a[1:2], b[1:2], labels) is None
    assert glue.seeds_where(a) == "42, 43 (Intel Xeon); 44 (AMD EPYC)"


def test_a_recipe_run_is_paired_with_its_own_dense_stage_other_rows_with_the_dense_row():
    labels = np.array([0, 1] * 20)
    wrong = labels.copy()
    wrong[:4] = 1 - wrong[:4]  # 10 points below
    run = lambda seed, machine, preds: {"seed": seed, "preds": preds, "machine": machine,  # noqa: E731
                                        "metrics": {"accuracy": 100 * float((preds == labels).mean())}}
    rows = {"dense": [run(43, "Intel Xeon", labels)], "layers3": [run(43, "AMD EPYC", wrong)],
            "recipepaper": [run(43, "AMD EPYC", wrong)]}
    own = {"recipepaper": [run(43, "AMD EPYC", labels)]}  # the tpaper run's own dense stage, trained on the AMD
    pairs = glue.pair_rows("rte", rows, own, labels)
    assert pairs["recipepaper vs dense"]["seeds"] == [43] and glue.drop(pairs, "recipepaper") == pytest.approx(10.0)
    assert "layers3 vs dense" not in pairs  # the dense row's seed 43 trained on another machine
    assert "recipepaper vs dense" not in glue.pair_rows("rte", rows, {"recipepaper": []}, labels)
    assert glue.same_dense(rows["dense"], own["recipepaper"]) == (0, 0)
    assert glue.same_dense(own["recipepaper"], [run(43, "AMD EPYC", labels)]) == (1, 1)
    assert glue.same_dense(own["recipepaper"], [run(43, "AMD EPYC", wrong)]) == (0, 1)


def test_a_summary_line_names_its_seeds_bolds_what_is_told_apart_and_pairs_the_drop():
    assert glue.seed_text([44, 42, 43, 46]) == "42-44, 46" and glue.seed_text([42]) == "42"
    row = lambda seeds, score, speedup=2.0: {"seeds": seeds, "pearson": score, "speedup": (speedup, None)}  # noqa: E731
    s = {"dense": row([42, 43], (84.0, 0.1)), "recipe2": row([42, 43], (74.0, 1.0)),
         "layers3": row([42, 43, 44], (58.0, 5.0)), "recipepaper": row([42], (64.0, None), 3.9)}
    pairs = {"recipe2 vs layers3": {"diff": 16.0, "low": 13.0, "high": 19.0},
             "recipepaper vs dense": {"seeds": [42], "diff": -20.0}}
    line = glue.summary_line("stsb", {"summary": s, "pairs": pairs})
    assert line.startswith("| STS-B (Pearson) | 42-43 | 84.00 ± 0.10 | 74.00 ± 1.00 | 58.00 ± 5.00 (seeds 42-44) |")
    assert "| **+16.00 [+13.00, +19.00]** |" in line
    assert line.endswith("| +20.00 at 3.90x, seed 42 (+1.2 at 3.45x) |")
    pairs["recipe2 vs layers3"]["low"] = -1.0  # level: not bold
    assert "| +16.00 [-1.00, +19.00] |" in glue.summary_line("stsb", {"summary": s, "pairs": pairs})
    del s["recipepaper"], pairs["recipepaper vs dense"]
    assert glue.summary_line("stsb", {"summary": s, "pairs": pairs}).endswith("| — (+1.2 at 3.45x) |")


def test_the_readmes_glue_table_is_rows_of_glue_md_as_they_are():
    """The README shows some of glue.md's summary rows; a regenerated glue.md and a README not updated differ here."""
    import data
    names = tuple(f"| {data.get_task(t).dir_name} (" for t in glue.TASKS)
    readme = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(names)]
    made = (ROOT / "results" / "glue.md").read_text().splitlines()
    assert readme and glue.SUMMARY_HEAD in (ROOT / "README.md").read_text().splitlines()
    assert [line for line in readme if line not in made] == []


def test_the_targets_line_measures_the_calibration_sample_train_py_draws_and_dev(tmp_path):
    """input_tokens: the mean tokens of the inputs recipe.calibration_sample picks (all of a small pair task's
    training set; the held-out slice where a run held one out) and of dev, truncated at the run's length; the
    Targets line sets them beside the speedups on the calibration inputs and on dev, and is absent without a target."""
    import data
    from checkpoint import load_tokenizer
    train = [("A man plays.", "A man is playing.", "4.0"), ("Dogs run.", "A dog runs fast.", "3.5"),
             ("It rains.", "The weather is wet.", "2.0")]
    dev = [("A long sentence about the markets falling today.", "Stocks dropped sharply on Monday morning.", "3.0"),
           ("The cat sat on the mat by the door.", "A cat is sitting on a mat near the door.", "4.5")]
    root = tmp_path
    (root / "STS-B").mkdir()
    for split, rows in (("train", train), ("dev", dev)):
        (root / "STS-B" / f"{split}.tsv").write_text("sentence1\tsentence2\tscore\n"
                                                     + "".join("\t".join(r) + "\n" for r in rows))
    tok = load_tokenizer(None)
    n = lambda a, b: len(tok.encode(a, b).ids)  # noqa: E731
    args = {"max_seq_length": 64, "batch_size": 32}
    got = glue.input_tokens("stsb", root, args)
    assert got["examples"] == 3
    assert got["calibration"] == pytest.approx(np.mean([n(a, b) for a, b, _ in train]))
    assert got["dev"] == pytest.approx(np.mean([n(a, b) for a, b, _ in dev])) and got["dev"] > got["calibration"]
    assert glue.input_tokens("stsb", root, args | {"max_seq_length": 8})["dev"] == 8
    _, held = data.split_holdout(data.read_split(data.get_task("stsb"), "train", root), 1)
    one = glue.input_tokens("stsb", root, args | {"holdout": 1})
    assert one["examples"] == 1 and one["calibration"] == n(held[0].text_a, held[0].text_b)

    inputs = {"calibration": 27.8, "dev": 31.3, "examples": 512}
    s = {"recipe2": {"calibrated": (2.0, 0.0), "speedup": (2.05, 0.05)},
         "recipepaper": {"calibrated": (3.45, None), "speedup": (3.81, None)}, "layers3": {"calibrated": None}}
    text = glue.calibration_text(s, inputs)
    assert "512 training inputs of 27.8 tokens on average" in text and "dev's inputs average 31.3 (+12.6%)" in text
    assert text.endswith("at 2x 2.00 ± 0.00x, 2.05 ± 0.05x; at the paper's speedup 3.45x, 3.81x.")
    assert glue.calibration_text({"layers3": {"calibrated": None}}, inputs) is None


def test_speedup_by_length_measures_a_holdout_run_on_the_inputs_it_calibrated_on(tiny, tmp_path):
    """A --target-speedup run with --holdout calibrates its threshold on its held-out slice
    (recipe.calibration_sample); results/speedup_by_length.py measures the saved model on those same inputs (as
    many, as long), so its speedup there is the one the run recorded, and its length groups cover dev once."""
    import data
    import speedup_by_length
    import train
    from checkpoint import load_tokenizer
    from conftest import write_sst2
    rng = np.random.default_rng(0)
    words = "good bad fine awful great dull film plot actors story boring moving funny tedious".split()
    rows = [(" ".join(rng.choice(words, size=rng.integers(3, 15))) + f" {i}", i % 2) for i in range(40)]
    root = write_sst2(tmp_path / "glue", rows)
    write_sst2(root, rows[:12], name="dev.tsv")
    out = tmp_path / "run"
    m = train.main([str(a) for a in ("--task", "sst2", "--model", tiny, "--data-dir", root, "--stages", "skim:1",
                                     "--target-speedup", 1.2, "--holdout", 8, "--batch-size", 8,
                                     "--timing-repeats", 0, "--output-dir", out)])
    got = speedup_by_length.by_length(out, root, 3)
    _, held = data.training_rows(data.read_split(data.get_task("sst2"), "train", root), 8)
    tok = load_tokenizer(None)
    assert got["calibration_inputs"] == 8
    assert got["calibration_tokens"] == pytest.approx(np.mean([len(tok.encode(e.text_a).ids) for e in held]))
    assert got["calibration"] == pytest.approx(m["stages"][-1]["calibrated_speedup"])
    assert [g["inputs"] for g in got["groups"]] == [4, 4, 4]
    assert got["groups"][0]["tokens"] <= got["groups"][1]["tokens"] <= got["groups"][2]["tokens"]
