#!/usr/bin/env bash
# M3GNet-BTE trained on MIX on fresh folds (docs/benchmarks.md, "M3GNet-BTE trained on MIX, on fresh folds"): the
# report of both MIX-trained BTE-input rows (single models and out-of-fold ensembles on Dataset1, Dataset2, MIX), the
# committee of the two, the paired ensembles of the two rows (and, with the by_set runs, of each set's own
# M3GNet-BTE row against the MIX-trained one), and an
# archive of the runs' results and out-of-fold predictions (no weights) so that they can be rescored without them.
#   scripts/bte_mix_report.sh > docs/results/bte_mix_cv/paired.md        # OUT=… DEST=…
# Without the run folders: tar xzf docs/results/bte_mix_cv/runs.tar.gz -C DIR, then OUT=DIR/bte_mix_cv scripts/…
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bte_mix_cv}
DEST=${DEST:-docs/results/bte_mix_cv}
PY=${PY:-.venv/bin/python}
M3GNET="m3gnet_bte/eform/dft/mix [cv]"
MEGNET="megnet_bte/eform/dft/mix [cv]"

$PY -m paraisite.cli report "$OUT" --output "$DEST" --committee "$M3GNET" "$MEGNET" >&2
echo "| A | B | test set | A | B | A − B [95 % CI] | p | materials |"
echo "|---|---|---|---|---|---|---|---|"
for data in dataset1 dataset2 mix; do
  $PY scripts/paired_ensembles.py "$OUT" --test $data --rows "$M3GNET" "$MEGNET"
done
for data in dataset1 dataset2; do  # the BTE route by domain: each set's own row against the MIX-trained one
  if [[ -d $OUT/by_set ]]; then
    $PY scripts/paired_ensembles.py "$OUT" --test $data --rows "m3gnet_bte/eform/dft/$data [cv]" "$M3GNET"
  fi
done
if [[ ! -f $DEST/runs.tar.gz || ${ARCHIVE:-0} == 1 ]]; then
  scripts/archive_runs.sh "$OUT" "$DEST"
fi
