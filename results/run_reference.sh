#!/usr/bin/env bash
# The dense reference for SST-2, chosen by a rule fixed before any of these runs was seen:
#   hold out 2,000 train sentences (train.py --holdout 2000: the same rows in every run), train one
#   epoch on the other 65,349 at each learning rate of {5e-5, 1e-4, 2e-4} with seed 42, and take the
#   learning rate with the best held-out accuracy (a tie goes to the smaller one). Dev is reported but
#   not used to choose. The HF loop (results/hf_reference.py) and train.py without gradient clipping
#   run on the same split, to see how much of a gap between the two loops is the loop.
# hf-full-seedS: the HF loop on all of train at lr 1e-4, as the one run that scored 90.25 was, with seeds
#   42, 43 and 44 (the seed sets the classifier's init and dropout; the loop's data order is fixed), to
#   tell a lucky draw from a real difference with train.py's dense stages (88.57 +- 0.35 over 3 seeds).
# Each run writes runs/sst2-ref-NAME/ and copies its metrics to results/reference/NAME.json.
#   GLUE_DIR=../shared/data/glue bash results/run_reference.sh [NAME ...]   (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# one core and one thread: the other core stays free for other work, and timings do not fight over threads
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
declare -A RUNS=(
  [lr1e-4]="train.py --no-skim --holdout 2000 --lr 1e-4"
  [lr2e-4]="train.py --no-skim --holdout 2000 --lr 2e-4"
  [lr5e-5]="train.py --no-skim --holdout 2000 --lr 5e-5"
  [hf-lr1e-4]="results/hf_reference.py --holdout 2000 --lr 1e-4"
  [lr1e-4-noclip]="train.py --no-skim --holdout 2000 --lr 1e-4 --max-grad-norm 0"
  [hf-full-seed42]="results/hf_reference.py --lr 1e-4 --seed 42"
  [hf-full-seed43]="results/hf_reference.py --lr 1e-4 --seed 43"
  [hf-full-seed44]="results/hf_reference.py --lr 1e-4 --seed 44"
)
mkdir -p results/reference
for name in ${@:-lr1e-4 lr2e-4 lr5e-5 hf-lr1e-4 lr1e-4-noclip hf-full-seed42 hf-full-seed43 hf-full-seed44}; do
  out=runs/sst2-ref-$name
  [[ -f results/reference/$name.json ]] && { echo "== $name: done (results/reference/$name.json)"; continue; }
  mkdir -p "$out"
  echo "== $name: python ${RUNS[$name]}"
  if [[ ${RUNS[$name]} == train.py* ]]; then where=(--task sst2 --output-dir "$out"); else where=(--out "$out/metrics.json"); fi
  $PY ${RUNS[$name]} "${where[@]}" 2> "$out/train.log" | tail -1
  cp "$out/metrics.json" "results/reference/$name.json"
done
