#!/usr/bin/env bash
# Cross-property transfer at full scale (Gupta et al., Nat. Commun. 12, 6595, 2021), per set and mode:
#   magpie       Magpie elemental statistics + gradient boosting (small grid chosen on validation): scratch with
#                physical attributes
#   scratch      ElemNet from random weights on elemental fractions
#   tl_finetune  ElemNet from the formation-energy source model, all layers trained (head = the source output layer)
#   tl_reinit    the same with a fresh head (policy reinit_head); scripts/crossprop.py keeps, per set, whichever of the
#                two heads has the lower validation MAE as tl_finetune
#   tl_features  gradient boosting on the source model's activations of hidden layer FEATURE_LAYERS (chosen later on
#                validation by scripts/crossprop.py)
# PART=blind trains on the whole train.csv (validation carved, no test) and predicts the set's held-back formulas
# (BLIND/<set>/formulas.csv → predictions.csv); PART=carved carves a 20 % test slice (the table's test MAE).
# ElemNet gets a sample budget: SAMPLES / n epochs per set (at least 10, at most 150), batch 128, lr 5e-4 with cosine
# decay to 1 % over the stage; the best validation epoch is kept. Rerunning resumes (finished runs are loaded).
# SEEDS=1,2 adds seed 2 beside finished seed-1 runs (one multirun per seed; a carved run's seed also picks its
# test slice, so the seed spread covers training noise and the slice).
#   PART=blind MODES=magpie,scratch DATASETS=slme,spillage sweeps/crossprop.sh threads=1
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${PART:-blind}
MODES=${MODES:-magpie,scratch,tl_finetune,tl_reinit,tl_features}
DATASETS=${DATASETS:-$(ls conf/data/crossprop | sed 's/\.yaml$//' | paste -sd, -)}
SEEDS=${SEEDS:-1}
SAMPLES=${SAMPLES:-150000}
FEATURE_LAYERS=${FEATURE_LAYERS:-2,4,7}
BLIND=${BLIND:-../shared/blind/crossprop}
OUT=${OUT:-outputs/crossprop}/$PART
PY=${PY:-.venv/bin/python}
DATA_DIR=${PARAISITE_DATA_DIR:-data}
# The formation-energy source model: `source_training` of conf/train.yaml (cached: trained by the first TL run that
# needs it, ≈ 18 min on one core; resumable).

for set in ${DATASETS//,/ }; do
  n=$(($(wc -l < "$DATA_DIR/crossprop/$set/train.csv") - 1))
  epochs=$(( SAMPLES / n )); epochs=$(( epochs < 10 ? 10 : epochs > 150 ? 150 : epochs ))
  common=("data=crossprop/$set" progress_bar=false datamodule.on_bad=skip)
  if [ "$PART" = blind ]; then common+=("data.predict_file=$(realpath "$BLIND/$set/formulas.csv")"); fi
  elemnet=(backbone=elemnet stage_overrides.epochs=$epochs stage_overrides.batch_size=128 stage_overrides.lr=5e-4
           stage_overrides.decay_steps=0 stage_overrides.final_lr_fraction=0.01)
  for mode in ${MODES//,/ }; do
    case $mode in
      magpie) args=(backbone=magpie finetune=features stage_overrides.regressor=hgb_search) ;;
      scratch) args=("${elemnet[@]}" pretrain=scratch finetune=dft) ;;
      tl_finetune) args=("${elemnet[@]}" pretrain=eform finetune=dft) ;;
      tl_reinit) args=("${elemnet[@]}" pretrain=eform finetune=dft stage_overrides.policy=reinit_head) ;;
      tl_features) args=(backbone=elemnet pretrain=eform finetune=features stage_overrides.regressor=hist_gradient_boosting
                         "stage_overrides.features_layer=$FEATURE_LAYERS") ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    runs=1
    if [ "$mode" = tl_features ]; then runs=$(echo "$FEATURE_LAYERS" | tr , '\n' | wc -l); fi
    for seed in ${SEEDS//,/ }; do  # one multirun per seed: its folders end in -s<seed>, so seeds add to a set × mode
      finished=$( (grep -ls '"status": "ok"' "$OUT/$set/$mode"/*-s"$seed"/results.json 2>/dev/null || true) | wc -l)
      if [ "$finished" -ge "$runs" ]; then continue; fi  # every run of this set × mode × seed finished
      $PY train.py -m "${args[@]}" "${common[@]}" seed="$seed" hydra.sweep.dir="$OUT/$set/$mode" "$@"
    done
  done
done
