#!/usr/bin/env bash
# The backbones × chains table under protocol=cv (docs/results/backbones_cv): the runs of sweeps/backbones_cv.sh next
# to the MEGNet rows of the CV grid (sweeps/paper_grid_cv: Step II = dft, Step III = agl_dft), with the paired
# comparisons whose two rows have finished runs (a row still running is left out of the comparisons, not refused).
#   scripts/backbones_report.sh            # BB=outputs/backbones_cv GRID=outputs/paper_grid/cv
set -euo pipefail
cd "$(dirname "$0")/.."
BB=${BB:-outputs/backbones_cv}
GRID=${GRID:-outputs/paper_grid/cv}
OUTPUT=${OUTPUT:-docs/results/backbones_cv}
PY=${PY:-.venv/bin/python}

folders() {  # backbone chain → the sweep folders of its runs (BB/<backbone>/<chain>, also <chain>_<part> ones)
  case $1/$2 in
    megnet/dft) echo "$GRID/step2" ;;
    megnet/agl_dft) echo "$GRID/step3" ;;
    *) for dir in "$BB/$1/$2" "$BB/$1/$2"_*; do if [ -d "$dir" ]; then echo "$dir"; fi; done ;;
  esac
}
pretrain() { case $1 in chgnet) echo mptrj ;; *) echo eform ;; esac; }
has_runs() {  # backbone chain data → true when a finished run of that row exists
  local dir
  for dir in $(folders "$1" "$2"); do
    if grep -qs '"status": "ok"' "$dir"/*-"$1"-*-"$2"-"$3"-s*/results.json; then return 0; fi
  done
  return 1
}

sweeps=()
for row in megnet/dft megnet/agl_dft megnet/multifidelity m3gnet/dft m3gnet/agl_dft chgnet/dft chgnet/agl_dft \
           elemnet/dft elemnet/agl_dft; do
  for dir in $(folders "${row%/*}" "${row#*/}"); do sweeps+=("$dir"); done
done
compares=()
for data in dataset1 dataset2 mix; do
  # A B: backbone/chain pairs, A − B
  for pair in "m3gnet/dft megnet/dft" "m3gnet/dft megnet/agl_dft" "chgnet/dft megnet/dft" "m3gnet/dft chgnet/dft" \
              "elemnet/dft megnet/dft" "elemnet/agl_dft elemnet/dft" "elemnet/agl_dft megnet/agl_dft" \
              "m3gnet/agl_dft m3gnet/dft" "megnet/multifidelity megnet/agl_dft" "megnet/multifidelity megnet/dft"; do
    a=${pair% *} b=${pair#* }
    if has_runs "${a%/*}" "${a#*/}" "$data" && has_runs "${b%/*}" "${b#*/}" "$data"; then
      compares+=(--compare "${a%/*}/$(pretrain "${a%/*}")/${a#*/}/$data [cv]"
                           "${b%/*}/$(pretrain "${b%/*}")/${b#*/}/$data [cv]")
    fi
  done
done
$PY -m paraisite.cli report "${sweeps[@]}" --output "$OUTPUT" "${compares[@]}"
