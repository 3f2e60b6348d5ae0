#!/usr/bin/env bash
# Every GPU measurement, for a lent GPU machine that has torch but not diffusers. Carry the wheels from
# bench/README.md in .whl/. Results are appended to bench/results.jsonl there; this run's records, logs and pictures
# go to $OUT (the device tool's output folder) or /tmp/bench-gpu: append new_results.jsonl to bench/results.jsonl here.
# Logs: logs.tgz there.
#
#   bash bench/gpu.sh                          # everything, about 13 minutes on one H100/H200
#   bash bench/gpu.sh sweep mnist200 train     # some steps, in this order (each has its own time limit)
#   bash bench/gpu.sh --smoke                  # here, on the CPU: the same code paths at tiny sizes, nothing recorded
#
# Steps: sweep (quick-preset variants scored by the classifier, bench/quick_sweep.py), mnist200 (mnist.toml trained
# for 200 seconds, then scored without and with autoguidance by its step-900 checkpoint, and drawn), train / sample (cifar10 shape against diffusers and lucid, eager and
# compiled), mnist_speed (mnist.toml training img/s against the anchors), levers.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUTDIR=${OUT:-/tmp/bench-gpu}  # at most 8 files come back from $OUT: the logs travel as one archive
LOGS=/tmp/bench-gpu-logs
rm -rf "$LOGS"
mkdir -p "$OUTDIR" "$LOGS"

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
steps=("$@")
(( ${#steps[@]} )) || steps=(sweep mnist200 train sample mnist_speed levers)
if (( smoke )); then
    args=(--device cpu --smoke --mfu --compile-backend eager --results "$LOGS/smoke.jsonl")
    levers=(--device cpu --smoke --levers schedule_tables,host_sync,channels_last,cudnn_benchmark --results "$LOGS/smoke.jsonl")
    sweep=(--device cpu --jobs 2 --variants base,p2-32 --n 20 --set train.steps=4 train.warmup_steps=1 sample.n=4)
    mnist=(train.device=cpu train.time_limit=5 model.base_channels=16 sample.n=4 sample.steps=4)
    evaluate=(--device cpu --n 20 --steps 4)
    seconds=5
    results="$LOGS/smoke.jsonl"
    rm -f "$results"
else
    args=(--device cuda --precision bf16 --rounds 5)
    levers=(--device cuda --rounds 5)
    sweep=(--device cuda --jobs 8)
    mnist=(train.device=cuda train.precision=bf16 train.channels_last=true train.time_limit=200)
    evaluate=(--device cuda --n 1000)
    seconds=200
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

run() {  # run NAME SECONDS COMMAND...: one measurement, its log kept, a hang cut off (its whole process group)
    local name=$1 limit=$2
    shift 2
    echo; echo "== $name (at most ${limit}s)"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    (( rc == 0 )) || echo "!! $name exited with $rc"
    tar -czf "$OUTDIR/logs.tgz" -C "$LOGS" .
}

mnist200() {  # mnist.toml for $seconds of training (the lr schedule is constant: steps only bound it), then scored
    local run=/tmp/mnist200 sets=() kv
    # checkpoints every 900 steps: the first is the autoguidance guide of the second evaluation
    for kv in "${mnist[@]}" train.steps=1000000 train.sample_every=0 train.checkpoint_every=900 \
              train.keep_checkpoints=100 train.log_every=200; do
        sets+=(--set "$kv")
    done
    rm -rf "$run"
    run mnist200_train $((seconds + 45)) "$PY" -m minidiffusion train --config mnist --out "$run" --no-progress "${sets[@]}"
    run mnist200_evaluate 60 "$PY" -m minidiffusion evaluate --checkpoint "$run" --no-progress "${evaluate[@]}"
    local guide
    guide=$(ls "$run"/checkpoints/ckpt_*.json | head -1)
    run mnist200_evaluate_guided 90 "$PY" -m minidiffusion evaluate --checkpoint "$run" --no-progress \
        --guidance 2 --guide "$guide" "${evaluate[@]}"
    run mnist200_sample 30 "$PY" -m minidiffusion sample --checkpoint "$run" --n 64 --no-progress \
        --out "$OUTDIR/mnist200.png"
    cp "$run/metrics.jsonl" "$OUTDIR/mnist200_metrics.jsonl"
}

for step in "${steps[@]}"; do
    case $step in
        sweep) run sweep 100 "$PY" bench/quick_sweep.py "${sweep[@]}" --out /tmp/sweep --results "$OUTDIR/sweep.jsonl" ;;
        mnist200) mnist200 ;;
        train) run train 210 "$PY" bench/train_step.py --preset cifar10 --compile "${args[@]}" ;;
        sample) run sample 120 "$PY" bench/sample_step.py --preset cifar10 --compile --cuda-graph "${args[@]}" ;;
        mnist_speed) run mnist_speed 60 "$PY" bench/train_step.py --preset mnist "${args[@]}" ;;
        levers) run levers 50 "$PY" bench/levers.py --preset cifar10 "${levers[@]}" ;;
        *) echo "unknown step $step (sweep, mnist200, train, sample, mnist_speed, levers)"; exit 2 ;;
    esac
done

# this run's records alone, to append to bench/results.jsonl where the repository lives
"$PY" - "$results" "$started" > "$OUTDIR/new_results.jsonl" <<'PYEOF'
import json, os, sys
for line in open(sys.argv[1]) if os.path.exists(sys.argv[1]) else ():
    if line.strip() and json.loads(line)["date"] >= sys.argv[2]:
        print(line, end="")
PYEOF
echo; echo "== summary (records since $started; also in $OUTDIR/new_results.jsonl)"
"$PY" bench/summary.py --results "$results" --since "$started"
if [[ -s "$OUTDIR/sweep.jsonl" ]]; then
    echo; echo "== quick sweep (confident fraction of 1,000 classifier-scored samples)"
    "$PY" - "$OUTDIR/sweep.jsonl" <<'PYEOF'
import json, sys
for r in sorted((json.loads(l) for l in open(sys.argv[1])), key=lambda r: -r["confident"]):
    print(f"{r['variant']:14} {r['sampler']:9} steps {r['steps']:6} params {r['params']:9,} {r['confident']:.3f}")
PYEOF
fi
