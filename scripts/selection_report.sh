#!/usr/bin/env bash
# The recipe chosen per fold on validation (docs/results/selection_cv), declared before any score: among the graph
# rows of the experts section, trained on Dataset1, Dataset2 and MIX, each choice against MEGNet agl_dft (the paper's
# recipe) and against the committee of the same rows; on MIX also the per-source experts of the Dataset1 and
# Dataset2 choices against the committee of the rows' experts. ElemNet agl_dft is no candidate: its DFT stage
# validates on other records (`--select` refuses it).
#   scripts/selection_report.sh     # RUNS="…" OUTPUT=…
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-outputs/routed_cv outputs/logoffset_cv/megnet outputs/logoffset_cv/s34 outputs/aglcosine_cv/cut outputs/chgnet_s36_cv}
OUTPUT=${OUTPUT:-docs/results/selection_cv}
PY=${PY:-.venv/bin/python}

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
rows=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0" "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
      "chgnet/mptrj/dft/DATA [cv]|")
chosen() {  # data → the label of its choice
  local text="selected on validation: $(name "${rows[0]}" "$1")"
  for row in "${rows[@]:1}"; do text+=" or $(name "$row" "$1")"; done
  echo "$text"
}
args=() expert_rows=()
for data in dataset1 dataset2 mix; do
  candidates=()
  for row in "${rows[@]}"; do candidates+=("$(name "$row" $data)"); done
  args+=(--select "${candidates[@]}" --committee "${candidates[@]}"
         --compare "$(chosen $data)" "${candidates[1]}" --compare "$(chosen $data)" "$(committee "${candidates[@]}")")
done
for row in "${rows[@]}"; do
  args+=(--experts "$(name "$row" dataset1)" "$(name "$row" dataset2)")
  expert_rows+=("$(experts "$row")")
done
args+=(--experts "$(chosen dataset1)" "$(chosen dataset2)" --committee "${expert_rows[@]}"
       --compare "per-source experts: $(chosen dataset1) + $(chosen dataset2)" "$(committee "${expert_rows[@]}")")
# shellcheck disable=SC2086
$PY -m paraisite.cli report $RUNS --output "$OUTPUT" "${args[@]}" > /dev/null
rm -f "$OUTPUT"/*.png  # tables only
echo "wrote $OUTPUT"
