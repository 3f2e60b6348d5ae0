"""Which device a run uses: one small module that training, sampling, evaluation and the CLI all ask."""

from __future__ import annotations

import torch

from .errors import UserError

# train.precision -> the autocast dtype (None: plain fp32); the one map training, sampling and the benchmarks use
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, key: str = "train.device") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; "cuda" without a GPU is an error naming ``key``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but no GPU is visible to PyTorch (use {key}=cpu or auto)")
    return name
