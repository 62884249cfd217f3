#!/usr/bin/env bash
# The backbones × chains table under protocol=cv (docs/results/backbones_cv): the runs of sweeps/backbones_cv.sh next
# to the MEGNet rows of the CV grid (sweeps/paper_grid_cv: Step II = dft, Step III = agl_dft), with the paired
# comparisons whose two rows have a complete repeat (a row still running is left out of them, not refused)
# and, per data set, committees declared in advance: every graph-network row (all backbones and chains but
# multifidelity, which loses to Step III and m3gnet_physics, run later), the same plus ElemNet agl_dft (the composition
# network), and each of these plus the quasiharmonic ridge row (the physics baseline).
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
. sweeps/pretrain_of.sh
has_runs() {  # backbone chain data → true when the row has a complete repeat (one seed's 5 folds finished)
  local dir seed
  for seed in 1 2 3 4 5; do
    local finished=0
    for dir in $(folders "$1" "$2"); do
      finished=$((finished + $(grep -ls '"status": "ok"' "$dir"/*-"$1"-*-"$2"-"$3"-s$seed/results.json 2>/dev/null | wc -l)))
    done
    if [ "$finished" -ge 5 ]; then return 0; fi
  done
  return 1
}

sweeps=()
for row in megnet/dft megnet/agl_dft megnet/multifidelity m3gnet/dft m3gnet/agl_dft chgnet/dft chgnet/agl_dft \
           elemnet/dft elemnet/agl_dft quasiharmonic/features quasiharmonic/dft m3gnet_physics/dft; do
  for dir in $(folders "${row%/*}" "${row#*/}"); do sweeps+=("$dir"); done
done
compares=()
for data in dataset1 dataset2 mix; do
  # A B: backbone/chain pairs, A − B
  for pair in "m3gnet/dft megnet/dft" "m3gnet/dft megnet/agl_dft" "chgnet/dft megnet/dft" "m3gnet/dft chgnet/dft" \
              "elemnet/dft megnet/dft" "elemnet/agl_dft elemnet/dft" "elemnet/agl_dft megnet/agl_dft" \
              "m3gnet/agl_dft m3gnet/dft" "m3gnet/agl_dft megnet/agl_dft" "chgnet/agl_dft chgnet/dft" \
              "megnet/multifidelity megnet/agl_dft" "megnet/multifidelity megnet/dft" "m3gnet_physics/dft m3gnet/dft"; do
    a=${pair% *} b=${pair#* }
    if has_runs "${a%/*}" "${a#*/}" "$data" && has_runs "${b%/*}" "${b#*/}" "$data"; then
      compares+=(--compare "${a%/*}/$(pretrain_of "${a%/*}")/${a#*/}/$data [cv]"
                           "${b%/*}/$(pretrain_of "${b%/*}")/${b#*/}/$data [cv]")
    fi
  done
  graph=()
  for row in megnet/dft megnet/agl_dft m3gnet/dft m3gnet/agl_dft chgnet/dft chgnet/agl_dft; do
    if has_runs "${row%/*}" "${row#*/}" "$data"; then graph+=("${row%/*}/$(pretrain_of "${row%/*}")/${row#*/}/$data [cv]"); fi
  done
  physics=()
  if has_runs quasiharmonic features "$data"; then
    physics=("quasiharmonic/scratch/features/$data [cv] (stage_overrides.regressor=ridge)")
  fi
  if [ ${#graph[@]} -ge 2 ]; then compares+=(--committee "${graph[@]}"); fi
  if has_runs elemnet agl_dft "$data"; then compares+=(--committee "${graph[@]}" "elemnet/eform/agl_dft/$data [cv]"); fi
  if [ ${#physics[@]} -ge 1 ]; then
    compares+=(--committee "${graph[@]}" "${physics[@]}")
    if has_runs elemnet agl_dft "$data"; then
      compares+=(--committee "${graph[@]}" "elemnet/eform/agl_dft/$data [cv]" "${physics[@]}")
    fi
  fi
done
$PY -m paraisite.cli report "${sweeps[@]}" --output "$OUTPUT" "${compares[@]}"
