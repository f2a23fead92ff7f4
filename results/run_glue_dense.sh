#!/usr/bin/env bash
# Does the 6-layer dense model learn CoLA and MRPC at all, given run_glue's length of training? A diagnosis for
# results/glue.md (at commit 282075f: results/archive/glue_min_steps/), whose dense rows (each recipe run's dense stage: 300 steps, 1.1 epochs of CoLA, 2.6 of MRPC)
# answer CoLA's majority class (Matthews 0.0) and score MRPC near its majority (71 against 68.4).
# Written down before any of these runs: train.py --no-skim for 3 epochs (HF run_glue's default), seed 42, with
# 10% of train held out (--holdout, the rows results/run_glue_rule.sh held out), at lr 2e-4 (the recipe's dense
# learning rate) and 5e-5 (run_glue's default); the held-out slice is the score, dev is reported, never used.
# Each run is one train.py call, resumable, writing runs/glue-dense-NAME/ and copying its metrics.json to
# results/glue/dense/NAME.json; done runs are skipped.
# stsb-e3-lr5e-5 and stsb-e3-lr2e-4 were added after the CoLA runs had been seen, as a third task for the same question.
#   GLUE_DIR=/path/to/glue bash results/run_glue_dense.sh [NAME ...]   (NAME: TASK-e3-lrLR; default: all six)
set -euo pipefail
cd "$(dirname "$0")/.."
MADE_WITH=(--no-group-by-length --precision fp32)  # the defaults these runs were made with, before length-grouped
# batches and bf16 became train.py's (results/README.md, section 6): a new run here repeats them
PY=${PY:-.venv/bin/python}
declare -A HOLDOUT=([cola]=855 [mrpc]=367 [stsb]=575)  # 10% of 8,551, 3,668 and 5,749
mkdir -p results/glue/dense
for name in ${@:-cola-e3-lr2e-4 cola-e3-lr5e-5 mrpc-e3-lr2e-4 mrpc-e3-lr5e-5 stsb-e3-lr5e-5 stsb-e3-lr2e-4}; do
  task=${name%%-*}; lr=${name##*-lr}; epochs=${name#*-e}; epochs=${epochs%%-*}; out=runs/glue-dense-$name
  [[ -f results/glue/dense/$name.json ]] && { echo "== $name: done (results/glue/dense/$name.json)"; continue; }
  mkdir -p "$out"
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else
    how=(--task "$task" "${MADE_WITH[@]}" --no-skim --epochs "$epochs" --lr "$lr" --holdout "${HOLDOUT[$task]}" --seed 42
         --timing-repeats 0 --output-dir "$out" --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/glue/dense/$name.json"
done
