#!/usr/bin/env bash
# SevenNet-0 as a fifth backbone (docs/results/sevennet_cv), declared before its runs: SevenNet dft against MEGNet,
# M3GNet and CHGNet dft on the set trained on (Dataset1, Dataset2, MIX), and the committee of the four graph rows of
# the experts section with SevenNet against without, on Dataset1 and Dataset2 and as per-source experts on MIX.
#   scripts/sevennet_report.sh     # SEVENNET=outputs/sevennet_cv RUNS="…" OUTPUT=…
set -euo pipefail
cd "$(dirname "$0")/.."
SEVENNET=${SEVENNET:-outputs/sevennet_cv}
RUNS=${RUNS:-outputs/routed_cv outputs/logoffset_cv/megnet outputs/logoffset_cv/s34 outputs/aglcosine_cv/cut outputs/chgnet_s36_cv}
OUTPUT=${OUTPUT:-docs/results/sevennet_cv}
PY=${PY:-.venv/bin/python}

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
sevennet="sevennet/mptrj/dft/DATA [cv]|"
graph=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0" "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
       "chgnet/mptrj/dft/DATA [cv]|")
args=()
for data in dataset1 dataset2 mix; do
  for row in "${graph[0]}" "${graph[2]}" "${graph[3]}"; do
    args+=(--compare "$(name "$sevennet" $data)" "$(name "$row" $data)")
  done
done
for row in "${graph[@]}" "$sevennet"; do
  args+=(--experts "$(name "$row" dataset1)" "$(name "$row" dataset2)")
done
for data in dataset1 dataset2 experts; do
  four=()
  for row in "${graph[@]}"; do
    if [[ $data == experts ]]; then four+=("$(experts "$row")"); else four+=("$(name "$row" $data)"); fi
  done
  if [[ $data == experts ]]; then five=("${four[@]}" "$(experts "$sevennet")"); else five=("${four[@]}" "$(name "$sevennet" $data)"); fi
  args+=(--committee "${four[@]}" --committee "${five[@]}" --compare "$(committee "${five[@]}")" "$(committee "${four[@]}")")
done
# shellcheck disable=SC2086
$PY -m paraisite.cli report $RUNS $SEVENNET --output "$OUTPUT" "${args[@]}" > /dev/null
rm -f "$OUTPUT"/*.png  # tables only
echo "wrote $OUTPUT"
