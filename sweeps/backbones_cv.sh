#!/usr/bin/env bash
# Backbones × chains × datasets under protocol=cv: each backbone from its own pre-trained weights (MEGNet and
# M3GNet: matgl's formation-energy sets; CHGNet, SevenNet: their MPtrj energy models; ElemNet: the formation-energy
# source model; magpie and quasiharmonic have none: pretrain=scratch), chains dft (Step II), agl_dft (Step III),
# multifidelity and features (the frozen backbone + a scikit-learn regressor: stage_overrides.regressor=…); 5 folds ×
# SEEDS repeats; then the report. Extra arguments are Hydra overrides for every run (a budget, a launcher). Stages shared with the
# paper grid (MEGNet dft/agl_dft) are reused from the stage store, not retrained. Rerunning resumes.
#   BACKBONES=m3gnet,chgnet CHAINS=dft DATA=dataset1 sweeps/backbones_cv.sh stage_defaults.epochs=100 threads=1
set -euo pipefail
cd "$(dirname "$0")/.."
BACKBONES=${BACKBONES:-megnet,m3gnet,chgnet,elemnet}
CHAINS=${CHAINS:-dft,agl_dft,multifidelity}
DATA=${DATA:-dataset1,dataset2,mix}
SEEDS=${SEEDS:-1,2}
FOLDS=${FOLDS:-0,1,2,3,4}
OUT=${OUT:-outputs/backbones_cv}
PY=${PY:-.venv/bin/python}
. sweeps/pretrain_of.sh

for backbone in ${BACKBONES//,/ }; do
  pretrain=$(pretrain_of "$backbone")
  for chain in ${CHAINS//,/ }; do
    $PY train.py -m backbone="$backbone" pretrain=$pretrain finetune="$chain" data="$DATA" seed="$SEEDS" protocol=cv \
      fold="$FOLDS" progress_bar=false hydra.sweep.dir="$OUT/$backbone/$chain" "$@"
  done
done
$PY -m paraisite.cli report "$OUT" --output "$OUT/report"
