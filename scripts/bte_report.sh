#!/usr/bin/env bash
# The phonon-BTE κ of SevenNet-0's forces (`paraisite bte`) as a prior of the declared committees (docs/benchmarks.md,
# "κ from SevenNet-0's forces by the phonon BTE"): scripts/decode_committee.py with --bte, on each set whose tables
# exist (outputs/bte/<set>_*.csv; on MIX the materials of a set without a table keep the committee).
#   scripts/bte_report.sh > docs/results/bte/decoders.md     # RUNS=… MEGNET_DFT=… MEGNET_STEP3=… TABLES=…
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-outputs/routed_cv}
MEGNET_DFT=${MEGNET_DFT:-outputs/logoffset_cv/megnet outputs/logoffset_cv/s34}
MEGNET_STEP3=${MEGNET_STEP3:-outputs/aglcosine_cv/cut}
TABLES=${TABLES:-outputs/bte}
PY=${PY:-.venv/bin/python}

# shellcheck source=scripts/row_labels.sh
source scripts/row_labels.sh
graph=("megnet/eform/dft/DATA [cv]|data.log_offset=1.0" "megnet/eform/agl_dft/DATA [cv]|" "m3gnet/eform/dft/DATA [cv]|"
       "chgnet/mptrj/dft/DATA [cv]|")
elemnet="elemnet/eform/agl_dft/DATA [cv]|"
decode() {  # test set, tables, members…
  local test=$1 tables=$2
  shift 2
  [[ -n $tables ]] || { echo "($test: no BTE table yet)"; return; }
  local members=()
  for m in "$@"; do members+=(--member "$m"); done
  # shellcheck disable=SC2086
  $PY scripts/decode_committee.py $RUNS $MEGNET_DFT $MEGNET_STEP3 --test "$test" --bte $tables "${members[@]}"
  echo
}
d1=$(ls "$TABLES"/dataset1_*.csv 2>/dev/null | tr '\n' ' ' || true)
d2=$(ls "$TABLES"/dataset2_*.csv 2>/dev/null | tr '\n' ' ' || true)
rows1=() rows2=() experts_rows=()
for row in "${graph[@]}"; do
  rows1+=("$(name "$row" dataset1)") rows2+=("$(name "$row" dataset2)")
  experts_rows+=("$(name "$row" dataset1)|$(name "$row" dataset2)")
done
decode dataset1 "$d1" "${rows1[@]}" "$(name "$elemnet" dataset1)"
decode dataset2 "$d2" "${rows2[@]}"
decode mix "$d1$d2" "${experts_rows[@]}"  # the materials of a set without a table keep the committee
