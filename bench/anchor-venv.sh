#!/usr/bin/env bash
# The benchmark environment with all three contenders: ours, diffusers and lucid's denoising-diffusion-pytorch.
# lucid needs torchvision, and torchvision needs a torch of its own release (here 2.14.1, a CUDA build that also runs
# on the CPU), so it lives in .bench-venv/ beside the project's .venv/, never in it: installed there, torchvision
# would replace the pinned CPU torch and break the tests. A few minutes; rerunning it is harmless.
#
#   bash bench/anchor-venv.sh          # then: .bench-venv/bin/python bench/train_step.py --preset quick
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BENCH_VENV:-.bench-venv}
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install -q denoising-diffusion-pytorch diffusers numpy pillow tqdm safetensors
"$VENV/bin/pip" install -q -e . --no-deps
"$VENV/bin/python" -c "import torch, torchvision, diffusers, denoising_diffusion_pytorch, minidiffusion; \
print('ready:', '$VENV', '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
