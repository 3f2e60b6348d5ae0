"""Which device a run uses: one small module that training, sampling, evaluation and the CLI all ask."""

from __future__ import annotations

import re

import torch

from .errors import UserError

# train.precision -> the autocast dtype (None: plain fp32); the one map training, sampling and the benchmarks use
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


DEVICE_FORMS = "auto, cpu, cuda, cuda:N (the N-th visible GPU) or mps (Apple silicon)"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def check_device_name(name: str, key: str = "train.device") -> str:
    """``name`` if it is a device this tool can use, else a one-line error naming ``key`` and the valid forms."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise UserError(f"{key}={name!r}: choose {DEVICE_FORMS}")
    return name


def resolve_device(name: str, key: str = "train.device") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; a device that is not there is an error naming ``key``.

    Which GPU "cuda" means is PyTorch's current device (the first of CUDA_VISIBLE_DEVICES); under torchrun each rank
    takes cuda:LOCAL_RANK (``distributed.local_device``)."""
    check_device_name(name, key)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{key}={name} but no GPU is visible to PyTorch (use {key}=cpu or auto)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"{key}={name} but PyTorch sees {torch.cuda.device_count()} GPU(s), cuda:0 .. "
                            f"cuda:{torch.cuda.device_count() - 1} (CUDA_VISIBLE_DEVICES renumbers them)")
    if name == "mps" and not (torch.backends.mps.is_available()):
        raise UserError(f"{key}=mps but PyTorch has no MPS device here (Apple silicon with a macOS build of torch)")
    return name
