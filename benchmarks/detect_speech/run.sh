#!/usr/bin/env bash
# Issue 21: a pretrained YOLOv8n detector (shipped in the nudenet wheel) to int8 on ONNX Runtime and OpenVINO,
# calibrated with its own letterbox preprocessing: detection fidelity against fp32 on 54 images (scikit-image's
# photos, mosaics of its LFW faces, and their mirror images) and batch-1 latency fp32 vs int8 from one bench run;
# then keyword spotting (kws.py): a streaming DS-CNN trained on espeak-ng speech, pruned by sensitivity with KD
# recovery, int8 on OpenVINO; held-out-voice accuracy and per-chunk latency. About 5 minutes on 2 cores.
# Writes runs/benchmarks/detect_speech/results.json. Options: --quick (1 s per bench combination), --calib-n N.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "detect_speech benchmark in $(pwd)"
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
exec "$PY" benchmarks/detect_speech/detect_speech.py --out runs/benchmarks/detect_speech "$@"
