#!/usr/bin/env bash
# Every run's results.json and out-of-fold test_predictions.csv under OUT (no weights) into DEST/runs.tar.gz, paths
# starting at OUT's own name, so that a report can be rescored without the run folders:
#   scripts/archive_runs.sh outputs/bte_mix_cv docs/results/bte_mix_cv
set -euo pipefail
OUT=$1
DEST=$2
(cd "$(dirname "$OUT")" && find "$(basename "$OUT")" \( -name results.json -o -name test_predictions.csv \) -print0 \
  | sort -z | tar czf - --null -T -) > "$DEST/runs.tar.gz"
