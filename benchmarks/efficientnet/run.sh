#!/usr/bin/env bash
# EfficientNet-Lite0 through fuse -> export_onnx -> fuse -> bench on every runtime, top-1 of one photo kept everywhere (needs the efficientnet extra and scikit-image): about 15 minutes on 2 cores (est.).
# Usage: benchmarks/efficientnet/run.sh [ARGS...]   (ARGS go to the script, see its --help)
#   optimize: fuse/export records, per-runtime top-1 and benchmark (optimize.py; --no-compile skips torch-compile)
# Writes runs/benchmarks/efficientnet/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
OUT=runs/benchmarks/efficientnet
mkdir -p "$OUT"
parts=()
part_optimize() {
  "$PY" benchmarks/efficientnet/optimize.py --out "$OUT/optimize" "$@"
  parts+=(--part "optimize=$OUT/optimize/summary.json")
}
echo "efficientnet: in $(pwd), results in $OUT/results.json"
part_optimize "$@"
"$PY" benchmarks/results.py efficientnet --command "benchmarks/efficientnet/run.sh $*" "${parts[@]}"
