#!/usr/bin/env bash
# Structured pruning of the pretrained CIFAR ResNet-56: sensitivity curves, KD-recovered prune + ONNX Runtime speed-up, plans compared by speed; recovery/continue/soup on a pruned plan: 1-3 hours on 2 cores (est.).
# Usage: benchmarks/prune_resnet56/run.sh [PART [ARGS...]]   PART: sensitivity | prune | plans | recovery | continue | soup | all (default: sensitivity prune plans)
# ARGS go to that part's script (see its --help). Parts:
#   sensitivity: channel and block sensitivity curves on the 200 held-out training images (sensitivity.py)
#   prune: one prune recipe run with KD fine-tuning, then ONNX Runtime fp32 throughput, original vs pruned (prune.py)
#   plans: pruning plans compared by int8 OpenVINO speed before recovery (plans.py)
#   recovery: recovery settings for one plan, chosen by fidelity on blended training images (recovery.py; needs --plan RECORD.json)
#   continue: more KD epochs on a pruned artifact (continue_recovery.py; needs the pruned artifact folder first)
#   soup: weight averaging of several recoveries of one plan (soup.py; needs --plan and --students)
# Writes runs/benchmarks/prune_resnet56/results.json (each part's figures, its checks, the machine's environment).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
source benchmarks/parts.sh
OUT=runs/benchmarks/prune_resnet56
mkdir -p "$OUT"
parts=()
part_sensitivity() {
  "$PY" benchmarks/prune_resnet56/sensitivity.py --kinds channel block --out "$OUT/sensitivity" "$@"
  for f in "$OUT"/sensitivity/sensitivity_*.json; do parts+=(--part "$(basename "$f" .json)=$f"); done
}
part_prune() {
  "$PY" benchmarks/prune_resnet56/prune.py --out "$OUT/prune" --sensitivity-dir "$OUT/sensitivity" "$@"
  parts+=(--part "prune=$OUT/prune/summary.json")
}
part_plans() {
  "$PY" benchmarks/prune_resnet56/plans.py --out "$OUT/plans" "$@"
  parts+=(--part "plans=$OUT/plans/summary.json")
}
part_recovery() {
  "$PY" benchmarks/prune_resnet56/recovery.py --out "$OUT/recovery" "$@"
  parts+=(--part "recovery=$OUT/recovery/summary.json")
}
part_continue() {
  "$PY" benchmarks/prune_resnet56/continue_recovery.py "$@" --out "$OUT/continued"
  parts+=(--part "continue=$OUT/continued/summary.json")
}
part_soup() {
  "$PY" benchmarks/prune_resnet56/soup.py --out "$OUT/soup" "$@"
  parts+=(--part "soup=$OUT/soup/summary.json")
}
run_parts prune_resnet56 "sensitivity prune plans recovery continue soup" "sensitivity prune plans" "$@"
