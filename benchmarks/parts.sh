# Sourced by the run.sh of a study made of parts (each defines part_NAME functions that append to `parts`):
#   run_parts STUDY "NAME ..." "NAMES RUN BY all" "$@"
# runs the part named by the first argument (default: all) with the remaining arguments, then gathers the parts'
# files into $OUT/results.json (benchmarks/results.py: figures, checks, environment).
run_parts() {
  local study=$1 known=$2 all=$3
  shift 3
  local part=${1:-all}
  if [ $# -gt 0 ]; then shift; fi
  echo "$study: part $part, in $(pwd), results in $OUT/results.json"
  if [ "$part" = all ]; then
    for p in $all; do "part_$p"; done
  elif [[ " $known " == *" $part "* ]]; then
    "part_$part" "$@"
  else
    echo "error: unknown part '$part'; give one of: $known all" >&2
    exit 2
  fi
  "$PY" benchmarks/results.py "$study" --command "benchmarks/$study/run.sh $part $*" "${parts[@]}"
}
