#!/usr/bin/env bash
# Why the paper's numbers do not reproduce (results/released.md): the authors' released training script, as they
# ran it (train.py --recipe released: methods/released.py's RECIPE), trained two ways, one train.py call per run:
#   - released: their forward as well (--method released, methods/released.py): every token updated in every layer, skim
#     attention not renormalised, decisions sampled at evaluation. Its metrics.json scores the same weights three
#     ways ("scored"): the released pass with sampled decisions (5 samplings, as the paper evaluated), with argmax
#     decisions, and honest pruned inference (infer).
#   - honest: our Transkimmer (--method transkimmer) under the same recipe, tau and init: no leak to train around.
# and a third way, which the released recipe cannot show on this backbone (its models skim nothing at argmax):
#   - ourrecipe: their forward under our recipe at 2x (--method released --target-speedup 2, everything else as
#     results/run_glue.sh's t20 runs, with which it pairs): a model that does skim, so that the leak is measured at
#     a speedup like the paper's. Its released pass samples its decisions in every stage, the frozen one too (as
#     their code samples them whenever it trains); the keep threshold is calibrated on honest pruning (infer).
# NAME is TASK-MODE-seedS. Resumable: a name whose results/released/NAME.json exists is skipped, one whose run was
# stopped goes on with --resume. Seed 42 first on every task, the cheaper tasks first, then 43 and 44, then SST-2
# (3 epochs of 67,349 sentences at batch 64: the longest by far).
#   GLUE_DIR=/path/to/glue bash results/run_released.sh [NAME ...]   (default: all, in this order)
#   DEVICE=cuda bash results/run_released.sh ...                      (new runs train on the GPU)
# Two of these may share the list (one per core, OMP_NUM_THREADS=1 each): a run another is training is passed by
# (each run holds a flock on runs/released-NAME/.lane while it trains; train.py holds .lock itself). On the CPU an
# RTE run (batch 64, up to 256 tokens) held up to 13.5 GiB: two at once ran a 24 GiB machine out of memory, so a lane
# passes by an RTE run while another RTE run trains (runs/released-one-large.lane).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
declare -A RUNS
names=()
MADE_WITH=(--no-group-by-length --precision fp32)  # ourrecipe: as the t20 runs it pairs with were made
for seed in 42 43 44; do
  for task in cola stsb mrpc rte; do
    for mode in released honest; do
      method=$([[ $mode == released ]] && echo released || echo transkimmer)
      RUNS[$task-$mode-seed$seed]="--task $task --recipe released --method $method --seed $seed --timing-repeats 0"
      names+=($task-$mode-seed$seed)
    done
    RUNS[$task-ourrecipe-seed$seed]="${MADE_WITH[*]} --task $task --method released --target-speedup 2 --seed $seed --timing-repeats 0"
    names+=($task-ourrecipe-seed$seed)
  done
done
for seed in 42 43 44; do
  for mode in released honest; do
    method=$([[ $mode == released ]] && echo released || echo transkimmer)
    RUNS[sst2-$mode-seed$seed]="--task sst2 --recipe released --method $method --seed $seed --timing-repeats 0"
    names+=(sst2-$mode-seed$seed)
  done
done
mkdir -p results/released
for name in ${@:-${names[@]}}; do
  [[ -v RUNS[$name] ]] || { echo "unknown run $name (TASK-MODE-seedS, MODE released, honest or ourrecipe)" >&2; exit 2; }
  out=runs/released-$name
  [[ -f results/released/$name.json ]] && { echo "== $name: done (results/released/$name.json)"; continue; }
  mkdir -p "$out"
  exec {lock}> "$out/.lane"
  flock -n "$lock" || { echo "== $name: being trained by another run_released.sh"; exec {lock}>&-; continue; }
  if [[ $DEVICE == cpu && $name == rte-* ]]; then  # up to 13.5 GiB each at batch 64 and 256 tokens: one at a time
    exec {big}> runs/released-one-large.lane
    flock -n "$big" || { echo "== $name: another RTE run is training (two do not fit in 24 GiB); later"
                         exec {big}>&- {lock}>&-; unset big; continue; }
  fi
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else how=(${RUNS[$name]} --device "$DEVICE" --output-dir "$out" --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/released/$name.json"
  exec {lock}>&-
  [[ -v big ]] && { exec {big}>&-; unset big; }
done
