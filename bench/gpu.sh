#!/usr/bin/env bash
# Every GPU measurement, for a lent GPU machine that has torch but not diffusers. Carry the wheels from
# bench/README.md in .whl/. This run's records go to $OUT/new_results.jsonl (the device tool's output folder; else
# /tmp/bench-gpu): append them to bench/results.jsonl where the repository lives. Logs: logs.tgz there.
#
#   bash bench/gpu.sh profile mnist_speed mnist200     # about 6 minutes on one H100/H200
#   bash bench/gpu.sh train sample                     # about 4 minutes
#   bash bench/gpu.sh --smoke                          # here, on the CPU: the same code paths at tiny sizes
#
# Steps:
#   profile      torch.profiler over 20 training steps of `mnist` and `cifar10`, as the loop takes them now and as
#                it took them until 2026-12-04 (bench/profile_step.py --legacy)
#   mnist_speed  the `mnist-flow` step at batch 128 in bf16: ours eager / compiled with CUDA graphs, channels_last /
#                contiguous, against diffusers eager; the fastest of ours is written to best-mnist.json
#   mnist200     ours (on that fastest path) and diffusers, both trained for 200 s at once on this GPU, then 2,000
#                samples each, scored (bench/mnist200.py); the samples come back as gpu-200s-*.npz
#   train        the `cifar10` step (35.7M, batch 128, bf16): ours eager (both layouts) and compiled with CUDA graphs
#                against diffusers eager and compiled
#   sample       one `cifar10` network evaluation at batch 1000: ours with compile + CUDA graph against diffusers
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUTDIR=${OUT:-/tmp/bench-gpu}  # at most 8 files come back from $OUT: the logs travel as one archive
LOGS=/tmp/bench-gpu-logs
mkdir -p "$OUTDIR" "$LOGS"

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
steps=("$@")
(( ${#steps[@]} )) || steps=(profile mnist_speed mnist200 train sample)
results="$OUTDIR/new_results.jsonl"
if (( smoke )); then
    dev=(--device cpu)
    args=(--device cpu --smoke --mfu --compile-backend eager)
    mnist_variants=eager-cl,eager-contiguous,ro-cl
    mnist200=(--smoke)
    seconds=6
    results="$LOGS/smoke.jsonl"
else
    dev=(--device cuda)
    args=(--device cuda --precision bf16 --rounds 5)
    mnist_variants=${MNIST_VARIANTS:-eager-cl,eager-contiguous,ro-cl,ro-contiguous}
    mnist200=(--device cuda)
    seconds=200
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
"$PY" -c "import diffusers" 2>/dev/null || echo "note: diffusers does not import here; its rows will be skipped"

run() {  # run NAME SECONDS COMMAND...: one measurement, its log kept, a hang cut off (its whole process group)
    local name=$1 limit=$2
    shift 2
    echo; echo "== $name (at most ${limit}s)"
    # into a file, not through a pipe: compile workers outliving a killed run would hold a pipe open forever
    timeout -k 5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    grep -v '^USDT:' "$LOGS/$name.log"
    (( rc == 0 )) || echo "!! $name exited with $rc"
    tar -czf "$OUTDIR/logs.tgz" -C "$LOGS" .
}

mnist200_both() {  # ours and diffusers side by side: two processes on the one GPU, the same $seconds
    local best=()
    [[ -s "$OUTDIR/best-mnist.json" ]] && best=(--best "$OUTDIR/best-mnist.json")
    local note="ours and diffusers trained at the same time on this GPU, two processes"
    echo; echo "== mnist200: ours and diffusers, ${seconds}s of training each, side by side"
    timeout -k 5 $((seconds + 150)) "$PY" bench/mnist200.py --who ours --seconds "$seconds" "${best[@]}" \
        "${mnist200[@]}" --samples "$OUTDIR/gpu-200s-ours.npz" --results "$results" --note "$note" \
        > "$LOGS/mnist200_ours.log" 2>&1 &
    local ours=$!
    timeout -k 5 $((seconds + 150)) "$PY" bench/mnist200.py --who diffusers --seconds "$seconds" \
        "${mnist200[@]}" --samples "$OUTDIR/gpu-200s-diffusers.npz" --results "$results" --note "$note" \
        > "$LOGS/mnist200_diffusers.log" 2>&1 &
    local theirs=$!
    wait $ours || echo "!! mnist200 ours exited with $?"
    wait $theirs || echo "!! mnist200 diffusers exited with $?"
    tail -n 3 "$LOGS/mnist200_ours.log" "$LOGS/mnist200_diffusers.log"
    tar -czf "$OUTDIR/logs.tgz" -C "$LOGS" .
}

for step in "${steps[@]}"; do
    case $step in
        profile_mnist)
            run profile_mnist 90 "$PY" bench/profile_step.py --preset mnist "${dev[@]}" --legacy --results "$results" \
                $( (( smoke )) && echo --smoke ) ;;
        profile)
            run profile_mnist 90 "$PY" bench/profile_step.py --preset mnist "${dev[@]}" --legacy --results "$results" \
                $( (( smoke )) && echo --smoke )
            run profile_cifar10 90 "$PY" bench/profile_step.py --preset cifar10 "${dev[@]}" --legacy \
                --results "$results" $( (( smoke )) && echo --smoke ) ;;
        mnist_speed)
            run mnist_speed "${MNIST_SPEED_LIMIT:-150}" "$PY" bench/train_step.py --preset mnist-flow --anchors diffusers \
                --ours "$mnist_variants" --best "$OUTDIR/best-mnist.json" "${args[@]}" --results "$results" ;;
        mnist200) mnist200_both ;;
        train)
            run train 240 "$PY" bench/train_step.py --preset cifar10 --anchors diffusers --compile \
                --ours eager-cl,eager-contiguous,ro-cl "${args[@]}" --results "$results" ;;
        sample)
            run sample 120 "$PY" bench/sample_step.py --preset cifar10 --anchors diffusers --compile --cuda-graph \
                "${args[@]}" --results "$results" ;;
        *) echo "unknown step $step (profile, mnist_speed, mnist200, train, sample)"; exit 2 ;;
    esac
done

echo; echo "== summary (this run's records: $results)"
"$PY" - "$results" "$started" <<'PYEOF'
import json, os, sys
path, since = sys.argv[1:]
records = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
records = [r for r in records if r.get("date", "") >= since[:10]]
for r in records:
    if r["name"].startswith("profile"):
        print(f"{r['name']:<16} {'legacy' if r['legacy'] else 'now':<7} {r['ms_per_step']:>8.2f} ms/step "
              f"{r['launches_per_step']:>7.0f} launches {r['syncs_per_step']:>5.1f} waits "
              f"{r['sync_calls_per_step']:>5.1f} sync calls  top: {r['top'][0]['op'] if r['top'] else '-'}")
for r in records:
    if "anchor" in r:
        mfu = r.get("mfu") or {}
        print(f"{r['name']:<16} vs {r['anchor']:<10} {r['theirs_settings']:<34} ours {r['ours']:>10,.1f} "
              f"theirs {r['theirs']:>10,.1f} {r['unit']:<10} ratio {r['ratio']:.2f} paired {r['ratio_paired']:.2f}"
              f"  ours: {r['ours_settings']}  MFU {mfu.get('ours', 0):.1%}/{mfu.get('theirs', 0):.1%}")
for r in records:
    if r["name"] == "mnist in seconds":
        unguided = r.get("unguided") or {}
        print(f"mnist {r['seconds']:g}s {r['who']:<10} steps {r['train_steps']:>6} img/s {r['img_per_s'] or 0:>8,.0f} "
              f"confident {r['confident']:.3f} FID {r['fid_classifier']:.2f} H {r['entropy_bits']:.3f} "
              f"NFE {r['nfe']} ({r['sampler']})"
              + (f" | unguided {unguided['confident']:.3f} / {unguided['fid_classifier']:.2f}" if unguided else ""))
PYEOF
