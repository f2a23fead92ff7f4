#!/usr/bin/env bash
# The SST-2 runs behind results/sst2.md, one after another (full train set, default checkpoint,
# this machine: 2 CPU cores). Each writes runs/sst2-*/metrics.json; then collect.py makes the table.
# The fd-* runs ("from dense") fine-tune runs/sst2-dense's model for a second epoch; the third-* runs
# take a second-stage model half an epoch further.
#   GLUE_DIR=../shared/data/glue bash results/run_sst2.sh [NAME ...]     (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
declare -A RUNS=(
  [paper]="--skim-coef 0.3 --mu0 5 --predictor-grad joint"   # the paper's settings: tau 0.1, mu0 5, lambda 0.3 (Table 2)
  [dense]="--no-skim"                             # the baseline, same recipe
  [dense-seed43]="--no-skim --seed 43"            # the baseline again, another seed: how much one seed's numbers move
  [mu2]="--mu0 2 --skim-coef 0.3 --predictor-grad joint"   # a weaker unbalanced init, so the predictors can learn
  [mu2-lam0.2]="--mu0 2 --skim-coef 0.2 --predictor-grad joint"   # the same, less pressure to skim
  [mu2-lam0.1]="--mu0 2 --skim-coef 0.1 --predictor-grad joint"
  [sep-lam0.3]="--mu0 2 --skim-coef 0.3 --predictor-grad separate"   # the decisions' gradient kept out of the encoder; = train.py's defaults
  [sep-lam0.3-seed43]="--mu0 2 --skim-coef 0.3 --predictor-grad separate --seed 43"   # the defaults again, against dense-seed43
  [sep-lam0.3-plr1e-4]="--mu0 2 --skim-coef 0.3 --predictor-grad separate --predictor-lr 1e-4"
  [sep-lam0.5-plr1e-4]="--mu0 2 --skim-coef 0.5 --predictor-grad separate --predictor-lr 1e-4"  # more pressure, predictors learning 2x faster
  # Two stages: a second epoch that starts from the dense run's fine-tuned model (so run "dense" first).
  [fd-dense]="--model runs/sst2-dense --no-skim"  # the reference for this recipe: the second epoch, dense
  [fd-sep-lam0.3]="--model runs/sst2-dense --mu0 2 --skim-coef 0.3 --predictor-grad separate"
  [fd-sep-lam0.5]="--model runs/sst2-dense --mu0 2 --skim-coef 0.5 --predictor-grad separate"
  [fd-sep-lam0.5-plr1e-4]="--model runs/sst2-dense --mu0 2 --skim-coef 0.5 --predictor-grad separate --predictor-lr 1e-4"
  [fd-sep-lam0.5-plr1e-4-tau1]="--model runs/sst2-dense --mu0 2 --skim-coef 0.5 --predictor-grad separate --predictor-lr 1e-4 --tau 1"  # the same, tau 1 (the released code's): same forward samples, a smoother, smaller gradient
  # The same second epoch from the seed-43 dense run, with seed 43: how much the two-stage rows move with the seed.
  [fd-dense-seed43]="--model runs/sst2-dense-seed43 --no-skim --seed 43"
  [fd-sep-lam0.3-seed43]="--model runs/sst2-dense-seed43 --mu0 2 --skim-coef 0.3 --predictor-grad separate --seed 43"
  # A third stage, half an epoch: the dense reference, then the skimming models fine-tuned with their
  # predictors frozen (--freeze-predictors), the encoder adapting to the decisions it will meet at evaluation.
  [third-dense]="--model runs/sst2-fd-dense --no-skim --epochs 0.5"
  [third-sep-lam0.5-plr1e-4]="--model runs/sst2-fd-sep-lam0.5-plr1e-4 --freeze-predictors 0.5 --epochs 0.5"
  [third-tau1]="--model runs/sst2-fd-sep-lam0.5-plr1e-4-tau1 --freeze-predictors 0.5 --epochs 0.5"
  # the same third stage, a whole epoch long
  [third-dense-ep1]="--model runs/sst2-fd-dense --no-skim"
  [third-sep-lam0.5-plr1e-4-ep1]="--model runs/sst2-fd-sep-lam0.5-plr1e-4 --freeze-predictors 0.5"
  # The whole two-stage-then-frozen chain again with seed 43, from the seed-43 dense run: does the point near 2x hold?
  [fd-sep-lam0.5-plr1e-4-seed43]="--model runs/sst2-dense-seed43 --mu0 2 --skim-coef 0.5 --predictor-grad separate --predictor-lr 1e-4 --seed 43"
  [third-dense-ep1-seed43]="--model runs/sst2-fd-dense-seed43 --no-skim --seed 43"
  [third-sep-lam0.5-plr1e-4-ep1-seed43]="--model runs/sst2-fd-sep-lam0.5-plr1e-4-seed43 --freeze-predictors 0.5 --seed 43"
  # The same second epoch, distilled from the dense run (not in the paper; --distill-coef 0.5, --distill-temp 2).
  [fd-kd-dense]="--model runs/sst2-dense --teacher runs/sst2-dense --no-skim"  # the reference for this recipe
  [fd-kd-sep-lam0.5-plr1e-4]="--model runs/sst2-dense --teacher runs/sst2-dense --mu0 2 --skim-coef 0.5 --predictor-grad separate --predictor-lr 1e-4"
)
for name in "${@:-paper dense dense-seed43 mu2 mu2-lam0.2 mu2-lam0.1 sep-lam0.3 sep-lam0.3-seed43 sep-lam0.3-plr1e-4 sep-lam0.5-plr1e-4 fd-dense fd-sep-lam0.3 fd-sep-lam0.5 fd-sep-lam0.5-plr1e-4 fd-sep-lam0.5-plr1e-4-tau1 fd-dense-seed43 fd-sep-lam0.3-seed43 fd-kd-dense fd-kd-sep-lam0.5-plr1e-4 third-dense third-sep-lam0.5-plr1e-4 third-tau1 third-dense-ep1 third-sep-lam0.5-plr1e-4-ep1 fd-sep-lam0.5-plr1e-4-seed43 third-dense-ep1-seed43 third-sep-lam0.5-plr1e-4-ep1-seed43}"; do
  for n in $name; do
    echo "== sst2-$n: python train.py --task sst2 ${RUNS[$n]} --output-dir runs/sst2-$n"
    mkdir -p "runs/sst2-$n"
    $PY train.py --task sst2 ${RUNS[$n]} --output-dir "runs/sst2-$n" 2> "runs/sst2-$n/train.log"
    tail -c 300 "runs/sst2-$n/train.log"
    if [[ "${RUNS[$n]}" != *--no-skim* ]]; then  # the same model without its predictors: every token kept
      $PY train.py --task sst2 --eval-only --no-skim --checkpoint "runs/sst2-$n" --timing-repeats 0 \
        --output-dir "runs/sst2-$n/encoder-only" 2> "runs/sst2-$n/encoder-only.log"
    fi
  done
done
$PY results/collect.py
