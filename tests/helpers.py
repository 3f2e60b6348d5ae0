"""Tiny configs and datasets shared by the tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from minidiffusion.config import Config


def make_folder(root: Path, n: int = 32, size: int = 8, seed: int = 0) -> Path:
    """n small greyscale PNGs with a bright square at a random place: real structure, tiny cost."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        img = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 3, 2)
        img[y:y + 3, x:x + 3] = 255
        Image.fromarray(img).save(root / f"{k:03d}.png")
    return root


def tiny_config(root: Path, **sections) -> Config:
    base = {
        "model": {"variant": "simple", "base_channels": 8, "channel_mults": [1, 2], "dropout": 0.0},
        "data": {"name": "folder", "root": str(root), "image_size": 8, "channels": 1, "in_memory": "yes"},
        "train": {"steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "log_every": 2,
                  "checkpoint_every": 3, "ema_decay": 0.9, "device": "cpu"},
        "sample": {"n": 4, "steps": 3, "sampler": "ddim", "batch_size": 4},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return Config.from_dict(base)
