#!/usr/bin/env bash
# The BTE κ as the baseline that the network corrects (docs/benchmarks.md, "The BTE κ as the baseline that the
# network corrects"): the report of M3GNet-BTE-residual and M3GNet-BTE trained on Dataset1 and on Dataset2 with
# their per-source experts (table.md), the residual experts paired with the plain ones on each set (paired.md), and
# the runs' archive (scripts/archive_runs.sh).
#   scripts/bte_residual_report.sh        # OUT=… DEST=…
# Without the run folders: tar xzf docs/results/bte_residual_cv/runs.tar.gz -C DIR, then OUT=DIR/bte_residual_cv …
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bte_residual_cv}
DEST=${DEST:-docs/results/bte_residual_cv}
PY=${PY:-.venv/bin/python}
experts() { echo "$1/eform/dft/dataset1 [cv]|$1/eform/dft/dataset2 [cv]"; }
mkdir -p "$DEST"
$PY -m paraisite.cli report "$OUT" --output "$DEST" \
  --experts "m3gnet_bte_residual/eform/dft/dataset1 [cv]" "m3gnet_bte_residual/eform/dft/dataset2 [cv]" \
  --experts "m3gnet_bte/eform/dft/dataset1 [cv]" "m3gnet_bte/eform/dft/dataset2 [cv]"
{
  echo "Residual experts − plain experts, out-of-fold 5-repeat ensembles paired on the same materials (seeds 20–24):"
  echo
  echo "| A | B | test set | MAPE A | MAPE B | A − B [95 %] | p | materials |"
  echo "|---|---|---|---|---|---|---|---|"
  for test in dataset1 dataset2 mix; do
    $PY scripts/paired_ensembles.py "$OUT" --test "$test" --rows "$(experts m3gnet_bte_residual)" "$(experts m3gnet_bte)"
  done
} > "$DEST/paired.md"
scripts/archive_runs.sh "$OUT" "$DEST"
