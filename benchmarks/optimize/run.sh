#!/usr/bin/env bash
# `slimline optimize` must-shows (issue 24) -> runs/benchmarks/optimize/results.json:
#   demo:  the Fashion-MNIST demo recipe, then a 10-minute search (--max-drop 1.0, OpenVINO, batch 64) from its
#          trained model; the chosen artifact and every demo stage measured at batch 64 in one bench session
#          (search_items_per_s, demo_best_items_per_s, drop). About 25 minutes on 2 cores.
#   dask:  the demo search (trial limit, seed 0) with the local executor and on a Dask LocalCluster (2 workers,
#          127.0.0.1), one worker killed mid-trial (dask_same_best, trials_lost, non_loopback). About 15 minutes.
#   cifar: pretrained CIFAR ResNet-56, a 90-minute search (block/channel pruning, int8, OpenVINO) against the
#          by-hand OpenVINO+NNCF int8 peer of the unpruned model, measured in one bench session
#          (chosen_items_per_s, peer_items_per_s, test_drop). About 2 hours; not run by default.
# Options: --only demo dask cifar, --quick (tiny budgets: checks the script end to end), see run.py --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
echo "benchmarks/optimize in $(pwd) -> runs/benchmarks/optimize/results.json"
exec "$PY" benchmarks/optimize/run.py --out runs/benchmarks/optimize "$@"
