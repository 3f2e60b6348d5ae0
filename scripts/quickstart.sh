#!/usr/bin/env bash
# The CPU quickstart: install, train the `quick` preset on the bundled MNIST, then draw 64 digits,
# the denoising video and the t = 999/749/499/0 snapshots. About 10 minutes on a 2-core CPU.
cd "$(dirname "$0")/.."
source scripts/venv.sh
RUN=${1:-runs/quick}
"$VENV/bin/minidiffusion" train --config quick --out "$RUN" --resume
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --n 64 --out "$RUN/samples.png" --video "$RUN/denoising.gif"
"$VENV/bin/minidiffusion" sample --checkpoint "$RUN" --n 16 --sampler ddpm --steps 1000 --batch-size 16 \
    --snapshots 999,749,499,0 --out "$RUN/snapshots.png"
echo "done: $RUN/samples.png, $RUN/denoising.gif, $RUN/snapshots.png"
