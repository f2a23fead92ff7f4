"""Fixtures shared by the test files."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small random BERT (3 layers, d = 32) with the default checkpoint's tokenizer, saved as any checkpoint
    is: the command-line tests train and evaluate it in a fraction of the time the 6-layer default takes.
    What they check (files, flags, errors, resuming, the controller) does not depend on the model's size."""
    import model

    tokenizer = model.load_tokenizer()
    config = model.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny")
    model.Bert(config).save_pretrained(folder, tokenizer)
    return folder
