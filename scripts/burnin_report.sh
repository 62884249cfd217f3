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

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
shared=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0, " "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
        "chgnet/mptrj/dft/DATA [cv]|" "elemnet/eform/agl_dft/DATA [cv]|")  # + the burn-in's key below
spec() {  # row burn-in(25|—) → its spec
  echo "${1}$KEY=$2"
}
args=()
for burn in 25 —; do
  for row in "${shared[@]}"; do
    args+=(--experts "$(name "$(spec "$row" $burn)" dataset1)" "$(name "$(spec "$row" $burn)" dataset2)")
  done
done
for data in dataset1 dataset2; do
  for row in "${shared[@]}"; do args+=(--compare "$(name "$(spec "$row" 25)" $data)" "$(name "$(spec "$row" —)" $data)"); done
done
for data in dataset1 dataset2 experts; do
  graph=() plain=()
  for row in "${shared[@]:0:4}"; do
    if [[ $data == experts ]]; then graph+=("$(experts "$(spec "$row" 25)")") plain+=("$(experts "$(spec "$row" —)")")
    else graph+=("$(name "$(spec "$row" 25)" $data)") plain+=("$(name "$(spec "$row" —)" $data)"); fi
  done
  args+=(--committee "${graph[@]}" --committee "${plain[@]}" --compare "$(committee "${graph[@]}")" "$(committee "${plain[@]}")")
done
# shellcheck disable=SC2086
$PY -m paraisite.cli report $BASE $BURNIN --output "$OUTPUT" "${args[@]}"
rm -f "$OUTPUT"/*.png  # tables only
