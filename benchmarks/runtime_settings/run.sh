#!/usr/bin/env bash
# Runtime settings: tune on every runtime vs its defaults (CIFAR ResNet-56), and peak memory per runtime, batch and ONNX Runtime arena setting (ResNet-18): about 20 minutes on 2 cores (est.).
# Usage: benchmarks/runtime_settings/run.sh [PART [ARGS...]]   PART: tune | memory | all (default: tune memory)
# ARGS go to that part's script (see its --help). Parts:
#   tune: best settings vs runtime defaults, latency at batch 1 and throughput under a p99 bound (tune.py)
#   memory: peak resident memory per runtime and batch (memory.py)
# Writes runs/benchmarks/runtime_settings/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/runtime_settings
mkdir -p "$OUT"
parts=()
part_tune() {
  "$PY" benchmarks/runtime_settings/tune.py --model cifar_resnet56 --weights ../shared/data/cifar10/resnet56-4bfd9763.th --p99-ms 200 --out "$OUT/tune" "$@"
  parts+=(--part "tune=$OUT/tune/tune.json")
}
part_memory() {
  "$PY" benchmarks/runtime_settings/memory.py --out "$OUT/memory" "$@"
  parts+=(--part "memory=$OUT/memory/memory.json")
}
run_parts runtime_settings "tune memory" "tune memory" "$@"
