#!/usr/bin/env bash
# A burn-in for the DFT stage (docs/results/burnin_cv): declared before the runs, the best validation epoch chosen
# from epoch 25 on (`++finetune.stages.dft.select_from_epoch=25`) against any epoch, for MEGNet dft and agl_dft,
# M3GNet dft, CHGNet dft and ElemNet agl_dft on Dataset1 and Dataset2 (same folds, seeds and stages: runs whose best
# epoch was ≥ 25 are the same runs), then the committees of the four graph rows on each set and the per-source
# experts' committees on MIX, with the burn-in against without.
#   scripts/burnin_report.sh     # BASE="…" BURNIN=outputs/burnin_cv OUTPUT=…
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-outputs/routed_cv outputs/aglcosine_cv/cut outputs/logoffset_cv/megnet outputs/logoffset_cv/s34}
BURNIN=${BURNIN:-outputs/burnin_cv}
OUTPUT=${OUTPUT:-docs/results/burnin_cv}
PY=${PY:-.venv/bin/python}
KEY=finetune.stages.dft.select_from_epoch

# row label with DATA in place of the data set, and the variant keys it shares with its burn-in twin
rows=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0, " "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
      "chgnet/mptrj/dft/DATA [cv]|" "elemnet/eform/agl_dft/DATA [cv]|")
name() {  # row data burn-in(25|—) → its label
  local base=${1%|*} shared=${1#*|}
  echo "${base/DATA/$2} (${shared}$KEY=$3)"
}
experts() {  # row burn-in → the label of its experts row
  local base=${1%|*} shared=${1#*|}
  echo "${base/DATA/dataset1|dataset2} (per-source experts; ${shared}$KEY=$2)"
}
committee() {  # rows → the committee's label
  local text="committee: $1"
  shift
  for row in "$@"; do text+=" + $row"; done
  echo "$text"
}
args=()
for burn in 25 —; do
  for row in "${rows[@]}"; do args+=(--experts "$(name "$row" dataset1 $burn)" "$(name "$row" dataset2 $burn)"); done
done
for data in dataset1 dataset2; do
  for row in "${rows[@]}"; do args+=(--compare "$(name "$row" $data 25)" "$(name "$row" $data —)"); done
done
for data in dataset1 dataset2 experts; do
  graph=() plain=()
  for row in "${rows[@]:0:4}"; do
    if [[ $data == experts ]]; then graph+=("$(experts "$row" 25)") plain+=("$(experts "$row" —)")
    else graph+=("$(name "$row" $data 25)") plain+=("$(name "$row" $data —)"); fi
  done
  args+=(--committee "${graph[@]}" --committee "${plain[@]}" --compare "$(committee "${graph[@]}")" "$(committee "${plain[@]}")")
done
# shellcheck disable=SC2086
$PY -m paraisite.cli report $BASE $BURNIN --output "$OUTPUT" "${args[@]}"
rm -f "$OUTPUT"/*.png
