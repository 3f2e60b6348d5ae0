#!/usr/bin/env bash
# Every CPU measurement of bench/RESULTS.md, appended to bench/results.jsonl (about 15-25 minutes on a shared
# 2-core machine), then this run's table (bench/summary.py). Needs .bench-venv (bench/README.md) for the lucid
# anchor; falls back to .venv without it. PYTHON=... runs every step with that interpreter instead.
#
#   bash bench/cpu.sh [PRESET]            # default: quick, read now
#   bash bench/cpu.sh --smoke [PRESET]    # the same steps at tiny sizes, in seconds: records go to
#                                         # $OUT/cpu-smoke.jsonl (default /tmp/bench-cpu), never to bench/results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=()
results=bench/results.jsonl
if [[ "${1:-}" == "--smoke" ]]; then
    shift
    smoke=(--smoke)
    mkdir -p "${OUT:-/tmp/bench-cpu}"
    results=${OUT:-/tmp/bench-cpu}/cpu-smoke.jsonl
    : > "$results"  # this run's records only
fi
preset=${1:-quick}
if [[ -n ${PYTHON:-} ]]; then
    PY=$PYTHON OURS_PY=$PYTHON
else
    PY=.bench-venv/bin/python  # the anchors' environment: lucid needs torchvision
    [[ -x $PY ]] || PY=.venv/bin/python
    OURS_PY=.venv/bin/python  # the levers time only our own step, under the project's torch
fi
# Passive OpenMP waiting: with spinning waiters, two threads on a busy 2-core machine run several times slower
# than one (bench/RESULTS.md, "threads"). Every contender runs under the same setting.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
rounds=${ROUNDS:-11}  # more rounds than the default 7: the noise of a shared CPU is large (--smoke: 2)
started=$(date -u +%Y-%m-%dT%H:%M:%S)
common=(--preset "$preset" --device cpu --rounds "$rounds" --results "$results" "${smoke[@]}")

# both layouts, whichever the preset runs (quick: channels_last)
"$PY" bench/train_step.py "${common[@]}" --channels-last
"$PY" bench/train_step.py "${common[@]}" --no-channels-last
"$PY" bench/sample_step.py "${common[@]}" --channels-last
"$PY" bench/sample_step.py "${common[@]}" --no-channels-last
"$OURS_PY" bench/levers.py "${common[@]}"
# the threads lever again under libgomp's default (spinning) wait policy: what a user gets without the export
env -u OMP_WAIT_POLICY "$OURS_PY" bench/levers.py "${common[@]}" --levers threads --rounds 3
echo
"$PY" bench/summary.py --results "$results" --since "$started"
