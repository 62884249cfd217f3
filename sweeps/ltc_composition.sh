#!/usr/bin/env bash
# κ by composition: ElemNet × {scratch, eform, gap} × {dft, agl_dft} × {dataset1, dataset2, mix}, plus the AGL-only rows
# (finetune=agl, tested on every set) × seeds, then the report. AGL is read by composition (ltc/agl_composition.csv).
# Put its report beside the structure (MEGNet) grid's: `paraisite report outputs/paper_grid outputs/ltc_composition`.
#   SEEDS=1,2,3 PRETRAIN=scratch,eform sweeps/ltc_composition.sh stage_by_data.agl.epochs=20
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-1,2,3,4,5,6,7,8,9}
PRETRAIN=${PRETRAIN:-scratch,eform,gap}
OUT=${OUT:-outputs/ltc_composition}
PY=${PY:-.venv/bin/python}
common=(backbone=elemnet "pretrain=$PRETRAIN" "seed=$SEEDS" progress_bar=false)

$PY train.py -m finetune=dft,agl_dft data=dataset1,dataset2,mix "${common[@]}" hydra.sweep.dir="$OUT/dft" "$@"
$PY train.py -m finetune=agl data=agl "${common[@]}" hydra.sweep.dir="$OUT/agl" "$@"
$PY -m paraisite.cli report "$OUT" --output "$OUT/report"
