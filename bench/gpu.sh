#!/usr/bin/env bash
# Every GPU measurement in one go, for a lent GPU machine that has torch but not diffusers (about 8 minutes on one
# H100/H200). Carry the wheels from bench/README.md in .whl/; results are appended to bench/results.jsonl, and this
# run's records and logs go to $OUT (the device tool's output folder) or /tmp/bench-gpu: append
# new_results.jsonl to bench/results.jsonl here.
#
#   bash bench/gpu.sh            # on the GPU machine
#   bash bench/gpu.sh --smoke    # here, on the CPU: the same code paths at tiny sizes, nothing recorded
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/bench-gpu}
mkdir -p "$LOGS"

if [[ "${1:-}" == "--smoke" ]]; then
    args=(--device cpu --smoke --mfu --compile-backend eager --results "$LOGS/smoke.jsonl")
    levers=(--device cpu --smoke --levers schedule_tables,host_sync,channels_last,cudnn_benchmark --results "$LOGS/smoke.jsonl")
    results="$LOGS/smoke.jsonl"
    rm -f "$results"
else
    args=(--device cuda --precision bf16 --rounds 5)
    levers=(--device cuda --rounds 5)
    results=bench/results.jsonl
fi
started=$(date -u +%Y-%m-%dT%H:%M:%S)

# Wheels carried in .whl/: install only those whose distribution is missing here (the image's own numpy, torch,
# huggingface_hub ... stay as they are).
if compgen -G ".whl/*.whl" > /dev/null; then
    mapfile -t missing < <("$PY" - <<'PYEOF'
import glob, importlib.metadata as md, os
for wheel in sorted(glob.glob(".whl/*.whl")):
    try:
        md.version(os.path.basename(wheel).split("-")[0])
    except md.PackageNotFoundError:
        print(wheel)
PYEOF
)
    if (( ${#missing[@]} )); then
        echo "installing ${missing[*]}"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "${missing[@]}" && export PYTHONPATH="/tmp/site:$PYTHONPATH"
    fi
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__)"
for pkg in diffusers denoising_diffusion_pytorch; do
    "$PY" -c "import $pkg" 2>/dev/null || echo "note: $pkg does not import here; its rows will be skipped"
done

run() {  # run NAME SECONDS COMMAND...: one measurement, its log kept, a hang cut off
    local name=$1 limit=$2
    shift 2
    echo; echo "== $name (at most ${limit}s)"
    timeout "$limit" "$PY" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    (( rc == 0 )) || echo "!! $name exited with $rc"
}

run train 240 bench/train_step.py --preset cifar10 --compile "${args[@]}"
run sample 150 bench/sample_step.py --preset cifar10 --compile --cuda-graph "${args[@]}"
run levers 50 bench/levers.py --preset cifar10 "${levers[@]}"

# this run's records alone, to append to bench/results.jsonl where the repository lives
"$PY" - "$results" "$started" > "$LOGS/new_results.jsonl" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    if line.strip() and json.loads(line)["date"] >= sys.argv[2]:
        print(line, end="")
PYEOF
echo; echo "== summary (records since $started; also in $LOGS/new_results.jsonl)"
"$PY" bench/summary.py --results "$results" --since "$started"
