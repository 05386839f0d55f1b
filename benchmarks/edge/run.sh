#!/usr/bin/env bash
# Edge: the pretrained CIFAR ResNet-56 (and the pruned one of examples/cifar_resnet56.yaml when its run folder
# runs/cifar_resnet56 holds it) exported to .tflite through litert-torch (fp32) and quantized to full-integer
# int8 by ai-edge-quantizer (calibrated on 300 training images), each evaluated on the 1,000 CIFAR-10 test images
# (top-1 with n and a 95% interval; PyTorch alongside) and timed at batch 1 with 2 threads by one `slimline bench`
# run (fresh process per artifact, runtime litert, XNNPACK). Writes runs/benchmarks/edge/results.json with
# fp32_top1, int8_top1, size_ratio, litert_fp32_ms, litert_int8_ms, the checks of issue 23 and the environment.
# Needs slimline[edge] (make installs it) and ../shared/data/cifar10. About 2 minutes on 2 cores per model.
# Options: --quick (200 test images, shorter timing: a smoke test, not the figures), --threads N,
# --pruned ARTIFACT (another pruned ResNet-56 torch artifact).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
echo "benchmarks/edge: running in $(pwd) with $PY"
exec "$PY" benchmarks/edge/edge.py --out runs/benchmarks/edge "$@"
