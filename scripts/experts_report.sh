#!/usr/bin/env bash
# Per-source experts on MIX (docs/results/experts_cv): MIX is Dataset1 (binaries) + Dataset2 (half-Heuslers), split
# per source. Declared before the runs: for each row — MEGNet dft and agl_dft, M3GNet dft, CHGNet dft, ElemNet
# agl_dft — the experts (each MIX material predicted out of fold by the row trained on its own set) against the row
# trained on MIX, and the committees of the graph rows (and + ElemNet) of experts against those of MIX-trained rows.
#   scripts/experts_report.sh     # RUNS=outputs/routed_cv MEGNET_DFT="…" MEGNET_STEP3=… OUTPUT=…
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-outputs/routed_cv}                         # sweeps/backbones_cv.sh OUT of the M3GNet, CHGNet, ElemNet rows
MEGNET_DFT=${MEGNET_DFT:-outputs/logoffset_cv/megnet outputs/logoffset_cv/s34}  # MEGNet dft (the log-offset arms)
MEGNET_STEP3=${MEGNET_STEP3:-outputs/aglcosine_cv/cut}  # MEGNet agl_dft at the CV grid's cut
OUTPUT=${OUTPUT:-docs/results/experts_cv}
PY=${PY:-.venv/bin/python}

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
rows=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0" "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
      "chgnet/mptrj/dft/DATA [cv]|" "elemnet/eform/agl_dft/DATA [cv]|")
args=() graph_mix=() graph_experts=()
for row in "${rows[@]}"; do
  args+=(--experts "$(name "$row" dataset1)" "$(name "$row" dataset2)" --compare "$(experts "$row")" "$(name "$row" mix)")
  if [[ $row != elemnet* ]]; then graph_mix+=("$(name "$row" mix)") graph_experts+=("$(experts "$row")"); fi
done
elemnet_mix=$(name "${rows[4]}" mix) elemnet_experts=$(experts "${rows[4]}")
args+=(--committee "${graph_mix[@]}" --committee "${graph_experts[@]}"
       --committee "${graph_mix[@]}" "$elemnet_mix" --committee "${graph_experts[@]}" "$elemnet_experts"
       --compare "$(committee "${graph_experts[@]}")" "$(committee "${graph_mix[@]}")"
       --compare "$(committee "${graph_experts[@]}" "$elemnet_experts")" "$(committee "${graph_mix[@]}" "$elemnet_mix")"
       --compare "$(committee "${graph_experts[@]}" "$elemnet_experts")" "$(committee "${graph_experts[@]}")"
       --compare "$(committee "${graph_experts[@]}")" "${graph_mix[1]}")  # − the shipped model's recipe (Step III on MIX)
# shellcheck disable=SC2086
$PY -m paraisite.cli report $RUNS $MEGNET_DFT $MEGNET_STEP3 --output "$OUTPUT" "${args[@]}"
rm -f "$OUTPUT"/*.png  # tables only
