"""The course notebooks (notebooks/*.ipynb) run top to bottom on a fresh kernel.

Every claim a notebook's prose makes is asserted by one of its cells, so a notebook that runs is a
notebook whose claims still hold for the code in this repository. Each notebook is executed on an
in-memory copy (the committed file and its outputs are left alone), with notebooks/ as the working
directory, as a reader runs it. The environment is passed through: GLUE_DIR (else data.py's cache
folder) tells notebooks 3 to 5 where SST-2 is; without TRANSKIMMER_CHECKPOINT notebook 3 trains its own
small demo model, without ALTERNATIVES_RUNS notebook 4 shows the methods untrained, and without
RELEASED_CHECKPOINT notebook 5 trains a small demo model of the released computation.

To refresh a notebook's committed outputs after changing the code:
    .venv/bin/python tests/test_notebooks.py notebooks/01_gradient_estimator.ipynb
"""

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import data  # noqa: E402  (where SST-2 is cached)

NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds, per cell: notebook 3's training cell is the longest
NEEDS_SST2 = {"03_what_the_model_skims.ipynb", "04_skimming_vs_alternatives.ipynb",  # read SST-2 dev (3 and 5 train
              "05_why_the_paper_does_not_reproduce.ipynb"}                         # on it)


def execute(path):
    """Run a notebook on a fresh `python3` kernel (this interpreter's) in notebooks/; -> the executed copy.
    Raises nbclient's CellExecutionError, which names the failing cell and shows its traceback."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    given = os.environ.get("GLUE_DIR")
    if given:  # the kernel runs in notebooks/, where a relative GLUE_DIR would name another folder
        os.environ["GLUE_DIR"] = str(Path(given).resolve())
    try:
        client.execute()
    finally:
        if given:
            os.environ["GLUE_DIR"] = given
    return nb


def sst2_dir():
    """Where notebook 3 looks for SST-2 (data.find_data_dir, without downloading): $GLUE_DIR, else the cache folder."""
    return Path(os.environ.get("GLUE_DIR") or data.default_cache_dir()) / "SST-2"


def test_there_are_notebooks():
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_committed_notebook_holds_outputs_from_one_top_to_bottom_run(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: re-execute it, see this file's docstring"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: the committed outputs contain an error"


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs_top_to_bottom(path):
    if path.name in NEEDS_SST2 and not (sst2_dir() / "dev.tsv").is_file():
        pytest.skip(f"{path.name} needs GLUE SST-2: no {sst2_dir() / 'dev.tsv'}; set GLUE_DIR=DIR "
                    "with DIR/SST-2/train.tsv and dev.tsv")
    execute(path)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        start = time.time()
        executed = execute(Path(arg))
        nbformat.write(executed, arg)
        print(f"{arg}: executed in place in {time.time() - start:.0f} s")
