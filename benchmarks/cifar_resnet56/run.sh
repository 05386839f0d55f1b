#!/usr/bin/env bash
# The CIFAR ResNet-56 example recipe end to end (evaluate, prune with KD recovery, int8 on ONNX Runtime and OpenVINO, bench): about 90 minutes on 2 cores (est.).
# Usage: benchmarks/cifar_resnet56/run.sh [ARGS...]   (ARGS go to the script, see its --help)
#   run: slimline run examples/cifar_resnet56.yaml (the README's headline pruning + int8 table)
# Writes runs/benchmarks/cifar_resnet56/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
OUT=runs/benchmarks/cifar_resnet56
mkdir -p "$OUT"
parts=()
part_run() {
  "$PY" -m slimline run examples/cifar_resnet56.yaml -o "$OUT/run" --json "$OUT/run.json" "$@"
  parts+=(--part "run=$OUT/run.json")
}
echo "cifar_resnet56: in $(pwd), results in $OUT/results.json"
part_run "$@"
"$PY" benchmarks/results.py cifar_resnet56 --command "benchmarks/cifar_resnet56/run.sh $*" "${parts[@]}"
