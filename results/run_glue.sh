#!/usr/bin/env bash
# The paper's Table 3 on five small GLUE tasks (results/glue.md; SST-2's rows are results/run_recipe.sh's): for
# each task and seed, one train.py call per run, resumable (re-running a name whose run was stopped goes on with
# --resume; a name whose results/glue/NAME.json exists is skipped), writing runs/glue-NAME/ and copying its
# metrics.json to results/glue/NAME.json. NAME is TASK-RUN-seedS:
#   - t20: the default recipe at --target-speedup 2, sized for the task (recipe.task_sized: a small task's stages,
#     recipe.SMALL_TASK_STAGES, then recipe.MIN_STEPS). Its dense stage, evaluated when it ends, is the 6-layer
#     dense model of the same seed. On a small task that recipe's predictors learn at recipe.small_task_predictor_lr:
#     the best of three candidates on held-out slices, none of which passed its check (results/log.md "GLUE: a
#     recipe sized for a small task"; the rows made before it are in git, at commit 282075f). Seed 42 run (results/glue.md).
#   - tpaper: the default recipe at the paper's speedup for the task (Table 3, BERT-base, no padding).
#   - layers3, layers2: the first 3 and the first 2 of the 6 layers (2x and 3x FLOPs), dense, with the recipe's
#     budget: its 6 epochs lengthened as the recipe's are (--min-steps), at its learning rate, 5e-5.
# Seeds 42 to 46 (WNLI: 42 to 44), seed by seed, the cheaper tasks first, so that a stopped series has whole seeds.
#   GLUE_DIR=/path/to/glue bash results/run_glue.sh [NAME ...]   (default: all, in this order)
#   DEVICE=cuda bash results/run_glue.sh ...                      (new runs train on the GPU: train.py --device)
# results/glue.py pairs a seed of two rows only where both trained on one machine (a tpaper run is set against its
# own dense stage, so it pairs wherever it ran): run a task's t20, layers3 and layers2 of one seed on one machine.
# Two of these may share one list (one per core, OMP_NUM_THREADS=1 each): a run another is training is passed by
# (each run holds a flock on runs/glue-NAME/.lane while it trains; train.py holds .lock itself).
set -euo pipefail
cd "$(dirname "$0")/.."
MADE_WITH=(--no-group-by-length --precision fp32)  # the defaults these runs were made with, before length-grouped
# batches and bf16 became train.py's (results/README.md, section 6): a new run here repeats them
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
MIN_STEPS=$($PY -c 'import recipe; print(recipe.MIN_STEPS)')
declare -A PAPER=([cola]=1.75 [rte]=2.85 [mrpc]=3.13 [stsb]=3.45 [wnli]=5.56)
declare -A RUNS
names=()
for seed in 42 43 44 45 46; do
  for task in wnli cola stsb mrpc rte; do
    [[ $task == wnli && $seed -gt 44 ]] && continue
    RUNS[$task-t20-seed$seed]="--task $task --target-speedup 2 --seed $seed"
    RUNS[$task-layers3-seed$seed]="--task $task --stages dense:6:5e-5 --keep-layers 3 --min-steps $MIN_STEPS --seed $seed"
    RUNS[$task-tpaper-seed$seed]="--task $task --target-speedup ${PAPER[$task]} --seed $seed"
    RUNS[$task-layers2-seed$seed]="--task $task --stages dense:6:5e-5 --keep-layers 2 --min-steps $MIN_STEPS --seed $seed"
    names+=($task-t20-seed$seed $task-layers3-seed$seed $task-tpaper-seed$seed $task-layers2-seed$seed)
  done
done
mkdir -p results/glue
for name in ${@:-${names[@]}}; do
  [[ -v RUNS[$name] ]] || { echo "unknown run $name (TASK-RUN-seedS, RUN one of t20 tpaper layers3 layers2)" >&2; exit 2; }
  out=runs/glue-$name
  [[ -f results/glue/$name.json ]] && { echo "== $name: done (results/glue/$name.json)"; continue; }
  mkdir -p "$out"
  exec {lock}> "$out/.lane"
  flock -n "$lock" || { echo "== $name: being trained by another run_glue.sh"; exec {lock}>&-; continue; }
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else how=("${MADE_WITH[@]}" ${RUNS[$name]} --device "$DEVICE" --output-dir "$out" --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/glue/$name.json"
  exec {lock}>&-
done
