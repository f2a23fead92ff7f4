"""
An independent dense fine-tuning loop written with Hugging Face `transformers`, to check train.py's
dense recipe against what users run today. Nothing of train.py is used: HF's BertForSequenceClassification,
its own batching, optimizer and schedule. (data.py reads the TSV files and picks the held-out rows, so
that both loops train and score on exactly the same sentences.)

    GLUE_DIR=/path/to/glue .venv/bin/python results/hf_reference.py --lr 1e-4 --seed 42 \
        --holdout 2000 --out runs/hf-lr1e-4-seed42.json

Recipe (one epoch of SST-2 on the embedded all-MiniLM-L6-v2): the train examples shuffled once with
random.seed(0), whatever --seed; batches of 32 in that order (the last, partial one dropped), each
padded to its longest sentence, max length 64; AdamW(lr, weight decay 0.01 on every parameter); the
learning rate lr * min(1, (s + 1) / (0.06 S)) * (S - s) / S at step s of S; no gradient clipping;
dropout as in the checkpoint's config; --seed seeds torch (the new classifier and dropout); --device cuda
trains on a GPU. It writes the dev accuracy, each dev prediction (for paired comparisons) and, with
--holdout, the held-out accuracy.
"""

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import data  # noqa: E402
from checkpoint import atomic_write, default_checkpoint_dir, load_tokenizer  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--seed", type=int, default=42)
p.add_argument("--holdout", type=int, default=None, help="hold out N train examples, as train.py --holdout N")
p.add_argument("--max-train-samples", type=int, default=None, help="train on the first N (shuffled) examples only")
p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
p.add_argument("--out", required=True, help="JSON file to write")
args = p.parse_args()
if args.device == "cuda" and not torch.cuda.is_available():
    p.error("--device cuda: no CUDA device is available here")

task = data.get_task("sst2")
folder = default_checkpoint_dir()
tok = load_tokenizer(None)
data_dir = data.find_data_dir(task)
train_examples = data.read_split(task, "train", data_dir)
held_examples = []
if args.holdout:
    train_examples, held_examples = data.split_holdout(train_examples, args.holdout)


def encode(examples):
    return [(e.ids, ex.label) for e, ex in zip(tok.encode_batch([ex.text_a for ex in examples]), examples)]


def batch(rows):
    n = max(len(x) for x, _ in rows)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (x, _) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return ids.to(args.device), mask.to(args.device), torch.tensor([label for _, label in rows], device=args.device)


tok.enable_truncation(64)
train = encode(train_examples)
random.seed(0)
random.shuffle(train)
train = train[:args.max_train_samples]

torch.manual_seed(args.seed)
m = BertForSequenceClassification.from_pretrained(folder, num_labels=2).to(args.device)
opt = torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=0.01)
B = 32
steps = len(train) // B
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / (0.06 * steps)) * max(0, (steps - s) / steps))


@torch.no_grad()
def predict(rows):
    m.eval()
    out = []
    for i in range(0, len(rows), 128):
        ids, mask, _ = batch(rows[i:i + 128])
        out += m(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    m.train()
    return out


m.train()
t0 = time.time()
for s in range(steps):
    ids, mask, y = batch(train[s * B:(s + 1) * B])
    loss = m(input_ids=ids, attention_mask=mask, labels=y).loss
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    if s % 200 == 0:
        print(f"step {s}/{steps} loss {loss.item():.3f} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
seconds = time.time() - t0
dev = encode(data.read_split(task, "dev", data_dir))
preds = predict(dev)
result = {"command": "python " + shlex.join(sys.argv), "device": args.device, "lr": args.lr, "seed": args.seed,
          "train_steps": steps,
          "train_seconds": round(seconds, 1), "accuracy": data.accuracy(preds, [y for _, y in dev]),
          "predictions": preds}
if held_examples:
    held = encode(held_examples)
    result["holdout"] = {"accuracy": data.accuracy(predict(held), [y for _, y in held]), "examples": len(held)}
atomic_write(args.out, lambda path: Path(path).write_text(json.dumps(result) + "\n"))
print(f"dev accuracy {result['accuracy']:.4f}" + (f", held-out {result['holdout']['accuracy']:.4f}" if held_examples
                                                   else "") + f", {seconds:.0f}s -> {args.out}")
