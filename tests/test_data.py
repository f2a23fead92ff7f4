"""Tests for data.py: GLUE reading, downloading, encoding, batching and metrics."""

import os
import pathlib
import sys
import zipfile

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import data  # noqa: E402
from data import DataError, Example  # noqa: E402

REAL_GLUE_DIR = os.environ.get("GLUE_DIR")  # read now: the fixture below hides it from tests


def write_tsv(root, dir_name, split, lines, prefix=""):
    """Write lines (lists of fields) as <root>/<dir_name>/<split>.tsv; return the path."""
    path = pathlib.Path(root) / dir_name / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + "".join("\t".join(fields) + "\n" for fields in lines), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_user_environment(monkeypatch):
    """Tests must not depend on the GLUE_DIR / TRANSKIMMER_CACHE of whoever runs them."""
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv("TRANSKIMMER_CACHE", raising=False)


# -----------------------------------------------------------------------------
# one tiny file per task, in the real GLUE layout

MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                     "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                     "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score"]


def mnli_row(index, s1, s2, label, num_votes):
    return [str(index), "31193", "31193n", "government", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
            s1, s2] + [label] * num_votes + [label]


# task name, split, rows, expected (text_a, text_b, label)
FIXTURES = [
    ("cola", "train",
     [["gj04", "1", "", "Our friends won't buy this analysis."], ["gj04", "0", "*", "They drank the pub."]],
     [("Our friends won't buy this analysis.", None, 1), ("They drank the pub.", None, 0)]),
    ("sst2", "train",
     [["sentence", "label"], ["hide new secretions from the parental units ", "0"], ["the greatest musicians ", "1"]],
     [("hide new secretions from the parental units ", None, 0), ("the greatest musicians ", None, 1)]),
    ("mrpc", "dev",
     [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
      ["1", "702876", "702977", "Amrozi accused his brother .", 'Referring to him as " the witness " , Amrozi .'],
      ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's ."]],
     [("Amrozi accused his brother .", 'Referring to him as " the witness " , Amrozi .', 1),
      ("Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's .", 0)]),
    ("stsb", "train",
     [STSB_HEADER,
      ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
       "An air plane is taking off.", "5.000"],
      ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man plays a flute.",
       "A man plays a bamboo flute.", "3.800"]],
     [("A plane is taking off.", "An air plane is taking off.", 5.0),
      ("A man plays a flute.", "A man plays a bamboo flute.", 3.8)]),
    ("qqp", "train",
     [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
      ["133273", "213221", "213222", "How is life as a math student?", "Which level is enough?", "0"],
      ["402555", "536040", "536041", "How do I control my anger?", "How do I stop being angry?", "1"]],
     [("How is life as a math student?", "Which level is enough?", 0),
      ("How do I control my anger?", "How do I stop being angry?", 1)]),
    ("mnli", "train",
     [MNLI_TRAIN_HEADER, mnli_row(0, "Conceptually cream skimming.", "Product and geography.", "neutral", 1),
      mnli_row(1, "you know during the season", "You lose the things.", "entailment", 1),
      mnli_row(2, "One of our number.", "A member of my team.", "contradiction", 1)],
     [("Conceptually cream skimming.", "Product and geography.", 2),
      ("you know during the season", "You lose the things.", 1),
      ("One of our number.", "A member of my team.", 0)]),
    ("mnli", "dev_matched",
     [MNLI_DEV_HEADER, mnli_row(0, "The new rights are nice.", "Everyone likes them.", "neutral", 5)],
     [("The new rights are nice.", "Everyone likes them.", 2)]),
    ("mnli", "dev_mismatched",
     [MNLI_DEV_HEADER, mnli_row(0, "Your gift is appreciated.", "Hundreds of gifts.", "contradiction", 5)],
     [("Your gift is appreciated.", "Hundreds of gifts.", 0)]),
    ("qnli", "dev",
     [["index", "question", "sentence", "label"],
      ["0", "What came into force?", "The law came into force.", "entailment"],
      ["1", "What is the name?", "It rained.", "not_entailment"]],
     [("What came into force?", "The law came into force.", 0), ("What is the name?", "It rained.", 1)]),
    ("rte", "train",
     [["index", "sentence1", "sentence2", "label"],
      ["0", "No weapons were found.", "Weapons were found.", "not_entailment"],
      ["1", "A place of sorrow.", "Pope visits.", "entailment"]],
     [("No weapons were found.", "Weapons were found.", 1), ("A place of sorrow.", "Pope visits.", 0)]),
    ("wnli", "train",
     [["index", "sentence1", "sentence2", "label"],
      ["0", "I stuck a pin through a carrot.", "The carrot had a hole.", "1"],
      ["1", "John couldn't see the stage.", "John is tall.", "0"]],
     [("I stuck a pin through a carrot.", "The carrot had a hole.", 1),
      ("John couldn't see the stage.", "John is tall.", 0)]),
]


@pytest.mark.parametrize("name, split, rows, expected", FIXTURES,
                         ids=[f"{f[0]}-{f[1]}" for f in FIXTURES])
def test_read_split_returns_texts_and_label_indices_for_each_task(tmp_path, name, split, rows, expected):
    task = data.get_task(name)
    write_tsv(tmp_path, task.dir_name, split, rows)
    examples = data.read_split(task, split, tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == expected
    want_type = float if task.labels is None else int
    assert all(type(e.label) is want_type for e in examples)


def test_all_nine_tasks_are_covered_by_fixtures():
    assert {f[0] for f in FIXTURES} == set(data.TASKS) == {
        "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}


def test_read_split_strips_a_byte_order_mark_from_the_header(tmp_path):
    task = data.get_task("mrpc")  # the GLUE MRPC files start with a BOM
    rows = FIXTURES[2][2]
    write_tsv(tmp_path, "MRPC", "train", rows, prefix="\ufeff")
    assert len(data.read_split(task, "train", tmp_path)) == 2


def test_a_file_read_again_unchanged_is_parsed_once_and_a_changed_one_again(tmp_path, monkeypatch):
    """A run reads each data file once (flags.py counts the training rows, train.py trains on them): read again
    unchanged it is not parsed again; changed, it is, and the new rows are what comes back."""
    task = data.get_task("mrpc")
    rows = FIXTURES[2][2]
    write_tsv(tmp_path, "MRPC", "train", rows)
    parsed = []
    real = data._parse_row
    monkeypatch.setattr(data, "_parse_row", lambda *a: parsed.append(1) or real(*a))
    first, again = data.read_split(task, "train", tmp_path), data.read_split(task, "train", tmp_path)
    assert first == again and len(parsed) == len(first) == 2
    again.pop()                                                                     # a caller's list is its own
    assert len(data.read_split(task, "train", tmp_path)) == 2
    write_tsv(tmp_path, "MRPC", "train", rows[:2])                                  # the header and one row
    assert len(data.read_split(task, "train", tmp_path)) == 1 and len(parsed) == 3

def test_task_table_matches_paper_table_2():
    got = {n: (t.max_seq_length, t.skim_coef) for n, t in data.TASKS.items()}
    assert got == {"cola": (64, .3), "rte": (256, .8), "qqp": (128, .2), "mrpc": (128, .5),
                   "sst2": (64, .3), "mnli": (128, .2), "wnli": (128, .5), "qnli": (128, .1),
                   "stsb": (64, .3)}
    assert data.TASKS["stsb"].num_labels == 1 and data.TASKS["mnli"].num_labels == 3
    assert data.TASKS["mnli"].dev_splits == ("dev_matched", "dev_mismatched")


# -----------------------------------------------------------------------------
# user errors: one clear line

def test_row_with_wrong_number_of_fields_names_file_and_line(tmp_path):
    path = write_tsv(tmp_path, "SST-2", "train", [["sentence", "label"], ["good", "1"], ["bad", "0", "extra"]])
    with pytest.raises(DataError, match="line 3") as err:
        data.read_split(data.get_task("sst2"), "train", tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_row_with_empty_text_names_file_and_line(tmp_path):
    path = write_tsv(tmp_path, "RTE", "dev", [["index", "sentence1", "sentence2", "label"],
                                              ["0", "A.", " ", "entailment"]])
    with pytest.raises(DataError, match="line 2.*empty text") as err:
        data.read_split(data.get_task("rte"), "dev", tmp_path)
    assert str(path) in str(err.value)


def test_unparsable_score_names_file_and_line(tmp_path):
    row = ["0", "g", "f", "y", "o", "s", "s", "A.", "B.", "high"]
    write_tsv(tmp_path, "STS-B", "dev", [STSB_HEADER, row])
    with pytest.raises(DataError, match="line 2.*'high'"):
        data.read_split(data.get_task("stsb"), "dev", tmp_path)


def test_label_outside_label_set_names_label_and_allowed_set(tmp_path):
    path = write_tsv(tmp_path, "SST-2", "dev", [["sentence", "label"], ["fine", "1"], ["odd", "2"]])
    with pytest.raises(DataError, match=r"line 3: label '2' is not one of \['0', '1'\]") as err:
        data.read_split(data.get_task("sst2"), "dev", tmp_path)
    assert str(path) in str(err.value)


def test_wrong_header_names_the_file(tmp_path):
    path = write_tsv(tmp_path, "QNLI", "train", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(DataError, match="header") as err:
        data.read_split(data.get_task("qnli"), "train", tmp_path)
    assert str(path) in str(err.value)


def test_missing_split_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        data.read_split(data.get_task("rte"), "dev", tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(err.value)


def test_split_the_task_does_not_have_is_an_error(tmp_path):
    with pytest.raises(DataError, match="dev_matched, dev_mismatched"):
        data.read_split(data.get_task("mnli"), "dev", tmp_path)


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match="cola, sst2, mrpc"):
        data.get_task("imdb")


def test_batch_size_zero_is_an_error():
    with pytest.raises(DataError, match="batch size"):
        next(data.batches([{"input_ids": [1], "token_type_ids": [0], "label": 0}], 0))


# -----------------------------------------------------------------------------
# finding and downloading data

def test_missing_data_dir_says_where_it_looked_and_how_to_provide(tmp_path):
    with pytest.raises(DataError) as err:
        data.find_data_dir(data.get_task("sst2"), data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "SST-2" / "train.tsv") in message
    assert "--data-dir" in message and "GLUE_DIR" in message and "\n" not in message


def test_glue_dir_is_used_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    with pytest.raises(DataError, match="GLUE_DIR"):
        data.find_data_dir(data.get_task("cola"), cache_dir=tmp_path / "cache")
    write_tsv(tmp_path, "CoLA", "train", FIXTURES[0][2])
    assert data.find_data_dir(data.get_task("cola"), cache_dir=tmp_path / "cache") == tmp_path


def test_empty_cache_without_download_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="downloading is off") as err:
        data.find_data_dir(data.get_task("sst2"), cache_dir=tmp_path / "cache", download=False)
    assert str(tmp_path / "cache") in str(err.value)


def test_mrpc_without_url_explains_how_to_provide_it(tmp_path):
    with pytest.raises(DataError, match="MRPC.*--data-dir"):
        data.find_data_dir(data.get_task("mrpc"), cache_dir=tmp_path / "cache")


def make_sst2_zip(path, folder="SST-2"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{folder}/train.tsv", "sentence\tlabel\na fine film \t1\na dull film \t0\n")
        z.writestr(f"{folder}/dev.tsv", "sentence\tlabel\nloved it \t1\n")
    return path


def test_download_extracts_once_then_reuses_the_cache(tmp_path):
    task = data.get_task("sst2")
    source = make_sst2_zip(tmp_path / "SST-2.zip")
    cache = tmp_path / "cache"
    found = data.find_data_dir(task, cache_dir=cache, url=source.as_uri())
    assert found == cache and sorted(os.listdir(cache)) == ["SST-2"]  # no temp leftovers
    assert [e.label for e in data.read_split(task, "train", found)] == [1, 0]
    source.unlink()  # a second download would now fail
    assert data.find_data_dir(task, cache_dir=cache, url=source.as_uri()) == cache
    assert data.read_split(task, "dev", cache)[0].text_a == "loved it "


def test_default_cache_follows_transkimmer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSKIMMER_CACHE", str(tmp_path / "tk"))
    source = make_sst2_zip(tmp_path / "SST-2.zip")
    found = data.find_data_dir(data.get_task("sst2"), url=source.as_uri())
    assert found == tmp_path / "tk" / "glue"
    assert (found / "SST-2" / "train.tsv").is_file()


def test_bad_url_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="could not download") as err:
        data.find_data_dir(data.get_task("sst2"), cache_dir=tmp_path / "cache",
                           url=(tmp_path / "missing.zip").as_uri())
    assert "--data-dir" in str(err.value)
    assert os.listdir(tmp_path / "cache") == []  # the temp folder is cleaned up


def test_zip_without_the_task_folder_is_a_data_error(tmp_path):
    source = make_sst2_zip(tmp_path / "other.zip", folder="something-else")
    with pytest.raises(DataError, match="has no SST-2/train.tsv"):
        data.find_data_dir(data.get_task("sst2"), cache_dir=tmp_path / "cache", url=source.as_uri())


def test_file_that_is_not_a_zip_is_a_data_error(tmp_path):
    source = tmp_path / "SST-2.zip"
    source.write_text("<html>not found</html>")
    with pytest.raises(DataError, match="could not download"):
        data.find_data_dir(data.get_task("sst2"), cache_dir=tmp_path / "cache", url=source.as_uri())


@pytest.mark.skipif(not REAL_GLUE_DIR, reason="set GLUE_DIR to test the real SST-2 files")
def test_real_sst2_has_glue_row_counts_and_binary_labels():
    task = data.get_task("sst2")
    train = data.read_split(task, "train", REAL_GLUE_DIR)
    dev = data.read_split(task, "dev", REAL_GLUE_DIR)
    assert (len(train), len(dev)) == (67349, 872)
    assert {e.label for e in train} == {0, 1} and {e.label for e in dev} == {0, 1}


def test_whole_sentences_are_the_examples_no_longer_example_contains_as_a_run_of_words():
    texts = ["the cat sat on the mat .", "the cat", "sat on the mat", "a dog ran", "dog", "at", "a dog ran",
             "mat . the"]
    examples = [data.Example(t, None, 0) for t in texts]
    # "at" is inside "cat" and "sat", but as letters, not as a word; "mat . the" is no run of the first
    # text; the second "a dog ran" is the first one again
    assert data.whole_sentences(examples) == [0, 3, 5, 7]
    # a held-out slice is judged against the whole file: "the cat" is a part there, though not among the slice
    held = [examples[i] for i in (1, 3)]
    assert data.whole_sentences(held) == [0, 1] and data.whole_sentences(held, context=examples) == [1]
    pairs = [data.Example("the cat", "the cat sat", 0), data.Example("the cat sat", "the cat", 1)]
    assert data.whole_sentences(pairs) == [0, 1]                                  # pair tasks: every example


@pytest.mark.skipif(not REAL_GLUE_DIR, reason="set GLUE_DIR to test the real SST-2 files")
def test_sst2_whole_training_sentences_are_as_long_as_its_dev_sentences():
    task = data.get_task("sst2")
    train = data.read_split(task, "train", REAL_GLUE_DIR)
    words = lambda examples: np.mean([len(e.text_a.split()) for e in examples])  # noqa: E731
    whole = [train[i] for i in data.whole_sentences(train)]
    dev = data.read_split(task, "dev", REAL_GLUE_DIR)
    assert 6000 < len(whole) < 7000                  # the SST sentences behind the 67,349 phrases
    assert abs(words(whole) / words(dev) - 1) < 0.05 and words(train) < 0.5 * words(dev)


# -----------------------------------------------------------------------------
# encode and batches

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog",
         "ran", "##s", "."]


def make_tokenizer():
    """A tiny BERT-style WordPiece tokenizer, built offline."""
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def ids(*tokens):
    return [VOCAB.index(t) for t in tokens]


def test_encode_single_texts_and_truncates_to_max_length():
    examples = [Example("The cat sat.", None, 1), Example("the dog sat on the mat .", None, 0)]
    enc = data.encode(make_tokenizer(), examples, max_length=6)
    assert enc[0] == {"input_ids": ids("[CLS]", "the", "cat", "sat", ".", "[SEP]"),
                      "token_type_ids": [0] * 6, "label": 1}
    assert enc[1]["input_ids"] == ids("[CLS]", "the", "dog", "sat", "on", "[SEP]")


def test_encode_pairs_mark_second_segment_with_type_id_1():
    enc = data.encode(make_tokenizer(), [Example("the cats", "a dog ran", 2.5)], max_length=64)[0]
    assert enc["input_ids"] == ids("[CLS]", "the", "cat", "##s", "[SEP]", "a", "dog", "ran", "[SEP]")
    assert enc["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert enc["label"] == 2.5


def test_encode_leaves_callers_tokenizer_unchanged():
    tok = make_tokenizer()
    data.encode(tok, [Example("the cat sat on the mat", None, 0)], max_length=4)
    assert tok.truncation is None and tok.padding is None
    assert len(tok.encode("the cat sat on the mat").ids) == 8


def test_encode_rejects_max_length_below_special_tokens():
    with pytest.raises(DataError, match="max_length 2"):
        data.encode(make_tokenizer(), [Example("the cat", "a dog", 0)], max_length=2)


def encoded_items(lengths, regression=False):
    return [{"input_ids": list(range(5, 5 + n)), "token_type_ids": [0] * (n - 1) + [1],
             "label": float(i) / 2 if regression else i % 3} for i, n in enumerate(lengths)]


def test_batches_pad_each_batch_to_its_own_longest_example():
    items = encoded_items([3, 5, 2, 7, 4])
    out = list(data.batches(items, batch_size=2))
    assert [b["input_ids"].shape for b in out] == [(2, 5), (2, 7), (1, 4)]  # last partial batch kept
    first = out[0]
    assert first["input_ids"].tolist() == [[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert first["token_type_ids"].tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert first["labels"].tolist() == [0, 1]
    for b in out:
        assert b["input_ids"].dtype == b["attention_mask"].dtype == b["token_type_ids"].dtype == torch.long
        assert b["labels"].dtype == torch.long
        assert torch.equal(b["attention_mask"].bool(), b["input_ids"] != 0)


def test_batches_regression_labels_are_float32():
    b = next(data.batches(encoded_items([2, 3], regression=True), batch_size=4))
    assert b["labels"].dtype == torch.float32 and b["labels"].tolist() == [0.0, 0.5]


def test_shuffle_is_reproducible_by_seed():
    items = encoded_items(list(range(1, 41)))  # the lengths 1..40 identify the items

    def order(**kw):
        return [n for b in data.batches(items, 8, **kw) for n in b["attention_mask"].sum(1).tolist()]

    assert order(shuffle=False) == list(range(1, 41))
    assert order(shuffle=True, seed=1) == order(shuffle=True, seed=1)
    assert order(shuffle=True, seed=1) != order(shuffle=True, seed=2)
    assert sorted(order(shuffle=True, seed=3)) == list(range(1, 41))  # a permutation


def grouped_by_hand(lengths, batch_size, seed):
    """The batches of group_by_length, computed another way: the shuffled order (the random batches, end to end)
    cut into megabatches of MEGABATCH batches, each sorted longest first (ties in shuffled order), then cut into
    batches. -> the batches as tuples of rows, in megabatch order (batch_rows then shuffles them)."""
    shuffled = [int(i) for rows in data.batch_rows(lengths, batch_size, shuffle=True, seed=seed) for i in rows]
    size = data.MEGABATCH * batch_size
    out = []
    for start in range(0, len(shuffled), size):
        mega = sorted(shuffled[start:start + size], key=lambda i: -lengths[i])  # sorted() is stable
        out += [tuple(mega[b:b + batch_size]) for b in range(0, len(mega), batch_size)]
    return out


def test_length_grouped_batches_are_each_epochs_permutation_cut_from_sorted_megabatches():
    lengths = np.random.default_rng(0).integers(3, 65, size=1000).tolist()  # 125 batches of 8: 3 megabatches
    epoch = lambda seed: [tuple(int(i) for i in rows)  # noqa: E731
                          for rows in data.batch_rows(lengths, 8, shuffle=True, seed=seed, group_by_length=True)]
    first = epoch(42)
    assert sorted(i for rows in first for i in rows) == list(range(1000))          # each row once: a permutation
    assert epoch(42) == first                                                        # the same seed and epoch
    assert epoch(43) != first and sorted(epoch(43)) != sorted(first)               # the next epoch: other batches
    by_hand = grouped_by_hand(lengths, 8, 42)
    assert sorted(first) == sorted(by_hand)                                          # the same batches ...
    assert first != by_hand                                                          # ... shuffled
    # grouped, a batch's sentences are of about one length: little padding, where random batches have much
    padded = lambda batches: sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths)  # noqa: E731
    random_batches = [tuple(rows) for rows in data.batch_rows(lengths, 8, shuffle=True, seed=42)]
    assert padded(first) < 1.1 < 1.4 < padded(random_batches)


def test_group_by_length_without_shuffle_keeps_file_order():
    """Evaluation batches (no shuffle) stay in file order, whatever group_by_length says."""
    lengths = [5, 2, 9, 4, 7]
    rows = data.batch_rows(lengths, 2, group_by_length=True)
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4]]


# -----------------------------------------------------------------------------
# metrics against sklearn / scipy

def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, size=200)
        preds = np.where(rng.random(200) < 0.7, labels, 1 - labels)
        assert data.accuracy(preds, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, preds))
        assert data.f1(preds, labels) == pytest.approx(sklearn.metrics.f1_score(labels, preds))
        assert data.matthews_corrcoef(preds, labels) == pytest.approx(
            sklearn.metrics.matthews_corrcoef(labels, preds))


def test_mcc_is_zero_when_undefined_like_sklearn():
    labels = np.array([0, 1, 1, 0, 1])
    preds = np.ones(5, dtype=int)  # a constant prediction makes the denominator 0
    assert data.matthews_corrcoef(preds, labels) == 0.0 == sklearn.metrics.matthews_corrcoef(labels, preds)


def test_correlations_match_scipy_including_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    assert data.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0])
    assert data.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
    xt, yt = rng.integers(0, 5, size=300), np.round(y)  # many ties
    assert data.spearman(xt, yt) == pytest.approx(scipy.stats.spearmanr(xt, yt)[0])


def test_average_ranks_match_scipy_rankdata():
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert data._average_ranks(values).tolist() == scipy.stats.rankdata(values).tolist()


def test_compute_metrics_reports_task_metrics_main_first():
    assert list(data.compute_metrics(data.get_task("mrpc"), [1, 0, 1], [1, 1, 1])) == ["f1", "accuracy"]
    assert list(data.compute_metrics(data.get_task("cola"), [1, 0], [1, 0])) == ["matthews"]
    m = data.compute_metrics(data.get_task("stsb"), [0.1, 0.5, 0.9], [1.0, 2.0, 4.0])
    assert list(m) == ["pearson", "spearman"] and m["spearman"] == pytest.approx(1.0)
