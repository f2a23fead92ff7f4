"""
What bench.py times besides the models' own passes: forced keep ratios (the decisions, and the batch cut to
what they keep, the no-overhead ceiling), a pass's FLOPs as flops.py counts them and as executed, and Hugging
Face transformers' eager BERT with our weights (the dense reference users run today; the one import of
transformers outside tests/, and the benchmark goes on without it).
"""

import math
import tempfile

import torch

from flops import padded_like_pruning
from gpu.fixed import fixed_columns, padded_to_columns


def forced_decisions(attention_mask, ratio, num_layers):
    """L (B, N) decisions: layer 0 keeps the first ceil(ratio * n) real tokens of each example, later
    layers keep everything still there (skim.py applies the cumulative rule)."""
    B, N = attention_mask.shape
    kept = torch.tensor([math.ceil(ratio * n - 1e-9) for n in attention_mask.sum(1).tolist()])  # (B,)
    first = (torch.arange(N)[None, :] < kept[:, None]).float()                                   # (B, N)
    return [first] + [torch.ones_like(first)] * (num_layers - 1)


def cut_to_kept(batch, ratio):
    """The batch cut to what forced_decisions(..., ratio) keeps in every layer: each example's first
    ceil(ratio * n) real tokens, re-padded to the longest. The dense model on it computes exactly what
    the pruned one does, with no pruning overhead at all: the best a pruned pass can do."""
    kept = torch.tensor([math.ceil(ratio * n - 1e-9) for n in batch["attention_mask"].sum(1).tolist()])  # (B,)
    N = int(kept.max())
    mask = (torch.arange(N)[None, :] < kept[:, None]).long()                                              # (B, N)
    return {"input_ids": batch["input_ids"][:, :N] * mask, "attention_mask": mask,
            "token_type_ids": batch["token_type_ids"][:, :N] * mask}


def label(name):
    """A pass's name in the printed tables: "dense", "dense fast", "HF eager", (path, keep ratio), or
    ("cut", path, keep ratio): the dense pass of that path on the kept tokens alone (cut_to_kept)."""
    if isinstance(name, str):
        return name
    if name[0] == "cut":
        return f"cut {name[1]} keep {name[2]}"
    path, ratio = name
    return f"{path} " + ("predicted" if ratio is None else f"keep {ratio}")


def count_flops(run, batches, new_counter, path):
    """Run each batch once (this is also the warm-up) and count the FLOPs from its masks, on two counters made by
    new_counter() (a flops.FlopsCounter of the path's conventions): as flops.py defines them (each example at its
    real length), and as executed (re-padded on the prune path, padded to its columns on the fixed path; see
    bench.py's docstring). -> their two summaries."""
    real, executed = new_counter(), new_counter()
    for b in batches:
        masks, attention_mask = [m.cpu() for m in run(b).masks], b["attention_mask"].cpu()
        real.add(masks, attention_mask)
        executed.add(*(padded_like_pruning(masks, attention_mask) if path == "prune" else
                       padded_to_columns(fixed_columns(b["capacity"], attention_mask.shape[1]), attention_mask)
                       if path == "fixed" else (masks, attention_mask)))
    return real.summary(), executed.summary()


def hf_eager(bert, batch, device="cpu", dtype=torch.float32):
    """(run one batch, transformers version, max |logit difference| to ours on `batch`) for HF's eager
    BertForSequenceClassification holding `bert`'s weights, or None if transformers is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        bert.save_pretrained(folder)
        hf = transformers.BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    hf = hf.to(device, dtype).eval()

    def run(b):
        return hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                  token_type_ids=b["token_type_ids"]).logits

    with torch.inference_mode():
        diff = (run(batch) - bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])).abs().max()
    return run, transformers.__version__, float(diff)
