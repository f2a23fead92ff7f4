#!/usr/bin/env bash
# The choice of recipe.MIN_STEPS (results/log.md, "GLUE: the recipe's length on a small task"): the default
# recipe at target 2, seed 42, on CoLA, MRPC and STS-B with 10% of each training set held out, at --min-steps
# 300 and 600. Each run is one train.py call, resumable (a stopped run goes on with --resume), writing
# runs/glue-rule-TASK-mN/ and copying its metrics.json to results/glue/rule/TASK-mN.json; done runs are skipped.
#   GLUE_DIR=/path/to/glue bash results/run_glue_rule.sh [NAME ...]   (NAME: TASK-mN; default: all six)
set -euo pipefail
cd "$(dirname "$0")/.."
MADE_WITH=(--no-group-by-length --precision fp32)  # the defaults these runs were made with, before length-grouped
# batches and bf16 became train.py's (results/README.md, section 6): a new run here repeats them
PY=${PY:-.venv/bin/python}
declare -A HOLDOUT=([cola]=855 [mrpc]=367 [stsb]=575)  # 10% of 8,551, 3,668 and 5,749
mkdir -p results/glue/rule
for name in ${@:-cola-m300 cola-m600 stsb-m300 stsb-m600 mrpc-m300 mrpc-m600}; do
  task=${name%-m*}; steps=${name#*-m}; out=runs/glue-rule-$name
  [[ -f results/glue/rule/$name.json ]] && { echo "== $name: done (results/glue/rule/$name.json)"; continue; }
  mkdir -p "$out"
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else
    how=(--task "$task" "${MADE_WITH[@]}" --holdout "${HOLDOUT[$task]}" --min-steps "$steps" --seed 42 --timing-repeats 0
         --output-dir "$out" --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/glue/rule/$name.json"
done
