"""``minidiffusion visualize data | forward | curves``: pictures of the data, the forward process, a run's curves."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data import DATASETS
from ..diffusion import DDPM, make_objective
from ..errors import UserError
from ..images import save_png
from ..visualize import MIN_CELL, auto_scale, data_grid, forward_figure, pick_images, plot_curves, read_metrics
from .common import add_set, check_not_negative, sections


def _config(dataset: str, overrides: list[str], allowed: tuple[str, ...]):
    """Default config with ``data.name = dataset`` and the ``--set`` overrides (only ``allowed`` sections)."""
    from ..config import Config

    found = {"data": {"name": dataset}}
    for section, keys in sections(overrides, allowed).items():
        found.setdefault(section, {}).update(keys)
    return Config().replace(**found)


DATA_OUT = "<dataset>_data.png"


def _load(cfg):
    from ..data import load_dataset

    return load_dataset(cfg.data, "train")


def run_data(args: argparse.Namespace) -> int:
    check_not_negative(args, "scale", "nrow")
    cfg = _config(args.dataset, args.set, ("data",))
    dataset = _load(cfg)
    images = pick_images(dataset, args.n, args.seed)
    scale = args.scale or auto_scale(dataset.image_size, MIN_CELL)
    path = f"{args.dataset}_data.png" if args.out == DATA_OUT else args.out
    out = save_png(data_grid(images, args.nrow or None, scale), path)
    print(f"wrote {out}")
    return 0


def run_forward(args: argparse.Namespace) -> int:
    check_not_negative(args, "scale")
    cfg = _config(args.dataset, args.set, ("data", "diffusion"))
    objective = make_objective(cfg.diffusion)
    levels = objective.parse_levels(args.timesteps or objective.default_levels)
    # --schedule picks the β schedules of a ddpm figure (linear with diffusion.beta_start/beta_end); the other
    # objectives show their own path: x0 + σ n (edm, shown clipped to [-1, 1]) or (1 - t) x0 + t n (flow)
    schedules = objective.forward_variants(args.schedule)
    title = objective.forward_title(args.dataset)
    dataset = _load(cfg)
    images = pick_images(dataset, args.n, args.seed)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(args.seed))
    scale = args.scale or auto_scale(dataset.image_size, MIN_CELL)
    figure = forward_figure(images, schedules, levels, noise, scale=scale, title=title,
                            label=objective.label)
    out = save_png(figure, args.out)
    print(f"wrote {out}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from ..config import load_config

    run = Path(args.run)
    records = read_metrics(run)
    quartiles, name = None, "objective unknown"
    run_dir = run if run.is_dir() else run.parent
    config_path = run_dir / "config.toml"
    if config_path.is_file():
        try:
            objective = make_objective(load_config(config_path).diffusion)
            quartiles, name = [objective.quartile_label(q) for q in range(4)], objective.name
        except UserError:
            pass  # an old or hand-edited config: label quartiles without their t ranges
    out = plot_curves(records, args.out, smooth=args.smooth, quartiles=quartiles,
                      title=f"run {run_dir.resolve().name} ({name})")
    print(f"wrote {out} ({len(records)} points, steps {records[0]['step']}..{records[-1]['step']})")
    return 0


def register(subparsers, formatter_class) -> None:
    """Add ``minidiffusion visualize data | forward | curves``."""
    p = subparsers.add_parser(
        "visualize", help="pictures: data grid, forward process, training curves", formatter_class=formatter_class,
        description="Pictures built from the library. The denoising video and snapshots come from "
                    "`minidiffusion sample --video / --snapshots`.",
        epilog="example: minidiffusion visualize forward --dataset mnist --schedule both --out forward.png")
    figures = p.add_subparsers(dest="figure", required=True, metavar="{data,forward,curves}")

    def add_data_args(q: argparse.ArgumentParser, n: int, set_help: str) -> None:
        q.add_argument("--dataset", default="mnist", choices=tuple(DATASETS), help="which images")
        q.add_argument("--n", type=int, default=n, help="number of images")
        q.add_argument("--seed", type=int, default=0, help="which images (and, for forward, which noise)")
        q.add_argument("--scale", type=int, default=0,
                       help=f"upscale factor per image; 0 = enough for an image to be {MIN_CELL} pixels wide")
        add_set(q, "SECTION.KEY=VALUE", set_help)

    q = figures.add_parser("data", help="a grid of training images", formatter_class=formatter_class,
                           description="A grid of images drawn at random from a dataset's training split.",
                           epilog="example: minidiffusion visualize data --dataset mnist --n 96 --out mnist_data.png\n"
                                  "         minidiffusion visualize data --dataset folder --set data.root=photos "
                                  "--set data.image_size=64")
    add_data_args(q, 96, "a data option (repeatable), e.g. --set data.root=DIR --set data.image_size=64")
    q.add_argument("--nrow", type=int, default=0, help="images per row; 0 = a divisor of --n near its square root")
    q.add_argument("--out", default=DATA_OUT, help="PNG to write")
    q.set_defaults(func=run_data)

    q = figures.add_parser("forward", help="the forward (noising) process q(x_t | x0)", formatter_class=formatter_class,
                           description="Images noised by q_sample to increasing t, one column per t and one row per "
                                       "image; each row uses one noise draw for all its columns.",
                           epilog="example: minidiffusion visualize forward --dataset mnist --schedule both "
                                  "--out forward.png\n"
                                  "         minidiffusion visualize forward --dataset cifar10 "
                                  "--timesteps 0,250,500,999")
    add_data_args(q, 6, "a data or diffusion option (repeatable), e.g. --set diffusion.num_timesteps=500")
    q.add_argument("--timesteps", default=None, metavar="T,T,...",
                   help="noise levels, one column each: 0-based timesteps (ddpm), t in [0, 1] (flow), σ (edm); "
                        f"default {DDPM.default_levels} for ddpm")
    q.add_argument("--schedule", choices=("linear", "cosine", "both"), default="linear",
                   help="noise schedule; both = linear above cosine")
    q.add_argument("--out", default="forward.png", help="PNG to write")
    q.set_defaults(func=run_forward)

    q = figures.add_parser("curves", help="training curves from a run's metrics.jsonl (needs matplotlib)",
                           formatter_class=formatter_class,
                           description="Training loss (smoothed), loss per timestep quartile and images/s against "
                                       "step, from RUN/metrics.jsonl. Needs the 'viz' extra (matplotlib).",
                           epilog="example: minidiffusion visualize curves --run runs/quick --out curves.png")
    q.add_argument("--run", required=True, help="run directory (or its metrics.jsonl)")
    q.add_argument("--out", default="curves.png", help="PNG to write")
    q.add_argument("--smooth", type=float, default=0.9, help="EMA smoothing in [0, 1); 0 = raw")
    q.set_defaults(func=run_curves)
