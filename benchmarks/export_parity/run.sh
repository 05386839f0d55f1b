#!/usr/bin/env bash
# Pretrained CIFAR ResNets: top-1 of ResNet-56/-20 on the 1,000 test images, ResNet-56's ONNX and OpenVINO exports against PyTorch, and BatchNorm folding parity: about 3 minutes on 2 cores.
# Usage: benchmarks/export_parity/run.sh [PART [ARGS...]]   PART: top1 | parity | fuse | all (default: top1 parity fuse)
# ARGS go to that part's command. Parts:
#   top1: slimline eval of the pretrained cifar_resnet56 and cifar_resnet20 (--json each)
#   parity: export_onnx + export_openvino, each artifact evaluated on its runtime against PyTorch (parity.py)
#   fuse: slimline fuse of cifar_resnet56 (BN folded into the convolutions; its parity check)
# Writes runs/benchmarks/export_parity/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/export_parity
W=../shared/data/cifar10
mkdir -p "$OUT"
parts=()
part_top1() {
  "$PY" -m slimline eval -m cifar_resnet56 --weights "$W/resnet56-4bfd9763.th" -d cifar10-sample --json "$OUT/top1_resnet56.json" "$@"
  "$PY" -m slimline eval -m cifar_resnet20 --weights "$W/resnet20-12fca82f.th" -d cifar10-sample --json "$OUT/top1_resnet20.json" "$@"
  parts+=(--part "top1_resnet56=$OUT/top1_resnet56.json" --part "top1_resnet20=$OUT/top1_resnet20.json")
}
part_parity() {
  "$PY" benchmarks/export_parity/parity.py --json "$OUT/parity.json" "$@"
  parts+=(--part "parity=$OUT/parity.json")
}
part_fuse() {
  "$PY" -m slimline fuse cifar_resnet56 --weights "$W/resnet56-4bfd9763.th" -o "$OUT/r56_fused" --json "$OUT/fuse.json" "$@"
  parts+=(--part "fuse=$OUT/fuse.json")
}
run_parts export_parity "top1 parity fuse" "top1 parity fuse" "$@"
