#!/usr/bin/env bash
# Knowledge distillation: Fashion-MNIST small_cnn -> small_cnn_half (KD vs labels only, same init) and CIFAR ResNet-56 -> ResNet-20: about 30 minutes on 2 cores (est.).
# Usage: benchmarks/distill/run.sh [PART [ARGS...]]   PART: fmnist | cifar | all (default: fmnist cifar)
# ARGS go to that part's script (see its --help). Parts:
#   fmnist: KD student vs labels-only student on Fashion-MNIST (experiments.py fmnist)
#   cifar: pretrained resnet56 -> pretrained resnet20 on the 2,000 cifar10-sample images (experiments.py cifar)
# Writes runs/benchmarks/distill/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/distill
mkdir -p "$OUT"
parts=()
part_fmnist() {
  "$PY" benchmarks/distill/experiments.py fmnist --out "$OUT/fmnist.json" "$@"
  parts+=(--part "fmnist=$OUT/fmnist.json")
}
part_cifar() {
  "$PY" benchmarks/distill/experiments.py cifar --out "$OUT/cifar.json" "$@"
  parts+=(--part "cifar=$OUT/cifar.json")
}
run_parts distill "fmnist cifar" "fmnist cifar" "$@"
