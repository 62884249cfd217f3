#!/usr/bin/env bash
# One recipe arm against the rows without it, declared before the runs: the arm sets KEY=ARM (a Hydra override) and
# runs into ARM_RUNS on the same folds, seeds and stored stages as the rows in BASE. For each row of ROWS (specs
# "LABEL|VARIANT, ", scripts/row_labels.sh) trained on Dataset1 and on Dataset2: the arm against without, then the
# committees of the graph rows (all but ElemNet) on each set and of their per-source experts on MIX, arm against
# without. Defaults: the burn-in (docs/results/burnin_cv, `++finetune.stages.dft.select_from_epoch=25`).
#   scripts/arm_report.sh     # KEY=… ARM=… ROWS="…;…" BASE="…" ARM_RUNS=… OUTPUT=…
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-outputs/routed_cv outputs/aglcosine_cv/cut outputs/logoffset_cv/megnet outputs/logoffset_cv/s34}
ARM_RUNS=${ARM_RUNS:-outputs/burnin_cv}
OUTPUT=${OUTPUT:-docs/results/burnin_cv}
KEY=${KEY:-finetune.stages.dft.select_from_epoch}
ARM=${ARM:-25}
ROWS=${ROWS:-"megnet/eform/dft/DATA [cv]|data.log_offset=1.0, ;megnet/eform/agl_dft/DATA [cv]|;m3gnet/eform/dft/DATA [cv]|;chgnet/mptrj/dft/DATA [cv]|;elemnet/eform/agl_dft/DATA [cv]|"}
PY=${PY:-.venv/bin/python}

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
IFS=';' read -r -a shared <<< "$ROWS"  # + the arm's key below
spec() {  # row value(ARM|—) → its spec
  echo "${1}$KEY=$2"
}
args=()
for value in "$ARM" —; do
  for row in "${shared[@]}"; do
    args+=(--experts "$(name "$(spec "$row" "$value")" dataset1)" "$(name "$(spec "$row" "$value")" dataset2)")
  done
done
for data in dataset1 dataset2; do
  for row in "${shared[@]}"; do
    args+=(--compare "$(name "$(spec "$row" "$ARM")" $data)" "$(name "$(spec "$row" —)" $data)")
  done
done
for data in dataset1 dataset2 experts; do
  graph=() plain=()
  for row in "${shared[@]}"; do
    [[ $row == elemnet* ]] && continue
    if [[ $data == experts ]]; then graph+=("$(experts "$(spec "$row" "$ARM")")") plain+=("$(experts "$(spec "$row" —)")")
    else graph+=("$(name "$(spec "$row" "$ARM")" $data)") plain+=("$(name "$(spec "$row" —)" $data)"); fi
  done
  args+=(--committee "${graph[@]}" --committee "${plain[@]}" --compare "$(committee "${graph[@]}")" "$(committee "${plain[@]}")")
done
# shellcheck disable=SC2086
$PY -m paraisite.cli report $BASE $ARM_RUNS --output "$OUTPUT" "${args[@]}"
rm -f "$OUTPUT"/*.png  # tables only
