"""``minidiffusion train``: train a model (or, with --dry-run, show what would be trained)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from . import launch
from .common import add_config_args

EXAMPLES = ("example: minidiffusion train --config quick --out runs/quick\n"
            "         minidiffusion train --config configs/cifar10.toml --set train.batch_size=64 --dry-run")


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser("train", help="train a model", formatter_class=formatter_class, epilog=EXAMPLES,
                              description="Train a diffusion model; writes config.toml, metrics.jsonl, samples/ and "
                                          "checkpoints/ to --out.")
    add_config_args(p)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="train on your own images: a folder of them (searched recursively; with class subfolders, "
                        "--set data.conditional=true makes the run class-conditional); the image size and colour are "
                        "the images' own when they all share one, else set data.image_size. Default config: "
                        "folder-small")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out, with the run's own config.toml "
                        "unless --config is given")
    p.add_argument("--allow-changes", action="store_true",
                   help="--resume: train on with a config that differs from the run's in more than length, "
                        "logging and sampling keys (the old config is kept as config.step_N.toml)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter count, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train as N processes on this machine (torchrun's world, started here), each with cores/N "
                        "threads: on a CPU, 2 workers train the quick preset 1.3x faster than one process")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config

    own = Path(args.out) / "config.toml" if args.out and args.resume else None
    if args.config is None and own is not None and not own.is_file() and (own.parent / "checkpoints").is_dir():
        raise UserError(f"--resume: {own} is missing, so the run's config is unknown: pass the config it was trained "
                        f"with (--config FILE; its newest checkpoint's JSON holds it under \"config\")")
    if args.data is not None:
        args.config = args.config or "folder-small"
        args.set = [*_folder_overrides(Path(args.data), args.set), *args.set]
    if args.config is None:  # --resume continues the run's own config; otherwise the quick preset
        args.config = own if own is not None and own.is_file() else "quick"
    cfg = load_config(args.config, args.set, saved=own is not None and args.config == own)
    if args.dry_run:
        from ..data import class_names, image_shape
        from ..models.unet import build_model, count_parameters

        channels, size = image_shape(cfg.data)
        classes = class_names(cfg.data)
        print(cfg.to_toml())
        print(f"image shape: {channels}x{size}x{size}")
        if classes:
            print(f"classes: {len(classes)} ({', '.join(classes)})")
        print(f"parameters: {count_parameters(build_model(cfg.model, channels, size, len(classes))):,}")
        return 0
    out = Path(args.out) if args.out else Path("runs") / Path(str(args.config)).stem
    if args.workers > 1 and not launch.is_worker():
        from ..distributed import World

        if World.from_env().distributed:
            raise UserError("--workers starts its own processes: under torchrun, leave it out")
        return launch.run_workers(args.argv, args.workers, out)
    if launch.is_worker():
        launch.follow_launcher()
    from ..api import train

    train(cfg, out, resume=args.resume, progress=not args.no_progress, allow_changes=args.allow_changes)
    return 0


def _folder_overrides(root: Path, overrides: list[str]) -> list[str]:
    """``--data DIR`` as config keys: a folder dataset at DIR, at the size and colour its images share (unless the
    command line sets them)."""
    from ..config import parse_override
    from ..data.folder import common_shape, scan

    given = {f"{section}.{key}" for section, key, _ in map(parse_override, overrides)}
    keys = ["data.name=folder", f"data.root={json.dumps(str(root))}"]
    if "data.image_size" not in given:
        side, channels = common_shape(root, scan(root))
        keys.append(f"data.image_size={side}")
        if "data.channels" not in given:
            keys.append(f"data.channels={channels}")
    return keys
