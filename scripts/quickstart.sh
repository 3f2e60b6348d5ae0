#!/usr/bin/env bash
# The CPU quickstart: install, train the `quick` preset on the bundled MNIST, then draw 64 digits,
# the denoising video and the t = 999/749/499/0 snapshots. About ten minutes on a 2-core CPU.
cd "$(dirname "$0")/.."
source scripts/venv.sh
export OMP_WAIT_POLICY=PASSIVE  # spinning OpenMP threads cost up to 5x on a busy 2-core machine
RUN=${1:-runs/quick}
# 2,000 steps take 8-10 minutes on 2 cores; on a slower machine training stops at 8.5 minutes, with its final
# checkpoint (the schedule's last steps skipped), so the whole script stays within 12. Run it again to finish them.
"$VENV/bin/minidiffusion" train --config quick --out "$RUN" --resume --set train.time_limit=510
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --n 64 --out "$RUN/samples.png" --video "$RUN/denoising.gif" --every 4
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --n 16 --sampler ddpm --steps 1000 --batch-size 16 \
    --snapshots 999,749,499,0 --out "$RUN/snapshots.png"
echo "done: $RUN/samples.png, $RUN/denoising.gif, $RUN/snapshots.png"
