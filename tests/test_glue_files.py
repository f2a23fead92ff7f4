"""
The readers on the official GLUE files as they are: a few real rows of each task, copied byte for byte from the
official train/dev files (their quirks included), written by each test to a fixture folder and read back.
With GLUE_DIR set, the same rows are checked to be in the real files, and each real file is read whole.
"""

import os
from pathlib import Path

import pytest

import data

REAL_GLUE_DIR = os.environ.get("GLUE_DIR")

# task -> (split, the file's text as copied: its first lines, or the lines named, exactly), expected examples
REAL_ROWS = {
    # CoLA: no header; four columns (source, label, the author's mark: empty or "*", sentence); dev.tsv's last
    # line has no newline after it
    "cola": ("dev",
             "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
             "cj99\t0\t*\tAs you eat the most, you want the least.\n"
             "w_80\t1\t\tJohn talked to Bill about himself.",
             [("The sailors rode the breeze clear of the rocks.", None, 1),
              ("As you eat the most, you want the least.", None, 0), ("John talked to Bill about himself.", None, 1)]),
    # MRPC: a byte-order mark before the header; unbalanced double quotes inside the strings
    "mrpc": ("train",
             "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
             "1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" , of deliberately "
             "distorting his evidence .\tReferring to him as only \" the witness \" , Amrozi accused his brother of "
             "deliberately distorting his evidence .\n"
             "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
             "billion .\tYucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 "
             "billion in 1998 .\n",
             [("Amrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his "
               "evidence .", "Referring to him as only \" the witness \" , Amrozi accused his brother of deliberately "
               "distorting his evidence .", 1),
              ("Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
               "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in "
               "1998 .", 0)]),
    # STS-B: ten columns, the sentences 8th and 9th; float scores written "5.000" and "4.2"
    "stsb": ("dev",
             "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing "
             "a hard hat is dancing.\t5.000\n"
             "267\tmain-captions\timages\t2014\t0097\tnone\tnone\tA woman posing by a pillar with a U2 sign.\ta woman "
             "is standing by a pillar where \"u2\" is written.\t4.2\n",
             [("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
              ("A woman posing by a pillar with a U2 sign.", "a woman is standing by a pillar where \"u2\" is written.",
               4.2)]),
    # RTE: string labels, entailment -> 0, not_entailment -> 1
    "rte": ("dev",
            "index\tsentence1\tsentence2\tlabel\n"
            "0\tDana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to "
            "the Christopher Reeve Foundation.\tChristopher Reeve had an accident.\tnot_entailment\n"
            "1\tYet, we now are discovering that antibiotics are losing their effectiveness against illness. "
            "Disease-causing bacteria are mutating faster than we can come up with new antibiotics to fight the new "
            "variations.\tBacteria is winning the war against antibiotics.\tentailment\n",
            [("Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to "
              "the Christopher Reeve Foundation.", "Christopher Reeve had an accident.", 1),
             ("Yet, we now are discovering that antibiotics are losing their effectiveness against illness. "
              "Disease-causing bacteria are mutating faster than we can come up with new antibiotics to fight the "
              "new variations.", "Bacteria is winning the war against antibiotics.", 0)]),
    # WNLI: labels "0" and "1" as strings of the header layout RTE has; quotes inside the text
    "wnli": ("train",
             "index\tsentence1\tsentence2\tlabel\n"
             "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1\n"
             "32\tTom said \"Check\" to Ralph as he took his bishop.\tTom said \"Check\" to Ralph as he took Ralph's "
             "bishop.\t1\n",
             [("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", 1),
              ("Tom said \"Check\" to Ralph as he took his bishop.", "Tom said \"Check\" to Ralph as he took Ralph's "
               "bishop.", 1)]),
}

# the official GLUE files' example counts (train, dev), as GLUE's own downloads hold them
COUNTS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277),
          "wnli": (635, 71)}


def write(root, task, split, text):
    folder = Path(root) / task.dir_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.tsv").write_bytes(text.encode("utf-8"))
    return folder / f"{split}.tsv"


@pytest.mark.parametrize("name", sorted(REAL_ROWS))
def test_each_reader_reads_real_rows_with_their_quirks(tmp_path, name):
    """Texts, second texts and labels exactly as the rows hold them (labels as class indices, STS-B's as floats)."""
    task = data.get_task(name)
    split, text, expected = REAL_ROWS[name]
    write(tmp_path, task, split, text)
    examples = data.read_split(task, split, tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == expected
    assert all(type(e.label) is (float if task.labels is None else int) for e in examples)


@pytest.mark.parametrize("name", sorted(REAL_ROWS))
def test_a_real_row_cut_short_is_an_error_naming_the_file_and_its_line(tmp_path, name):
    """The last data row loses its last field: the error names the file and that row's line (1-based)."""
    task = data.get_task(name)
    split, text, _ = REAL_ROWS[name]
    lines = text.rstrip("\n").split("\n")
    lines[-1] = lines[-1].rsplit("\t", 1)[0]
    path = write(tmp_path, task, split, "\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match=rf"{path}, line {len(lines)}: expected \d+ tab-separated fields"):
        data.read_split(task, split, tmp_path)


def test_a_real_label_outside_the_task_labels_is_an_error_naming_the_line(tmp_path):
    """RTE's string labels: one mistyped in a real row is refused with the file, the line and the allowed set."""
    task = data.get_task("rte")
    split, text, _ = REAL_ROWS["rte"]
    path = write(tmp_path, task, split, text.replace("\tentailment\n", "\tentailed\n"))
    with pytest.raises(data.DataError, match=rf"{path}, line 3: label 'entailed' is not one of"):
        data.read_split(task, split, tmp_path)


@pytest.mark.skipif(not REAL_GLUE_DIR, reason="set GLUE_DIR to check the rows against the real files")
@pytest.mark.parametrize("name", sorted(REAL_ROWS))
def test_the_copied_rows_are_in_the_real_files(name):
    """Each copied line is a line of the official file (the first lines at its start), so the fixtures above are
    the files' own rows."""
    task = data.get_task(name)
    split, text, _ = REAL_ROWS[name]
    real = (Path(REAL_GLUE_DIR) / task.dir_name / f"{split}.tsv").read_bytes().decode("utf-8")
    assert real.startswith(text.split("\n")[0] + "\n")
    if not text.endswith("\n"):  # CoLA dev: the copied last line is the file's last, with no newline
        assert real.endswith("\n" + text.split("\n")[-1])
    real_lines = set(real.split("\n"))
    assert all(line in real_lines for line in text.rstrip("\n").split("\n"))


@pytest.mark.skipif(not REAL_GLUE_DIR, reason="set GLUE_DIR to read the real files")
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_real_file_reads_whole_with_the_official_counts(name):
    """Every row of the six tasks' train and dev files parses (nothing skipped), as many as the data's README says."""
    task = data.get_task(name)
    train, dev = (data.read_split(task, split, REAL_GLUE_DIR) for split in ("train", "dev"))
    assert (len(train), len(dev)) == COUNTS[name]
    if task.labels is None:
        assert all(0 <= e.label <= 5 for e in train + dev)
    else:
        assert {e.label for e in train} == set(range(task.num_labels))
    assert all(e.text_b is not None for e in train) == (len(task.text_columns) == 2)
