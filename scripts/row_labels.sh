# Row labels of `paraisite report`, sourced by the report scripts. A row spec is "LABEL|VARIANT": the label with DATA
# in place of the data set, and the variant its labels show after the data set (may be empty).
name() {  # spec data → the row's label
  local base=${1%|*} variant=${1#*|}
  echo "${base/DATA/$2}${variant:+ ($variant)}"
}
experts() {  # spec → the label of its per-source experts row
  local base=${1%|*} variant=${1#*|}
  echo "${base/DATA/dataset1|dataset2} (per-source experts${variant:+; $variant})"
}
committee() {  # labels → the committee's label
  local text="committee: $1"
  shift
  for row in "$@"; do text+=" + $row"; done
  echo "$text"
}
