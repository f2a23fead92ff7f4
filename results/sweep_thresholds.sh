#!/usr/bin/env bash
# Each skimming SST-2 run's model, already trained by results/run_sst2.sh, re-evaluated on dev at other
# keep thresholds: the operating points one model offers without retraining (train.py --keep-threshold;
# 0.5, the paper's argmax, is the run's own row). Each point goes to runs/sst2-NAME/threshold-T/; then
# collect.py adds them to results/sst2.md.
#   GLUE_DIR=../shared/data/glue bash results/sweep_thresholds.sh [NAME ...]   (default: every skimming run)
# THRESHOLDS (default "0.1 0.2 0.3 0.7 0.8 0.9") overrides the sweep; TIMING_REPEATS (default 0: FLOPs only)
# also times each point, as train.py does (about 15 s more a point here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
THRESHOLDS=${THRESHOLDS:-0.1 0.2 0.3 0.7 0.8 0.9}
if (($#)); then dirs=("${@/#/runs/sst2-}"); else dirs=(runs/sst2-*/); fi
for dir in "${dirs[@]}"; do
  dir=${dir%/}
  grep -qs "\"skim\"" "$dir/config.json" || continue  # a dense run (or one still training) has no predictors to move
  for t in $THRESHOLDS; do
    echo "== $dir, keep threshold $t"
    $PY train.py --task sst2 --eval-only --checkpoint "$dir" --keep-threshold "$t" \
      --timing-repeats "${TIMING_REPEATS:-0}" --output-dir "$dir/threshold-$t" 2> "$dir/threshold-$t.log" | tail -1 \
      || { echo "error: train.py failed; see $dir/threshold-$t.log" >&2; exit 1; }
  done
done
$PY results/collect.py
