#!/usr/bin/env bash
# ResNet-18 224x224 speed: the runtimes side by side, slimline's harness vs plain loops, int8 vs fp32, int8 vs by-hand peers (ORT, NNCF, torchao), PyTorch layout/fusion variants: about 30 minutes on 2 cores (est.).
# Usage: benchmarks/resnet18_peers/run.sh [PART [ARGS...]]   PART: runtimes | byhand | quant | peers | layout | all (default: all five)
# ARGS go to that part's script (see its --help). Parts:
#   runtimes: one slimline bench of ResNet-18 on torch, channels_last, torch.compile, ONNX Runtime, OpenVINO, batch 1 and 16, 2 threads (with the GEMM peak)
#   byhand: harness overhead: slimline bench vs a plain ONNX Runtime / OpenVINO loop (byhand.py)
#   quant: fp32 vs slimline's int8 artifacts, throughput only (quant.py)
#   peers: slimline's int8 against by-hand peers in the same run (peers.py; makes data/photos-224 first)
#   layout: PyTorch eager plain vs fused vs channels_last vs both (layout.py)
# Writes runs/benchmarks/resnet18_peers/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/resnet18_peers
mkdir -p "$OUT"
parts=()
part_runtimes() {
  "$PY" -m slimline bench resnet18 -r torch -r torch:channels_last -r torch-compile -r onnxruntime -r openvino \
    -b 1 -b 16 -t 2 --json "$OUT/runtimes.json" "$@"
  parts+=(--part "runtimes=$OUT/runtimes.json")
}
part_byhand() {
  "$PY" benchmarks/resnet18_peers/byhand.py --json "$OUT/byhand.json" "$@"
  parts+=(--part "byhand=$OUT/byhand.json")
}
part_quant() {
  "$PY" benchmarks/resnet18_peers/quant.py --out "$OUT/quant" "$@"
  parts+=(--part "quant=$OUT/quant/summary.json")
}
part_peers() {
  # the same 64 calibration images for every contender: crops of scikit-image's bundled photos
  if [ ! -d data/photos-224/train ]; then "$PY" examples/make_photo_folder.py --out data/photos-224; fi
  "$PY" benchmarks/resnet18_peers/peers.py --out "$OUT/peers" "$@"
  parts+=(--part "peers=$OUT/peers/summary.json")
}
part_layout() {
  "$PY" benchmarks/resnet18_peers/layout.py --out "$OUT/layout.json" "$@"
  parts+=(--part "layout=$OUT/layout.json")
}
run_parts resnet18_peers "runtimes byhand quant peers layout" "runtimes byhand quant peers layout" "$@"
