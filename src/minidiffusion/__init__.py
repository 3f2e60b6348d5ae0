"""minidiffusion: small, fast, tested DDPM-family image diffusion in PyTorch.

    model = minidiffusion.load("runs/mnist")              # a run directory or a checkpoint file
    images = model.sample(16, sampler="ddim", steps=50)   # uint8 (16, C, H, W)

    cfg = minidiffusion.load_config("quick", ["train.steps=500"])
    minidiffusion.train(cfg, "runs/quick")

``import minidiffusion`` stays cheap (no torch): the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {"load": "api", "Model": "api", "Config": "config", "load_config": "config", "UserError": "errors",
         "train": "api"}
__all__ = ["Config", "Model", "UserError", "__version__", "load", "load_config", "train"]
# submodules reachable as attributes without importing them first (minidiffusion.evaluate.classifier_score(...))
_SUBMODULES = {"api", "checkpoint", "config", "data", "diffusion", "distributed", "evaluate", "features", "images",
               "interop", "models", "sampling", "training", "visualize"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
