#!/usr/bin/env bash
# The demo (what `make demo` runs): Fashion-MNIST small_cnn trained, pruned with KD recovery, int8 on OpenVINO and ONNX Runtime, evaluated on the 10,000 test images and benched at batch 64: about 10 minutes on 2 cores.
# Usage: benchmarks/demo/run.sh [--quick]   (--quick: a data slice, a smoke test, not the figures)
# Writes runs/benchmarks/demo/results.json (the demo's printed figures per stage, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
OUT=runs/benchmarks/demo
mkdir -p "$OUT"
echo "demo: in $(pwd), results in $OUT/results.json"
"$PY" -m slimline demo -o "$OUT/run" --json "$OUT/demo.json" "$@"
"$PY" benchmarks/results.py demo --command "benchmarks/demo/run.sh $*" --part "demo=$OUT/demo.json"
