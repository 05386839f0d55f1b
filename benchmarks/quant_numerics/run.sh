#!/usr/bin/env bash
# Quantization numerics: SQNR of every observer and scheme on a tensor with outliers (seconds), and PTQ vs QAT on a ResNet-20 with outlier channels: about 10 minutes on 2 cores (est.).
# Usage: benchmarks/quant_numerics/run.sh [PART [ARGS...]]   PART: observers | qat | all (default: observers qat)
# ARGS go to that part's script (see its --help). Parts:
#   observers: the observer table: SQNR (dB) per observer and scheme (observers.py; seconds)
#   qat: PTQ (ONNX Runtime, OpenVINO) vs QAT on cifar_resnet20 with outlier weight channels (qat.py)
# Writes runs/benchmarks/quant_numerics/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/quant_numerics
mkdir -p "$OUT"
parts=()
part_observers() {
  "$PY" benchmarks/quant_numerics/observers.py --out "$OUT/observers.json" "$@"
  parts+=(--part "observers=$OUT/observers.json")
}
part_qat() {
  "$PY" benchmarks/quant_numerics/qat.py --out "$OUT/qat" "$@"
  parts+=(--part "qat=$OUT/qat/summary.json")
}
run_parts quant_numerics "observers qat" "observers qat" "$@"
