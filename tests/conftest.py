"""Fixtures and helpers shared by the test files."""

import os

import pytest
import torch

# Under `pytest -n 2` (make test) each of the two worker processes takes one core: one thread, for its own
# tensors and for the processes its tests start (train.py, torchrun, the notebook kernels). Two threads
# each would ask four threads of two cores; most tensors here are small, and one thread is as fast on them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small random BERT (3 layers, d = 32) with the default checkpoint's tokenizer, saved as any checkpoint
    is: the command-line tests train and evaluate it in a fraction of the time the 6-layer default takes.
    What they check (files, flags, errors, resuming, the controller) does not depend on the model's size."""
    import checkpoint
    import model

    tokenizer = checkpoint.load_tokenizer()
    config = model.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    model.Bert(config).save_pretrained(folder, tokenizer)
    return folder


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A tiny random BertForSequenceClassification created and saved by HF itself."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                                     num_labels=3)
    hf = transformers.BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny_hf")
    hf.save_pretrained(path)
    return path


def small_config(layers):
    """The method tests' small BERT: d = 32, 4 heads, a feed-forward of 64, 3 labels, a vocabulary of 100."""
    from model import BertConfig
    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                      intermediate_size=64, num_labels=3)


def executed_and_counted(model, ids, mask, types):
    """A method's infer on one batch: (the FLOPs FlopCounterMode saw it execute, with SDPA's math kernel, whose
    matmuls it counts; the method's flops_counter on its masks, "cls" convention, no padding)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as reference:
        out = model.infer(ids, mask, types)
    counter = model.flops_counter(last_layer="cls")
    counter.add(out.masks, mask)
    return reference.get_total_flops(), counter


def padded_batch(vocab_size, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = max(lengths)
    input_ids = torch.randint(1, vocab_size, (len(lengths), N), generator=g)
    attention_mask = torch.zeros(len(lengths), N, dtype=torch.long)
    token_type_ids = torch.zeros(len(lengths), N, dtype=torch.long)
    for i, n in enumerate(lengths):
        attention_mask[i, :n] = 1
        input_ids[i, n:] = 0
        token_type_ids[i, n // 2:n] = 1  # a second segment
    return input_ids, attention_mask, token_type_ids


SENTENCES = [
    ("a gripping , beautifully acted film .", 1), ("dull and lifeless", 0), ("it 's a charming , funny ride", 1),
    ("the plot is thin and the jokes fall flat", 0), ("an utterly delightful surprise", 1), ("a waste of time", 0),
    ("warm , moving and wise", 1), ("tedious beyond words", 0), ("one of the year 's best", 1), ("painfully bad", 0),
]


def write_sst2(root, rows, name="train.tsv"):
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows))
    return root


@pytest.fixture
def glue(tmp_path):
    """A tiny SST-2 in the GLUE layout: 30 train rows, 6 dev rows."""
    root = write_sst2(tmp_path / "glue", SENTENCES * 3)
    write_sst2(root, SENTENCES[:6], name="dev.tsv")
    return root
