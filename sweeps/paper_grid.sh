#!/usr/bin/env bash
# The ParAIsite grid: Steps I, II, III × {dataset1, dataset2, mix}, plus the AFLOW rows (Steps I/II trained on AGL),
# × seeds, then the report (table, heatmap, curves). Published hyper-parameters come from the paper_step* presets;
# extra arguments are Hydra overrides for every run (e.g. a CPU budget, a launcher).
#   SEEDS=1,2,3 PROTOCOL=holdout OUT=outputs/paper_grid sweeps/paper_grid.sh stage_defaults.epochs=100
#   SEEDS=1,2 PROTOCOL=cv FOLDS=0,1,2,3,4 sweeps/paper_grid.sh ...   # 5-fold CV × 2 repeats (stages shared)
# Rerunning the same command resumes: finished stages are loaded (run folder or stage store), not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-1,2,3,4,5,6,7,8,9}
PROTOCOL=${PROTOCOL:-holdout}
OUT=${OUT:-outputs/paper_grid}/$PROTOCOL
PY=${PY:-.venv/bin/python}
FOLDS=${FOLDS:-0,1,2,3,4}
common=(seed="$SEEDS" protocol="$PROTOCOL" progress_bar=false)
if [ "$PROTOCOL" = cv ]; then common+=(fold="$FOLDS"); fi

$PY train.py -m experiment=paper_step1 data=dataset1,dataset2,mix "${common[@]}" hydra.sweep.dir="$OUT/step1" "$@"
$PY train.py -m experiment=paper_step2 data=dataset1,dataset2,mix "${common[@]}" hydra.sweep.dir="$OUT/step2" "$@"
$PY train.py -m experiment=paper_step2 finetune=agl data=agl "${common[@]}" hydra.sweep.dir="$OUT/step2_agl" "$@"
$PY train.py -m experiment=paper_step3 data=dataset1,dataset2,mix "${common[@]}" hydra.sweep.dir="$OUT/step3" "$@"
# last: the scratch → AGL row is the only one that shares no stage with another row
$PY train.py -m experiment=paper_step1 finetune=agl data=agl "${common[@]}" hydra.sweep.dir="$OUT/step1_agl" "$@"
$PY -m paraisite.cli report "$OUT" --output "$OUT/report"
