#!/usr/bin/env bash
# Every CPU measurement of bench/RESULTS.md, appended to bench/results.jsonl (about 15-25 minutes on a shared
# 2-core machine). Needs .bench-venv (bench/README.md) for the lucid anchor; falls back to .venv without it.
#
#   bash bench/cpu.sh [PRESET]      # default: quick, read now
set -euo pipefail
cd "$(dirname "$0")"
preset=${1:-quick}
PY=../.bench-venv/bin/python
[[ -x $PY ]] || PY=../.venv/bin/python
# Passive OpenMP waiting: with spinning waiters, two threads on a busy 2-core machine run several times slower
# than one (bench/RESULTS.md, "threads"). Every contender runs under the same setting.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
rounds=${ROUNDS:-11}  # more rounds than the default 7: the noise of a shared CPU is large

$PY train_step.py --preset "$preset" --device cpu --rounds "$rounds"
$PY train_step.py --preset "$preset" --device cpu --rounds "$rounds" --channels-last
$PY sample_step.py --preset "$preset" --device cpu --rounds "$rounds"
$PY sample_step.py --preset "$preset" --device cpu --rounds "$rounds" --channels-last
../.venv/bin/python levers.py --preset "$preset" --device cpu --rounds "$rounds"
# the threads lever again under libgomp's default (spinning) wait policy: what a user gets without the export
env -u OMP_WAIT_POLICY ../.venv/bin/python levers.py --preset "$preset" --device cpu --levers threads --rounds 3
echo
$PY summary.py --since "$(date -u +%Y-%m-%d)"
