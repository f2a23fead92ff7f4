"""
The method interface: what the training loop (train.py), the recipe, its speedup controller and its
evaluation (recipe.py) and the benchmark (bench.py) call on every way of saving compute, and the list of
those ways: Transkimmer (skim.py) and the alternatives in this folder. docs/interface.md draws the data flow through it.

A method wraps a dense BertForSequenceClassification, its `.bert`, and adds what it needs (Transkimmer:
a skim predictor before each layer). It is an nn.Module with

    forward(input_ids, attention_mask, token_type_ids) -> Output   training, and the masked reference
    infer(input_ids, attention_mask, token_type_ids)   -> Output   inference, the skipped work removed
    flops_counter(seq_len=None, last_layer="all") -> flops.FlopsCounter   its cost, fed Output.masks
    added_parameters() -> [parameters]       what it adds to BERT: trained at --predictor-lr, and with
                                             --predictor-grad separate clipped on their own
    wrap(bert, settings)      class method: the method put on a dense model, at the start of a skim stage
    from_pretrained(folder)   class method: a saved one; save_pretrained(directory, tokenizer) saves it
    config_key                the key under which it saves its settings in config.json, by which
                              load_saved recognises it
    fastest_masks(config, attention_mask) -> L masks (B, N)   optional, static, with counter(config): the most
                              it can skip, which FASTEST names, and its flops_counter from the config alone; a
                              --target-speedup beyond it is refused before any such model is built
                              (recipe.reachable_speedup)

and, where it has an operating point (recipe.py calibrates it to --target-speedup and freezes it):

    keep_threshold            the number its inference decision is taken at; higher saves more
    freeze(keep_threshold)    from now on training takes the inference decisions, its own parameters fixed

A method whose decisions are not learned (TopK: a fixed schedule) says so with trains_decisions = False:
the default recipe then has no skim stage for it, and it trains under its decisions after the dense stage.

forward and infer return model.Output, the one output type: Output.masks is L tensors (B, N), masks[i] = 1
where layer i computed the token's output, what flops.py counts and what the controller steers; Output.aux_loss
is the method's own loss (Transkimmer: the skim loss, Eq. 6), which the loop weighs by lambda (Eq. 7).

A new method is one new file in this folder with a class like these, and one line in METHODS below.
"""

import torch
import torch.nn as nn

import flops
import skim
from checkpoint import read_config, resolve_checkpoint
from methods import released, skipmiddle, topk
from model import BertForSequenceClassification, Output


class Dense(nn.Module):
    """The dense model behind the interface: every real token at every layer, no loss of its own."""

    config_key = None

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.every_token(self.bert(input_ids, attention_mask, token_type_ids), attention_mask)

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask, token_type_ids):
        return self.every_token(self.bert.infer(input_ids, attention_mask, token_type_ids), attention_mask)

    def every_token(self, logits, attention_mask):
        """logits (B, num_labels) -> an Output in which every layer computed every real token: L x (B, N)."""
        masks = [attention_mask.to(logits.dtype)] * self.bert.config.num_hidden_layers
        return Output(logits, masks)

    def flops_counter(self, seq_len=None, last_layer="all"):
        return flops.FlopsCounter(self.bert.config, seq_len, predictors=False, last_layer=last_layer)

    def added_parameters(self):
        return []

    @property
    def config(self):
        return self.bert.config

    def save_pretrained(self, directory, tokenizer=None):
        self.bert.save_pretrained(directory, tokenizer)


# the ways of saving compute a run can train (train.py --method), by name
METHODS = {
    "transkimmer": skim.Transkimmer,
    "topk": topk.TopK,
    "skipmiddle": skipmiddle.SkipMiddle,
    "released": released.Released,
}


def method_of(config_dict):
    """The method a saved config.json belongs to (None: a plain BERT, dense)."""
    return next((cls for cls in METHODS.values() if cls.config_key in config_dict), None)


def load_saved(path, every_token=False):
    """A model train.py saved, behind the interface: the method its config.json names, or Dense (with
    every_token, a method's BERT alone, every token kept)."""
    folder = resolve_checkpoint(path)
    method = method_of(read_config(folder))
    if method is None:
        return Dense(BertForSequenceClassification.from_pretrained(folder))
    model = method.from_pretrained(folder)
    return Dense(model.bert) if every_token else model
