#!/usr/bin/env bash
# The held-out check of the small-task recipe (results/log.md, "GLUE: a recipe sized for a small task", written
# down with this script before its first run): python train.py --task T, the default recipe, which on a task of
# fewer than recipe.SMALL_TASK training examples is recipe.SMALL_TASK_STAGES (dense 3 epochs, skim 1.5, frozen 1.5,
# all at 5e-5) with the controller's integral gain scaled to the skim stage's length; target 2, seed 42, with 10%
# of train held out (the rows results/run_glue_dense.sh and run_glue_rule.sh held out). Every stage is scored on
# the held-out slice (metrics.json: stages[i].holdout, and holdout for the end); dev is reported, never used.
# Each run is one train.py call, resumable, writing runs/glue-small-TASK/ and copying its metrics.json to
# results/glue/small/TASK.json; done runs are skipped.
# TASK-plr: the second candidate (results/log.md, "The second candidate", written down with this line before its
# runs): the same, with the predictors at --predictor-lr 2e-4 x 1,052 / (the skim stage's steps), so that they
# move as far in the stage as in SST-2's (2e-4 for 1,052 steps): CoLA 362 steps, MRPC 156, STS-B 243.
# TASK-c3: the third candidate (results/log.md, "The third candidate", written down with this line before its
# runs): the second, with a skim stage twice as long (dense 3 epochs, skim 3, frozen 1.5, all at 5e-5; the
# predictors at 2e-4 x 1,052 / its steps: CoLA 723, MRPC 312, STS-B 486), so that the controller reaches the
# target within the stage instead of leaving the calibration a jump to make.
# TASK-layers3: not a candidate but the baseline at the same FLOPs, on the same slice and seed: the first 3 layers
# trained densely for the recipe's 6 epochs at 5e-5 (what results/run_glue.sh's layers3 rows train), so that a
# candidate's loss at 2x can be read against what 2x costs without skimming.
#   GLUE_DIR=/path/to/glue bash results/run_glue_small.sh [NAME ...]   (NAME: TASK, TASK-plr, TASK-c3 or TASK-layers3; default: cola mrpc stsb)
set -euo pipefail
cd "$(dirname "$0")/.."
MADE_WITH=(--no-group-by-length --precision fp32)  # the defaults these runs were made with, before length-grouped
# batches and bf16 became train.py's (results/README.md, section 6): a new run here repeats them
PY=${PY:-.venv/bin/python}
declare -A HOLDOUT=([cola]=855 [mrpc]=367 [stsb]=575)  # 10% of 8,551, 3,668 and 5,749
declare -A SKIM_STEPS=([cola]=362 [mrpc]=156 [stsb]=243)  # 1.5 epochs of the 7,696, 3,301 and 5,174 left, batch 32
declare -A SKIM3_STEPS=([cola]=723 [mrpc]=312 [stsb]=486)  # 3 epochs
mkdir -p results/glue/small
for name in ${@:-cola mrpc stsb}; do
  task=${name%-plr}; task=${task%-layers3}; task=${task%-c3}; out=runs/glue-small-$name
  [[ -f results/glue/small/$name.json ]] && { echo "== $name: done (results/glue/small/$name.json)"; continue; }
  extra=(); [[ $name == *-plr ]] && extra=(--predictor-lr "$(python3 -c "print(f'{2e-4 * 1052 / ${SKIM_STEPS[$task]}:.3g}')")")
  [[ $name == *-layers3 ]] && extra=(--stages dense:6:5e-5 --keep-layers 3)
  [[ $name == *-c3 ]] && extra=(--stages dense:3:5e-5,skim:3:5e-5,frozen:1.5:5e-5
                                --predictor-lr "$(python3 -c "print(f'{2e-4 * 1052 / ${SKIM3_STEPS[$task]}:.3g}')")")
  mkdir -p "$out"
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else
    how=(--task "$task" "${MADE_WITH[@]}" --holdout "${HOLDOUT[$task]}" --seed 42 --timing-repeats 0 "${extra[@]}" --output-dir "$out"
         --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/glue/small/$name.json"
done
