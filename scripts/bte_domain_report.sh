#!/usr/bin/env bash
# M3GNet-BTE by domain on folds not yet drawn (docs/benchmarks.md, "M3GNet-BTE by domain on folds not yet drawn"):
# the report of its rows trained on Dataset1 and on Dataset2 with their per-source experts (each material of
# Dataset1, Dataset2 and MIX by its own set's out-of-fold ensemble: the goal candidate, table.md's experts row), and
# the runs' archive (scripts/archive_runs.sh).
#   scripts/bte_domain_report.sh        # OUT=… DEST=…
# Without the run folders: tar xzf docs/results/bte_domain_cv/runs.tar.gz -C DIR, then OUT=DIR/bte_domain_cv …
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bte_domain_cv}
DEST=${DEST:-docs/results/bte_domain_cv}
PY=${PY:-.venv/bin/python}
mkdir -p "$DEST"
$PY -m paraisite.cli report "$OUT" --output "$DEST" \
  --experts "m3gnet_bte/eform/dft/dataset1 [cv]" "m3gnet_bte/eform/dft/dataset2 [cv]"
scripts/archive_runs.sh "$OUT" "$DEST"
