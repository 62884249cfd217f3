#!/usr/bin/env bash
# A BTE-input candidate paired with M3GNet-BTE by domain (or BASE_ROW) on the same folds (docs/benchmarks.md: "The BTE
# κ as the baseline that the network corrects", "Finite-temperature phonons for the structures unstable at 0 K", "The
# potential's volume ratio as an input"): the report of both rows trained on Dataset1 and on Dataset2 with their
# per-source experts (table.md), the candidate's experts paired with the baseline's on each set (paired.md), and the
# candidate's runs' archive (scripts/archive_runs.sh).
#   CANDIDATE=m3gnet_bte_residual OUT=outputs/bte_residual_cv DEST=docs/results/bte_residual_cv scripts/bte_paired_report.sh
#   CANDIDATE=m3gnet_bte_renormalised OUT=outputs/bte_renorm_cv BASELINE=outputs/bte_residual_cv/m3gnet_bte \
#     DEST=docs/results/bte_renorm_cv scripts/bte_paired_report.sh
#   CANDIDATE=m3gnet_bte_volume OUT=outputs/bte_volume_cv BASELINE=outputs/bte_renorm_cv/m3gnet_bte_renormalised \
#     BASE_ROW=m3gnet_bte_renormalised DEST=docs/results/bte_volume_cv scripts/bte_paired_report.sh
#   CANDIDATE=sevennet_bte OUT=outputs/sevennet_bte_cv BASELINE=outputs/bte_loss_cv/m3gnet_bte_amorphous \
#     BASE_ROW=m3gnet_bte_amorphous COMMITTEE=1 DEST=docs/results/sevennet_bte_cv scripts/bte_paired_report.sh
# BASELINE: where the baseline rows are, when not under OUT; BASE_ROW: their backbone (default m3gnet_bte);
# COMMITTEE=1: paired.md also pairs the committee of both rows' experts (per material, the mean of their ensembles)
# with the baseline's. Without the run folders: tar xzf DEST/runs.tar.gz -C DIR, then OUT=DIR/<its folder> ….
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CANDIDATE:?name the candidate backbone}" "${OUT:?}" "${DEST:?}"
BASELINE=${BASELINE:-}
BASE_ROW=${BASE_ROW:-m3gnet_bte}
COMMITTEE=${COMMITTEE:-}
PY=${PY:-.venv/bin/python}
. sweeps/pretrain_of.sh
expert() { echo "$1/$(pretrain_of "$1")/dft/$2 [cv]"; }  # backbone $1's row trained on $2
experts() { echo "$(expert "$1" dataset1)|$(expert "$1" dataset2)"; }
# The same row label on both sides (e.g. one recipe under two versions of the code): B is read from BASELINE alone.
if [ "$CANDIDATE" = "$BASE_ROW" ]; then RUNS=("$OUT" --b-runs $BASELINE); REPORTED=("$OUT"); else
  RUNS=("$OUT" $BASELINE); REPORTED=("$OUT" $BASELINE); fi
mkdir -p "$DEST"
experts_args=()
for row in $(printf '%s\n' "$CANDIDATE" "$BASE_ROW" | sort -u); do
  experts_args+=(--experts "$(expert "$row" dataset1)" "$(expert "$row" dataset2)")
done
$PY -m paraisite.cli report "${REPORTED[@]}" --output "$DEST" "${experts_args[@]}"
{
  echo "$CANDIDATE experts − $BASE_ROW experts, out-of-fold ensembles paired on the same materials:"
  [ "$CANDIDATE" != "$BASE_ROW" ] || echo "A: the runs of $(basename "$OUT"); B: the same rows in $BASELINE."
  echo
  echo "| A | B | test set | MAPE A | MAPE B | A − B [95 %] | p | materials |"
  echo "|---|---|---|---|---|---|---|---|"
  for test in dataset1 dataset2 mix; do
    $PY scripts/paired_ensembles.py "${RUNS[@]}" --test "$test" \
      --rows "$(experts "$CANDIDATE")" "$(experts "$BASE_ROW")"
    if [ -n "$COMMITTEE" ]; then
      $PY scripts/paired_ensembles.py "${RUNS[@]}" --test "$test" \
        --rows "$(experts "$CANDIDATE") & $(experts "$BASE_ROW")" "$(experts "$BASE_ROW")"
    fi
  done
} > "$DEST/paired.md"
scripts/archive_runs.sh "$OUT" "$DEST"
