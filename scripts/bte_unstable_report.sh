#!/usr/bin/env bash
# The BTE input with the unstable rows (docs/benchmarks.md, "The unstable rows' κ as a network input"): the report of
# the four MIX-trained BTE-input rows (single models and out-of-fold ensembles on Dataset1, Dataset2, MIX), the
# committee of the two `_unstable` rows (the goal candidate) and of the two plain ones, the paired ensembles of each
# backbone's two rows and of the two committees, and the runs' archive (scripts/archive_runs.sh). With the by_set runs
# (the plain rows trained on Dataset1 alone and on Dataset2 alone): each set's own committee against the MIX-trained
# one, and on MIX the per-source committees (each material by its own set's committee).
#   scripts/bte_unstable_report.sh > docs/results/bte_unstable_cv/paired.md        # OUT=… DEST=…
# Without the run folders: tar xzf docs/results/bte_unstable_cv/runs.tar.gz -C DIR, then OUT=DIR/bte_unstable_cv …
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bte_unstable_cv}
DEST=${DEST:-docs/results/bte_unstable_cv}
PY=${PY:-.venv/bin/python}
row() { echo "$1/eform/dft/${2:-mix} [cv]"; }  # a cv row's label: backbone [data set]
NEW="$(row m3gnet_bte_unstable) & $(row megnet_bte_unstable)"
OLD="$(row m3gnet_bte) & $(row megnet_bte)"

mkdir -p "$DEST"
$PY -m paraisite.cli report "$OUT" --output "$DEST" --committee "$(row m3gnet_bte_unstable)" "$(row megnet_bte_unstable)" \
  --committee "$(row m3gnet_bte)" "$(row megnet_bte)" >&2
echo "| A | B | test set | A | B | A − B [95 % CI] | p | materials |"
echo "|---|---|---|---|---|---|---|---|"
for data in dataset1 dataset2 mix; do
  $PY scripts/paired_ensembles.py "$OUT" --test $data --rows "$NEW" "$OLD"
  for backbone in m3gnet_bte megnet_bte; do
    $PY scripts/paired_ensembles.py "$OUT" --test $data --rows "$(row ${backbone}_unstable)" "$(row $backbone)"
  done
done
if [[ -d $OUT/by_set ]]; then
  for data in dataset1 dataset2; do
    $PY scripts/paired_ensembles.py "$OUT" --test $data --rows "$(row m3gnet_bte $data) & $(row megnet_bte $data)" "$OLD"
  done
  experts() { echo "$(row "$1" dataset1)|$(row "$1" dataset2)"; }
  EXPERTS="$(experts m3gnet_bte) & $(experts megnet_bte)"
  $PY scripts/paired_ensembles.py "$OUT" --test mix --rows "$EXPERTS" "$OLD"
fi
scripts/archive_runs.sh "$OUT" "$DEST"
