#!/usr/bin/env bash
# The held-out check of the small-task recipe (results/README.md, "GLUE: a recipe sized for a small task", written
# down with this script before its first run): python train.py --task T, the default recipe, which on a task of
# fewer than recipe.SMALL_TASK training examples is recipe.SMALL_TASK_STAGES (dense 3 epochs, skim 1.5, frozen 1.5,
# all at 5e-5) with the controller's integral gain scaled to the skim stage's length; target 2, seed 42, with 10%
# of train held out (the rows results/run_glue_dense.sh and run_glue_rule.sh held out). Every stage is scored on
# the held-out slice (metrics.json: stages[i].holdout, and holdout for the end); dev is reported, never used.
# Each run is one train.py call, resumable, writing runs/glue-small-TASK/ and copying its metrics.json to
# results/glue/small/TASK.json; done runs are skipped.
#   GLUE_DIR=/path/to/glue bash results/run_glue_small.sh [TASK ...]   (default: cola mrpc stsb)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
declare -A HOLDOUT=([cola]=855 [mrpc]=367 [stsb]=575)  # 10% of 8,551, 3,668 and 5,749
mkdir -p results/glue/small
for task in ${@:-cola mrpc stsb}; do
  out=runs/glue-small-$task
  [[ -f results/glue/small/$task.json ]] && { echo "== $task: done (results/glue/small/$task.json)"; continue; }
  mkdir -p "$out"
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else
    how=(--task "$task" --holdout "${HOLDOUT[$task]}" --seed 42 --timing-repeats 0 --output-dir "$out" --overwrite); fi
  echo "== $task: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/glue/small/$task.json"
done
