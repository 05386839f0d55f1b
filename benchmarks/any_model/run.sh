#!/usr/bin/env bash
# Any model in: four unusual models (int64 ids + state, YOLO-shaped detector, transformer, LSTM) through inspect, bench, fuse, quantize, eval as a user would: about 10 minutes on 2 cores.
# "Any model in": four models slimline has no zoo entry or glue for (two inputs with int64 ids and a state,
# a YOLOv8-shaped detector with dynamic H/W, a transformer encoder over int64 ids, an LSTM) built here with
# seeded random weights, then each run through the CLI as a user would: inspect, bench, fuse (parity),
# quantize (onnxruntime and openvino, calibrated on a .npz), eval (fidelity of each int8 artifact against the
# fp32 model) and one bench of fp32 + int8 folders for the int8/fp32 throughput ratio. Every step is recorded in
# runs/benchmarks/any_model/results.json (exit code, seconds, traceback or not, the last error line, figures).
# A step passes when it exits 0 with its figure, or non-zero with one `error:` line and no traceback.
# Exits non-zero only when some step printed a traceback. About 10 minutes on 2 cores.
# Options: --only NAME ... (models), --steps STEP ... , --keep-work (see cases.py --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
exec "$PY" benchmarks/any_model/cases.py --out runs/benchmarks/any_model "$@"
