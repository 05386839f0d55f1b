#!/usr/bin/env bash
# Serving benchmark (issue 22): a pruned (-40% MACs, short KD) + OpenVINO int8 CIFAR ResNet-56 behind
# `slimline serve` with dynamic batching vs --max-batch 1 (2,000 CIFAR test images at concurrency 200 each),
# `slimline bench` offline throughput at the server's mean batch size, and SIGTERM during a load test.
# Writes runs/benchmarks/serve/results.json.
# Loopback only, every step bounded. Builds the artifact through slimline.api.run first when none is cached in
# runs/benchmarks/serve/work/p56 (about 3 minutes).
# Options: --quick (300 requests at concurrency 50), --artifact DIR, --workers N (server processes),
# --count N, --concurrency N (serve_bench.py -h).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
echo "benchmarks/serve in $(pwd)"
exec "$PY" benchmarks/serve/serve_bench.py --out runs/benchmarks/serve "$@"
