#!/usr/bin/env bash
# The phonon-BTE κ as a network input (docs/benchmarks.md, "The phonon-BTE κ as a network input" and the M3GNet
# section after it): the report of each backbone's dft row with and without the BTE input under CV, with their paired
# comparisons (docs/results/bte_input_cv/); per pair and set, the `bte` decoder on each row's ensemble
# (scripts/decode_committee.py --bte, the row as the only member) and the rows' ensembles paired with and without the
# prior (scripts/paired_ensembles.py); then the committee of the BTE-input rows (`committee`: paraisite report
# --committee → docs/results/bte_input_cv/committee/, and its decoders).
#   scripts/bte_input_report.sh > docs/results/bte_input_cv/decoders.md     # OUT=… TABLES=… PAIRS=…
#   scripts/bte_input_report.sh committee > docs/results/bte_input_cv/committee.md
# Without the run folders: tar xzf docs/results/bte_input_cv/runs.tar.gz -C DIR, then OUT=DIR/bte_input_cv scripts/…
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bte_input_cv}
TABLES=${TABLES:-docs/results/bte}
PAIRS=${PAIRS:-megnet:megnet_bte m3gnet:m3gnet_bte}  # without:with
PY=${PY:-.venv/bin/python}
SETS=(dataset1 dataset2 mix)
row() { echo "$1/eform/dft/$2 [cv]"; }
side() { local backbone=${1%+bte}; echo "$(row "$backbone" "$2")${1#"$backbone"}"; }  # "megnet+bte" → "<row>+bte"
tables() { ls "$TABLES"/*.csv; }

if [[ ${1:-} == committee ]]; then
  committee=()
  for data in "${SETS[@]}"; do
    members=()
    for pair in $PAIRS; do members+=("$(row "${pair#*:}" $data)"); done
    committee+=(--committee "${members[@]}")
  done
  $PY -m paraisite.cli report "$OUT" --output docs/results/bte_input_cv/committee "${committee[@]}" >&2
  cat docs/results/bte_input_cv/committee/committees.md
  echo
  for data in "${SETS[@]}"; do
    members=()
    for pair in $PAIRS; do members+=(--member "$(row "${pair#*:}" $data)"); done
    # shellcheck disable=SC2046
    $PY scripts/decode_committee.py "$OUT" --test $data --bte $(tables) "${members[@]}"
    echo
  done
  exit
fi

compare=()
for pair in $PAIRS; do
  for data in "${SETS[@]}"; do compare+=(--compare "$(row "${pair#*:}" $data)" "$(row "${pair%:*}" $data)"); done
done
$PY -m paraisite.cli report "$OUT" --output docs/results/bte_input_cv "${compare[@]}" >&2
for pair in $PAIRS; do
  for data in "${SETS[@]}"; do
    for backbone in "${pair%:*}" "${pair#*:}"; do
      # shellcheck disable=SC2046
      $PY scripts/decode_committee.py "$OUT" --test $data --bte $(tables) --member "$(row "$backbone" $data)"
      echo
    done
  done
done
echo "| A | B | test set | A | B | A − B [95 % CI] | p | materials |"
echo "|---|---|---|---|---|---|---|---|"
for pair in $PAIRS; do
  base=${pair%:*} with=${pair#*:}
  for data in "${SETS[@]}"; do
    for sides in "$with|$base" "$with+bte|$base+bte" "$with|$base+bte"; do
      # shellcheck disable=SC2046
      $PY scripts/paired_ensembles.py "$OUT" --test $data --bte $(tables) \
        --rows "$(side "${sides%|*}" $data)" "$(side "${sides#*|}" $data)"
    done
  done
done
