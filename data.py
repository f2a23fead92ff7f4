"""
GLUE data for Transkimmer: find (or download) the nine GLUE tasks, read their TSV
files into Examples, tokenize them, cut them into dynamically padded batches, and
score predictions with the GLUE metrics.

Sources:
- GLUE benchmark (Wang et al. 2018), https://gluebenchmark.com; the per-task zips
  are the ones used by the public download_glue_data.py script (W4ngatang / nyu-mll).
- TSV layouts follow the GLUE archive (the same columns HF's glue processors read).
- Per-task max_seq_length and skim coefficient: Transkimmer paper (Guan et al.,
  ACL 2022), Table 2.

Rows are never skipped: a malformed row is a DataError naming the file and line.
(The original QQP train file has rows with missing fields that some loaders skip
silently; the QQP-clean zip downloaded here does not have them.)
"""

import bisect
import csv
import functools
import io
import math
import os
import pathlib
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer


class DataError(Exception):
    """A problem the user can fix (missing file, bad row, bad argument). One line."""


# -----------------------------------------------------------------------------
# tasks

@dataclass(frozen=True)
class Task:
    name: str              # short name used on the command line, e.g. 'sst2'
    dir_name: str          # GLUE folder name, e.g. 'SST-2'
    text_columns: tuple    # 1 or 2 columns holding the text(s): header names, or
                           # column indices for the header-less CoLA files
    label_column: object   # header name (or index for CoLA) of the label/score column
    labels: tuple | None   # label strings in class-index order; None = regression
    metrics: tuple         # metric names, see METRICS below
    main_metric: str       # the metric reported first and used to compare runs
    max_seq_length: int    # paper Table 2
    skim_coef: float       # paper Table 2: harmony coefficient of the skim loss
    dev_splits: tuple = ("dev",)
    has_header: bool = True
    score_range: tuple | None = None  # regression: the lowest and highest score a row may hold

    @property
    def num_labels(self):
        return 1 if self.labels is None else len(self.labels)


BINARY = ("0", "1")
ENTAIL = ("entailment", "not_entailment")

TASKS = {t.name: t for t in [
    Task("cola", "CoLA", (3,), 1, BINARY, ("matthews",), "matthews", 64, 0.3, has_header=False),
    Task("sst2", "SST-2", ("sentence",), "label", BINARY, ("accuracy",), "accuracy", 64, 0.3),
    Task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", BINARY,  # F1 first: the paper's MRPC column
         ("f1", "accuracy"), "f1", 128, 0.5),                                 # (docs/method.md, "The paper's metrics")
    Task("stsb", "STS-B", ("sentence1", "sentence2"), "score", None,
         ("pearson", "spearman"), "pearson", 64, 0.3, score_range=(0.0, 5.0)),
    Task("qqp", "QQP", ("question1", "question2"), "is_duplicate", BINARY,
         ("accuracy", "f1"), "accuracy", 128, 0.2),
    Task("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
         ("contradiction", "entailment", "neutral"), ("accuracy",), "accuracy", 128, 0.2,
         dev_splits=("dev_matched", "dev_mismatched")),
    Task("qnli", "QNLI", ("question", "sentence"), "label", ENTAIL, ("accuracy",), "accuracy", 128, 0.1),
    Task("rte", "RTE", ("sentence1", "sentence2"), "label", ENTAIL, ("accuracy",), "accuracy", 256, 0.8),
    Task("wnli", "WNLI", ("sentence1", "sentence2"), "label", BINARY, ("accuracy",), "accuracy", 128, 0.5),
]}


def get_task(name):
    """Look a task up by its short name ('sst2', 'mnli', ...)."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


# -----------------------------------------------------------------------------
# finding and downloading the data

GLUE_BASE = "https://dl.fbaipublicfiles.com/glue/data/"
GLUE_URLS = {
    "cola": GLUE_BASE + "CoLA.zip",
    "sst2": GLUE_BASE + "SST-2.zip",
    "stsb": GLUE_BASE + "STS-B.zip",
    "qqp": GLUE_BASE + "QQP-clean.zip",
    "mnli": GLUE_BASE + "MNLI.zip",
    "qnli": GLUE_BASE + "QNLIv2.zip",
    "rte": GLUE_BASE + "RTE.zip",
    "wnli": GLUE_BASE + "WNLI.zip",
    # no mrpc: GLUE does not host it as one zip (it is built from Microsoft's .msi)
}


def default_cache_dir():
    """$TRANSKIMMER_CACHE/glue if set, else ~/.cache/transkimmer/glue."""
    root = os.environ.get("TRANSKIMMER_CACHE") or pathlib.Path.home() / ".cache" / "transkimmer"
    return pathlib.Path(root) / "glue"


def _how_to_provide(task):
    return (f"pass --data-dir DIR or set GLUE_DIR=DIR, where DIR holds "
            f"{task.dir_name}/train.tsv and {task.dir_name}/{task.dev_splits[0]}.tsv")


def _has_task(folder, task):
    return (pathlib.Path(folder) / task.dir_name / "train.tsv").is_file()


def _not_a_file(path):
    """Why `path` cannot be read as a data file although something is there (a folder, a FIFO, a link that
    leads nowhere or in a loop), or None: nothing is there, or a regular file is."""
    path = pathlib.Path(path)
    if not os.path.lexists(path):
        return None
    try:
        mode = path.stat().st_mode
    except OSError as e:  # a symbolic link to nothing, or in a loop
        return f"is a symbolic link that cannot be followed ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, a socket or a device)"
    return None


def find_data_dir(task, data_dir=None, cache_dir=None, url=None, download=True):
    """
    Return the folder that holds <task.dir_name>/train.tsv. Looks, in order, at the
    data_dir argument, $GLUE_DIR, then the cache folder, which is filled from the
    task's official GLUE zip (url, default GLUE_URLS[task.name]) the first time.
    """
    for given, what in [(data_dir, "--data-dir"), (os.environ.get("GLUE_DIR"), "GLUE_DIR")]:
        if given:  # a place the user named must hold the data: no silent fallback
            if not _has_task(given, task):
                missing = pathlib.Path(given) / task.dir_name / "train.tsv"
                why = _not_a_file(missing) or "not found"
                raise DataError(f"{what}: {missing} {why}; {_how_to_provide(task)}")
            return pathlib.Path(given)
    cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    if _has_task(cache_dir, task):
        return cache_dir
    url = url or GLUE_URLS.get(task.name)
    if url is None or not download:
        why = "MRPC has no single official GLUE zip" if url is None else "downloading is off"
        raise DataError(f"no {task.dir_name} data in {cache_dir} and {why}; {_how_to_provide(task)}")
    return download_task(task, cache_dir, url)


def download_task(task, cache_dir, url):
    """
    Download url (a zip holding <dir_name>/train.tsv ...) and unpack it into cache_dir.
    Atomic: the zip goes to a temp folder inside cache_dir, is extracted there, and
    only the finished task folder is renamed into place. file:// urls work too.
    """
    cache_dir = pathlib.Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = pathlib.Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    except OSError as e:
        raise DataError(f"cannot write to cache folder {cache_dir} ({e}); set TRANSKIMMER_CACHE "
                        f"to a writable folder or {_how_to_provide(task)}") from None
    try:
        print(f"downloading {url} to {cache_dir} ...")
        zip_path = work / "data.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(zip_path, "wb") as f:
                shutil.copyfileobj(response, f)
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(work / "extracted")
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"could not download {task.dir_name} from {url} into {cache_dir} "
                            f"({e}); {_how_to_provide(task)}") from None
        if not _has_task(work / "extracted", task):
            raise DataError(f"the zip from {url} has no {task.dir_name}/train.tsv; "
                            f"{_how_to_provide(task)}")
        try:
            os.rename(work / "extracted" / task.dir_name, cache_dir / task.dir_name)
        except OSError:
            if not _has_task(cache_dir, task):  # not someone else finishing first: a real error
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cache_dir


# -----------------------------------------------------------------------------
# reading TSV files

@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: int | float  # index into task.labels, or the score for regression (STS-B)


def read_split(task, split, data_dir):
    """Read <data_dir>/<task.dir_name>/<split>.tsv into a list of Examples. A run reads each file once: read
    again unchanged (flags.py counts the training rows, train.py trains on them), it is not parsed again."""
    if split not in ("train",) + task.dev_splits:
        valid = ", ".join(("train",) + task.dev_splits)
        raise DataError(f"{task.name} has no split {split!r}; use one of: {valid}")
    path = pathlib.Path(data_dir) / task.dir_name / f"{split}.tsv"
    if (why := _not_a_file(path)) is not None:
        raise DataError(f"{path} {why}; {_how_to_provide(task)}")
    if not path.is_file():
        raise DataError(f"{path} not found: the {task.dir_name} folder has no {split} split; {_how_to_provide(task)}")
    stat = path.stat()
    return list(_parsed(task.name, path, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parsed(task_name, path, size, mtime_ns):
    """read_split's parse of one file, remembered by its size and time (a file that changed is read again)."""
    task = get_task(task_name)
    try:
        raw = path.read_bytes()
    except OSError as e:  # no permission to read it, say
        raise DataError(f"{path} cannot be read ({e.strerror or e}); {_how_to_provide(task)}") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: MRPC starts with a BOM
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); GLUE's files are UTF-8, "
                        "convert this one (iconv -f latin1 -t utf-8, say)") from None
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a row may be as long as the file (default: 128k)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: cannot be read as a tab-separated row ({e}); fix or "
                        "remove that line") from None
    if task.has_header:
        header, rows = (rows[0] if rows else []), rows[1:]
        columns, num_fields, first_line = _header_columns(task, header, path), len(header), 2
    else:  # CoLA train/dev: source, label, author's mark, sentence; columns are indices
        columns = {c: c for c in task.text_columns + (task.label_column,)}
        num_fields, first_line = 4, 1
    examples = [_parse_row(task, row, columns, num_fields, path, line)
                for line, row in enumerate(rows, start=first_line)]
    if not examples:
        raise DataError(f"{path} holds no examples" + (" (a header line only)" if task.has_header and header else "")
                        + f"; {_how_to_provide(task)}")
    return tuple(examples)


def _header_columns(task, header, path):
    """Map each column name the task needs to its index in the header row."""
    needed = task.text_columns + (task.label_column,)
    missing = [name for name in needed if name not in header]
    if missing:
        raise DataError(f"{path}: header lacks column(s) {missing}, is this the GLUE "
                        f"{task.dir_name} file? (header: {header})")
    return {name: header.index(name) for name in needed}


def _parse_row(task, row, columns, num_fields, path, line):
    """Turn one TSV row into an Example, checking it on the way."""
    if len(row) != num_fields:
        raise DataError(f"{path}, line {line}: expected {num_fields} tab-separated fields, "
                        f"found {len(row)}; fix or remove that line")
    texts = [row[columns[c]] for c in task.text_columns]
    if any(not any(ch.isprintable() and not ch.isspace() for ch in t) for t in texts):  # zero-width spaces count as empty
        raise DataError(f"{path}, line {line}: empty text; fix or remove that line")
    raw = row[columns[task.label_column]].strip()
    if task.labels is None:
        try:
            label = float(raw)
        except ValueError:
            label = math.nan
        if not math.isfinite(label):
            raise DataError(f"{path}, line {line}: score {raw!r} is not a number; fix or remove that line")
        low, high = task.score_range or (-math.inf, math.inf)
        if not low <= label <= high:
            raise DataError(f"{path}, line {line}: score {raw} lies outside {task.dir_name}'s range, {low:g} to "
                            f"{high:g}; fix or remove that line")
    elif raw in task.labels:
        label = task.labels.index(raw)
    else:
        raise DataError(f"{path}, line {line}: label {raw!r} is not one of {list(task.labels)}")
    return Example(texts[0], texts[1] if len(texts) > 1 else None, label)


HOLDOUT_SEED = 0  # the held-out slice depends on this alone, never on --seed: every run holds out the same rows


def split_holdout(examples, n):
    """(train, held_out): n examples drawn at random (with HOLDOUT_SEED) from train and kept out of it,
    to choose settings on (a learning rate, a threshold) without looking at dev. Both keep file order."""
    if not 0 < n < len(examples):
        raise DataError(f"cannot hold out {n} of {len(examples)} train examples; choose 0 < n < {len(examples)}")
    held = np.zeros(len(examples), dtype=bool)
    held[np.random.default_rng(HOLDOUT_SEED).choice(len(examples), size=n, replace=False)] = True
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


def training_rows(examples, holdout=0, max_train_samples=None):
    """(train, held_out): a run's training rows as train.py takes them from the training file: --holdout rows
    held out (split_holdout; none if not given), then the first --max-train-samples of the rest (all for None)."""
    held = []
    if holdout:
        examples, held = split_holdout(examples, holdout)
    return examples[:max_train_samples], held


def whole_sentences(examples, context=None):
    """Indices of the examples that are not part of a longer text of `context` (default: the examples
    themselves; a held-out slice is judged against the whole training file, where its sentences' phrases
    are). A part is a run of whole words of a longer text. For SST-2, whose training set holds every
    phrase of every sentence's parse tree (67,349 rows from 6,885 sentences), these are the sentences,
    which is what its dev and test sets hold. Pair tasks: every index (their inputs are not cut into
    phrases). Examples with equal text count once.

    Every text goes into a trie of words; from each word of a text, the walk down the trie meets every
    text that starts there. A walk goes no deeper than the longest text shorter than the one walked (a part
    is shorter than its text), so a row of n words costs n times the length of the others at most, not
    the n^3 of listing and comparing all its runs (a row of 15,000 words: hours)."""
    if any(e.text_b is not None for e in examples):
        return list(range(len(examples)))
    texts = {tuple(e.text_a.split()) for e in context or examples}
    trie = {}                                                       # word -> {next word -> ...}; None -> the text
    for text in texts:
        node = trie
        for word in text:
            node = node.setdefault(word, {})
        node[None] = text                                           # a text ends here
    lengths = sorted({len(text) for text in texts})
    parts = set()                                                   # every text that is a run of a longer one
    for text in sorted(texts, key=len, reverse=True):
        if text in parts:                                           # its runs are runs of the longer text too
            continue
        below = bisect.bisect_left(lengths, len(text))
        deepest = lengths[below - 1] if below else 0                # the longest text shorter than this one
        for start in range(len(text)):
            node = trie
            for i in range(start, min(len(text), start + deepest)):
                node = node.get(text[i])
                if node is None:
                    break
                if None in node:
                    parts.add(node[None])
    whole, seen = [], set()
    for i, e in enumerate(examples):
        text = tuple(e.text_a.split())
        if text not in parts and text not in seen:
            whole.append(i)
            seen.add(text)
    return whole


# -----------------------------------------------------------------------------
# tokenizing and batching

def encode(tokenizer, examples, max_length):
    """
    Tokenize examples with a `tokenizers.Tokenizer` whose post-processor already adds
    [CLS]/[SEP] and token type ids. Truncates to max_length on a copy of the tokenizer,
    so the caller's tokenizer is left as it was. No padding here: see batches().
    """
    tok = Tokenizer.from_str(tokenizer.to_str())  # a copy we may change
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    inputs = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    encoded = []
    for example, enc in zip(examples, tok.encode_batch(inputs)):
        if len(enc.ids) > max_length:  # tokenizers does not truncate below the special tokens
            raise DataError(f"max_length {max_length} is too small to hold the special tokens "
                            f"plus text; use a larger --max-seq-length")
        encoded.append({"input_ids": enc.ids, "token_type_ids": enc.type_ids, "label": example.label})
    return encoded


MEGABATCH = 50  # batches in a megabatch of group_by_length (Hugging Face's Trainer takes at most 50 too)


def batch_rows(lengths, batch_size, shuffle=False, seed=0, group_by_length=False):
    """
    The rows of each batch, as index arrays, for examples of these lengths (one batch may be partial):
    in file order; with shuffle, in an order drawn from `seed`; with shuffle and
    group_by_length (not in the paper), grouped by length as Hugging Face's group_by_length sampler does:
    the shuffled order cut into megabatches of MEGABATCH batches, each sorted by length (longest first)
    and cut into batches, and then the batches shuffled (HF leaves them longest first within each
    megabatch). A batch then holds examples of about one length, so padding each to its longest costs
    little, while its examples are still drawn at random. The same seed gives the same batches.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    rng = np.random.default_rng(seed)
    if shuffle:
        rng.shuffle(order)
    if shuffle and group_by_length:
        size = MEGABATCH * batch_size
        mega = [order[i:i + size] for i in range(0, len(order), size)]                   # megabatches
        order = np.concatenate([m[np.argsort(-lengths[m], kind="stable")] for m in mega])  # each longest first
    rows = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if shuffle and group_by_length:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    return rows


def batches(encoded, batch_size, shuffle=False, seed=0, group_by_length=False):
    """
    Yield batches of tensors, each padded (with id 0) to its own longest example:
    input_ids, attention_mask (1 = real token, 0 = padding), token_type_ids: (B, N) long;
    labels: (B,) long, or float32 for regression. The last partial batch is kept. The order:
    batch_rows (file order; shuffled by seed; or, with group_by_length, grouped by length).
    """
    lengths = [len(item["input_ids"]) for item in encoded]
    for rows in batch_rows(lengths, batch_size, shuffle, seed, group_by_length):
        yield collate([encoded[i] for i in rows])


def inputs(batch):
    """A batch's three model inputs, in the order every model takes them."""
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def to_device(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


def collate(items):
    """Pad a list of encoded examples into one batch of tensors."""
    n = max(len(item["input_ids"]) for item in items)
    input_ids = np.zeros((len(items), n), dtype=np.int64)
    token_type_ids = np.zeros((len(items), n), dtype=np.int64)
    attention_mask = np.zeros((len(items), n), dtype=np.int64)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        input_ids[row, :length] = item["input_ids"]
        token_type_ids[row, :length] = item["token_type_ids"]
        attention_mask[row, :length] = 1
    regression = isinstance(items[0]["label"], float)
    labels = np.array([item["label"] for item in items], dtype=np.float32 if regression else np.int64)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "labels": torch.from_numpy(labels),
    }


# -----------------------------------------------------------------------------
# metrics (plain numpy; checked against sklearn / scipy in tests/test_data.py)

def accuracy(predictions, labels):
    """Fraction of predictions equal to the labels."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def _confusion(predictions, labels):
    """Binary confusion counts (tp, fp, fn, tn), class 1 being positive."""
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    return int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)), int(np.sum(~p & ~y))


def f1(predictions, labels):
    """Binary F1 of the positive class 1: 2tp / (2tp + fp + fn); 0.0 when undefined, like sklearn."""
    tp, fp, fn, _ = _confusion(predictions, labels)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0


def matthews_corrcoef(predictions, labels):
    """Binary Matthews correlation (the CoLA metric); 0.0 when undefined, like sklearn."""
    tp, fp, fn, tn = _confusion(predictions, labels)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator > 0 else 0.0


def pearson(predictions, labels):
    """Pearson correlation; 0.0 when undefined (an input is constant)."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator > 0 else 0.0


def _average_ranks(values):
    """1-based ranks of values; tied values all get the average of their ranks (like scipy)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]       # exclusive
    run_ranks = (run_starts + 1 + run_ends) / 2          # mean of ranks start+1 .. end
    run_lengths = run_ends - run_starts
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_ranks, run_lengths)
    return ranks


def spearman(predictions, labels):
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    return pearson(_average_ranks(predictions), _average_ranks(labels))


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews_corrcoef,
           "pearson": pearson, "spearman": spearman}


def compute_metrics(task, predictions, labels):
    """All of task's metrics as {name: value}, main metric first."""
    names = (task.main_metric,) + tuple(m for m in task.metrics if m != task.main_metric)
    return {name: METRICS[name](predictions, labels) for name in names}
