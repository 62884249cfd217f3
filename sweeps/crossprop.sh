#!/usr/bin/env bash
# Cross-property transfer benchmark (Gupta et al., Nat. Commun. 12, 6595, 2021): ElemNet × {scratch, eform → fine-tune
# (all layers), eform → features (random forest on hidden layers FEATURE_LAYERS: the last and the 4th)} × the crossprop
# datasets × seeds, then the
# table beside the paper's numbers (docs/benchmarks.md). Extra arguments are Hydra overrides for every run.
#   DATASETS=exfoliation_energy,slme SEEDS=1,2,3 sweeps/crossprop.sh hydra/launcher=joblib
set -euo pipefail
cd "$(dirname "$0")/.."
DATASETS=${DATASETS:-$(ls conf/data/crossprop | sed 's/\.yaml$//' | paste -sd, -)}
SEEDS=${SEEDS:-1,2,3}
FEATURE_LAYERS=${FEATURE_LAYERS:--1,4}
OUT=${OUT:-outputs/crossprop}
PY=${PY:-.venv/bin/python}
data=$(echo "$DATASETS" | sed 's|[^,][^,]*|crossprop/&|g')
# on_bad=skip: two JARVIS sets hold spreadsheet-mangled formulas ("2-Feb"); they are listed in each run's log
common=(backbone=elemnet "data=$data" "seed=$SEEDS" progress_bar=false datamodule.on_bad=skip)

$PY train.py -m pretrain=scratch,eform finetune=dft "${common[@]}" hydra.sweep.dir="$OUT/finetune" "$@"
$PY train.py -m pretrain=eform finetune=features "stage_overrides.features_layer=$FEATURE_LAYERS" "${common[@]}" \
  hydra.sweep.dir="$OUT/features" "$@"
$PY scripts/crossprop.py "$OUT"
