"""methods/, the method interface: a method written here, in the test, registered with one line, trains
through train.py's loop and the speedup controller with no change to train.py; and the dense model behind
the interface computes what the plain BertForSequenceClassification computes."""

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import flops
import methods
import recipe
import skim
from methods import skipmiddle, topk
import train
from model import BertForSequenceClassification, Output, padding_bias
from conftest import SENTENCES, padded_batch, small_config, write_sst2


class LayerGates(nn.Module):
    """A toy way of saving compute: one learned gate per layer, on or off for the whole batch. Forward: 0/1
    (p > 0.5); backward: sigmoid's gradient (straight-through). Its loss is the mean gate, as the skim loss is
    the mean kept fraction, so lambda pushes the gates shut; the task loss does not reach them (a toy)."""

    config_key = "layer_gates"

    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.gates = nn.Parameter(torch.linspace(0.5, 1.5, bert.config.num_hidden_layers))  # (L,) all open

    @classmethod
    def wrap(cls, bert, settings):
        return cls(bert)

    @property
    def config(self):
        return self.bert.config

    def added_parameters(self):
        return [self.gates]

    def flops_counter(self, seq_len=None, last_layer="all"):
        return flops.FlopsCounter(self.config, seq_len, predictors=False, last_layer=last_layer)

    def open(self):
        p = torch.sigmoid(self.gates)                                             # (L,)
        return (p > 0.5).to(p.dtype) - p.detach() + p                             # (L,) exactly 0 or 1

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.bert.embeddings(input_ids, token_type_ids)                       # (B, N, d)
        pad_bias = padding_bias(attention_mask, x.dtype)
        on, masks = self.open(), []
        for g, layer in zip(on, self.bert.layers):
            x = g.detach() * layer(x, pad_bias) + (1 - g.detach()) * x            # a shut layer passes x through
            masks.append(attention_mask.to(x.dtype) * g.detach())                 # (B, N)
        logits = self.bert.classify(self.bert.pool(x[:, 0]))
        return Output(logits, masks, on.mean())

    @torch.inference_mode()
    def infer(self, input_ids, attention_mask, token_type_ids):
        return self.forward(input_ids, attention_mask, token_type_ids)

    def save_pretrained(self, directory, tokenizer=None):
        self.bert.save_pretrained(directory, tokenizer, extra_config={self.config_key: {}},
                                  extra_tensors={"gates": self.gates.detach().clone()})


def test_a_method_registered_in_one_line_trains_through_the_loop_and_the_controller(tiny, tmp_path, monkeypatch):
    glue = write_sst2(tmp_path / "glue", SENTENCES * 6)
    write_sst2(glue, SENTENCES, name="dev.tsv")
    monkeypatch.setitem(methods.METHODS, "layer-gates", LayerGates)               # the one line
    m = train.main(["--task", "sst2", "--model", str(tiny), "--data-dir", str(glue), "--method", "layer-gates",
                    "--stages", "dense:1,skim:4", "--target-speedup", "2", "--lr", "1e-4", "--predictor-lr", "0.05",
                    "--batch-size", "8", "--timing-repeats", "0", "--output-dir", str(tmp_path / "o")])
    skim_stage = m["stages"][1]
    trace = skim_stage["trace"]
    assert len(trace["flops_fraction"]) == skim_stage["train_steps"] == 32         # steered at every step
    assert trace["flops_fraction"][0] == 1.0 and min(trace["flops_fraction"]) < 0.7  # the controller shut gates
    assert max(trace["skim_coef"]) > 0                                              # by raising lambda
    gates = load_file(tmp_path / "o" / "model.safetensors")["gates"]               # the evaluation went through it:
    assert m["flops"]["kept_fraction"] == (torch.sigmoid(gates) > 0.5).float().tolist()   # its layers, its gates
    assert "layer_gates" in json.loads((tmp_path / "o" / "config.json").read_text())
    assert m["args"]["method"] == "layer-gates"


def test_the_dense_method_computes_what_the_classifier_computes(tiny):
    bert = BertForSequenceClassification.from_pretrained(tiny, num_labels=2).eval()
    dense = methods.Dense(bert)
    ids = torch.randint(1000, 2000, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    types = torch.zeros_like(ids)
    out = dense(ids, mask, types)
    with torch.no_grad():
        assert torch.equal(out.logits, bert(ids, mask, types))
    assert all(torch.equal(m, mask.float()) for m in out.masks) and out.aux_loss == 0
    assert torch.allclose(dense.infer(ids, mask, types).logits, out.logits, atol=1e-5)
    counter = dense.flops_counter()
    counter.add(out.masks, mask)
    assert counter.summary()["none"]["speedup"] == 1.0


def skimmer_deciding_at_random(bert):
    model = skim.Transkimmer(bert)
    torch.manual_seed(1)
    for predictor in model.predictors:  # an untrained Eq. 9 init keeps everything
        predictor.reset_parameters(mu0=0.3, std=0.5)
    return model


def skipper_with_closing_gates(bert):
    model = skipmiddle.SkipMiddle(bert)
    with torch.no_grad():
        for gate in model.gates:
            gate.weight.normal_(0, 0.01)
            gate.bias.fill_(1.0)  # >> w . h: every increment positive, so a large enough scale shuts every gate
    return model


@pytest.mark.parametrize("make", [skimmer_deciding_at_random, lambda bert: topk.TopK(bert, rho=0.5),
                                  skipper_with_closing_gates], ids=["skim", "topk", "skipmiddle"])
def test_a_methods_fastest_masks_are_what_it_computes_at_its_highest_operating_point(make):
    """recipe.reachable_speedup refuses a --target-speedup beyond a method's fastest_masks; they must be the
    masks the method itself reaches as its keep threshold goes to 1, not a bound written apart from it."""
    torch.manual_seed(0)
    model = make(BertForSequenceClassification(small_config(4))).eval()
    ids, mask, types = padded_batch(100, [9, 5, 7, 2])
    model.keep_threshold = 1 - 1e-12
    reached = model.infer(ids, mask, types).masks
    assert all(torch.equal(r.float(), f) for r, f in zip(reached, model.fastest_masks(model.config, mask)))
    batches = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}]
    assert recipe.reachable_speedup(type(model), model.config, batches) == pytest.approx(recipe.speedup_at(model, batches, 1 - 1e-12))
