#!/usr/bin/env bash
# Fashion-MNIST: small_cnn pruned to half its MACs with KD fine-tuning, and slimline predict with 1 vs 2 workers and a killed-then-resumed run: about 20 minutes on 2 cores (est.).
# Usage: benchmarks/fmnist/run.sh [PART [ARGS...]]   PART: prune | predict | all (default: prune predict)
# ARGS go to that part's script (see its --help). Parts:
#   prune: demo baseline -> channel pruning to >= 50% fewer MACs with KD -> test top-1 (prune.py)
#   predict: slimline predict on the 10,000 test images: 1 vs 2 workers, SIGKILL then resume (predict.py)
# Writes runs/benchmarks/fmnist/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/fmnist
mkdir -p "$OUT"
parts=()
part_prune() {
  "$PY" benchmarks/fmnist/prune.py --out "$OUT/prune" "$@"
  parts+=(--part "prune=$OUT/prune/summary.json")
}
part_predict() {
  "$PY" benchmarks/fmnist/predict.py --out "$OUT/predict" "$@"
  parts+=(--part "predict=$OUT/predict/summary.json")
}
run_parts fmnist "prune predict" "prune predict" "$@"
