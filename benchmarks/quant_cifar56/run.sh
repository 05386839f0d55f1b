#!/usr/bin/env bash
# int8 CIFAR ResNet-56 on ONNX Runtime, OpenVINO (NNCF) and PyTorch FX against fp32: top-1 (n=1000), file sizes, batch-64 throughput: about 15 minutes on 2 cores (est.).
# Usage: benchmarks/quant_cifar56/run.sh [ARGS...]   (ARGS go to the script, see its --help)
#   quant: every figure of the quantization report for cifar_resnet56 (quant.py)
# Writes runs/benchmarks/quant_cifar56/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
OUT=runs/benchmarks/quant_cifar56
mkdir -p "$OUT"
parts=()
part_quant() {
  "$PY" benchmarks/quant_cifar56/quant.py --out "$OUT/quant" "$@"
  parts+=(--part "quant=$OUT/quant/summary.json")
}
echo "quant_cifar56: in $(pwd), results in $OUT/results.json"
part_quant "$@"
"$PY" benchmarks/results.py quant_cifar56 --command "benchmarks/quant_cifar56/run.sh $*" "${parts[@]}"
