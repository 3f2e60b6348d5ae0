#!/usr/bin/env bash
# The CPU quickstart: install, train the `quick` preset on the bundled MNIST, then draw 64 digits, the denoising
# video and snapshots of the reverse process. Under ten minutes on a 2-core CPU.
#
#   bash scripts/quickstart.sh                              # runs/quick, the quick preset
#   bash scripts/quickstart.sh runs/mnist-cond mnist-cond   # the class-conditional preset: a labelled row per digit
#   bash scripts/quickstart.sh runs/quick quick --set train.time_limit=900   # more options for `train` come last
cd "$(dirname "$0")/.."
source scripts/venv.sh
export OMP_WAIT_POLICY=PASSIVE  # spinning OpenMP threads cost up to 5x on a busy 2-core machine
RUN=${1:-runs/quick}
PRESET=${2:-quick}
shift $(($# < 2 ? $# : 2))
# Two worker processes of one thread each train 1.3x faster than one process of two threads (bench/RESULTS.md).
WORKERS=$("$VENV/bin/python" -c "import os; print(min(2, os.cpu_count() or 1))")
# Training gets 460 s of the ten minutes: the schedule is fitted to them (train.fit_time_limit), so a fast machine
# trains up to 8,000 steps and a slow one fewer, each with its learning rate decayed to the end.
"$VENV/bin/minidiffusion" train --config "$PRESET" --out "$RUN" --resume --workers "$WORKERS" --set train.steps=8000 \
    --set train.time_limit=460 --set train.fit_time_limit=true "$@"
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --out "$RUN/samples.png" \
    --video "$RUN/denoising.gif"
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --num-images 16 --snapshots 1,0.75,0.5,0.25,0 \
    --out "$RUN/snapshots.png"
echo "done: $RUN/samples.png, $RUN/denoising.gif, $RUN/snapshots.png"
