#!/usr/bin/env bash
# The CPU quickstart: install, train the `quick` preset on the bundled MNIST, then draw 64 digits, the denoising
# video and snapshots of the reverse process. Under ten minutes on a 2-core CPU.
cd "$(dirname "$0")/.."
source scripts/venv.sh
export OMP_WAIT_POLICY=PASSIVE  # spinning OpenMP threads cost up to 5x on a busy 2-core machine
RUN=${1:-runs/quick}
# Two worker processes of one thread each train 1.3x faster than one process of two threads (bench/RESULTS.md).
WORKERS=$("$VENV/bin/python" -c "import os; print(min(2, os.cpu_count() or 1))")
# 2,000 steps take 5-8 minutes on 2 cores; on a slower machine training stops after 7.7 minutes with its final
# checkpoint (the schedule's last steps skipped), so the whole script stays within 10. Run it again to finish them.
"$VENV/bin/minidiffusion" train --config quick --out "$RUN" --resume --workers "$WORKERS" --set train.time_limit=460
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --num-images 64 --out "$RUN/samples.png" \
    --video "$RUN/denoising.gif"
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --num-images 16 --snapshots 1,0.75,0.5,0.25,0 \
    --out "$RUN/snapshots.png"
echo "done: $RUN/samples.png, $RUN/denoising.gif, $RUN/snapshots.png"
