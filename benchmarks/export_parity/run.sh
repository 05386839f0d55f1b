#!/usr/bin/env bash
# ONNX and OpenVINO exports of the pretrained CIFAR ResNet-56 against PyTorch on the 1,000 test images (top-1, agreement, parity checks): about 2 minutes on 2 cores (1 min 11 s CPU time).
# Usage: benchmarks/export_parity/run.sh [ARGS...]   (ARGS go to the script, see its --help)
#   parity: export_onnx + export_openvino, each artifact evaluated on its runtime against PyTorch (parity.py)
# Writes runs/benchmarks/export_parity/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
OUT=runs/benchmarks/export_parity
mkdir -p "$OUT"
parts=()
part_parity() {
  "$PY" benchmarks/export_parity/parity.py --json "$OUT/parity.json" "$@"
  parts+=(--part "parity=$OUT/parity.json")
}
echo "export_parity: in $(pwd), results in $OUT/results.json"
part_parity "$@"
"$PY" benchmarks/results.py export_parity --command "benchmarks/export_parity/run.sh $*" "${parts[@]}"
