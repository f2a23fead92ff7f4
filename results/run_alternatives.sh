#!/usr/bin/env bash
# "Is skimming worth it?" on SST-2: the other ways of saving compute, trained as the recipe is, each run one
# train.py call, resumable (re-running a name whose run was stopped goes on with --resume; a name whose
# results/alternatives/NAME.json exists is skipped), writing runs/sst2-alt-NAME/ and copying its metrics.json
# to results/alternatives/NAME.json. Transkimmer's rows and the fewer-layers rows are results/run_recipe.sh's
# (results/recipe/tNN-seedS.json, layersK-seedS.json), trained on the same data, budget and seeds.
#   - topkNN-seedS: static top-k pruning (methods/topk.py, PoWER-BERT) at --target-speedup NN/10: the default recipe's
#     two epochs with its skim stage trained under the schedule instead (dense 1 epoch at 2e-4, then 0.5 at
#     2e-4 and 0.5 at 5e-5 under the schedule, calibrated to the target on training sentences).
#   - smNN-seedS: skipping the middle layers (methods/skipmiddle.py, Lawson et al. 2025) at --target-speedup NN/10: the
#     default recipe (dense 1 epoch at 2e-4, the gates trained 0.5 at 2e-4 with lambda steered, then 0.5 at 5e-5
#     under the frozen gates, calibrated to the target on training sentences).
# Seeds 42 to 44 at 2x, seed 42 at 1.5x and 3x, in the order below.
#   - smoke-topk20, smoke-t20, smoke-sm20: top-k, Transkimmer and skip-middle at 2x on the first 4,000 training
#     rows only (--max-train-samples 4000, seed 42): a first end-to-end check on real data that fits a session,
#     not a verdict. (smoke-sm20 was added a session after the other two had run.)
#   GLUE_DIR=/path/to/glue bash results/run_alternatives.sh [NAME ...]   (default: all, in this order)
#   DEVICE=cuda bash results/run_alternatives.sh ...                      (new runs train on the GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
MADE_WITH=(--no-group-by-length --precision fp32)  # the defaults these runs were made with, before length-grouped
# batches and bf16 became train.py's (results/README.md, section 6): a new run here repeats them
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
declare -A RUNS
for seed in 42 43 44; do
  RUNS[topk20-seed$seed]="--method topk --target-speedup 2 --seed $seed"
  RUNS[topk15-seed$seed]="--method topk --target-speedup 1.5 --seed $seed"
  RUNS[topk30-seed$seed]="--method topk --target-speedup 3 --seed $seed"
  RUNS[sm20-seed$seed]="--method skipmiddle --target-speedup 2 --seed $seed"
  RUNS[sm15-seed$seed]="--method skipmiddle --target-speedup 1.5 --seed $seed"
  RUNS[sm30-seed$seed]="--method skipmiddle --target-speedup 3 --seed $seed"
done
RUNS[smoke-topk20]="--method topk --target-speedup 2 --seed 42 --max-train-samples 4000"
RUNS[smoke-t20]="--target-speedup 2 --seed 42 --max-train-samples 4000"
RUNS[smoke-sm20]="--method skipmiddle --target-speedup 2 --seed 42 --max-train-samples 4000"
mkdir -p results/alternatives
for name in ${@:-topk20-seed42 topk20-seed43 topk20-seed44 topk15-seed42 topk30-seed42 sm20-seed42 sm20-seed43 \
                  sm20-seed44 sm15-seed42 sm30-seed42}; do
  [[ -v RUNS[$name] ]] || { echo "unknown run $name (see the list at the top of $0)" >&2; exit 2; }
  out=runs/sst2-alt-$name
  [[ -f results/alternatives/$name.json ]] && { echo "== $name: done (results/alternatives/$name.json)"; continue; }
  mkdir -p "$out"
  if [[ -f $out/resume.pt ]]; then how=(--resume "$out"); else how=(--task sst2 "${MADE_WITH[@]}" ${RUNS[$name]} --device "$DEVICE" --output-dir "$out" --overwrite); fi
  echo "== $name: python train.py ${how[*]}"
  $PY train.py "${how[@]}" 2>> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/alternatives/$name.json"
done
