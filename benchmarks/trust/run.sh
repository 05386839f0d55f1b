#!/usr/bin/env bash
# Trust cases of issue #18 (the CLI in fresh processes; expected vs observed, pass per case): about 5 minutes on 2 cores.
# The trust cases of issue #18, each run as a user would (the CLI in fresh processes), checked and written to
# runs/benchmarks/trust/results.json: one entry per case with expected, observed and pass.
# Run from a clone after `make test` (it uses .venv). Needs root for the tmpfs and network-namespace cases
# (they are recorded as skipped, with the reason, elsewhere). Takes about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export SLIMLINE_PROGRESS=0
exec "$PY" benchmarks/trust/cases.py --out runs/benchmarks/trust "$@"
