"""Tiny configs and datasets shared by the tests."""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from minidiffusion.config import Config
from minidiffusion.training import train


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


def full_and_resumed(cfg: Config, tmp_path: Path) -> tuple[Path, Path]:
    """Train ``cfg`` (6 steps, checkpoints at 3 and 6) into tmp_path/full; then tmp_path/cut, a copy of it stopped
    after step 3 (exactly what a run killed there leaves: the step-6 checkpoint gone), resumed to the end."""
    train(cfg, tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for suffix in (".json", ".safetensors"):
        (tmp_path / "cut" / "checkpoints" / f"ckpt_00000006{suffix}").unlink()
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    return tmp_path / "full", tmp_path / "cut"
