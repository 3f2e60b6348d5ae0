"""The command line: ``minidiffusion train | sample | visualize | evaluate | convert``.

Every user error ends as one line on stderr and exit status 2 (``--debug`` shows the traceback).
Subcommands other than train and sample register themselves from their own modules.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .diffusion.registry import SAMPLERS
from .errors import UserError

EXAMPLES = {
    "train": "example: minidiffusion train --config quick --out runs/quick\n"
             "         minidiffusion train --config configs/cifar10.toml --set train.batch_size=64 --dry-run",
    "sample": "example: minidiffusion sample --checkpoint runs/quick --num-images 64 --out grid.png",
}

# Image shape of each dataset before any resize (folder: data.channels x data.image_size).
NATIVE_SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        """argparse's '(default: X)', unless the help already says what the default is or there is none."""
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        raise UserError(f"{self.prog}: {message}")


def dataset_shape(cfg) -> tuple[int, int]:
    """(channels, image size) the data config will produce, without reading any data."""
    d = cfg.data
    if d.name == "folder":
        if not d.image_size:
            raise UserError("data.name=folder needs data.image_size (e.g. --set data.image_size=64)")
        return d.channels or 3, d.image_size
    channels, size = NATIVE_SHAPES[d.name]
    return channels, d.image_size or size


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="a TOML file or a preset name (see configs/); default: with "
                                                  "--resume the run's own config.toml, else quick")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set train.lr=1e-4")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .models.unet import build_model, count_parameters

    out = args.out
    own = Path(out) / "config.toml" if out and args.resume else None
    if args.config is None:  # --resume continues the run's own config; otherwise the quick preset
        args.config = own if own is not None and own.is_file() else "quick"
    cfg = load_config(args.config, args.set, saved=own is not None and args.config == own)
    if args.dry_run:
        channels, size = dataset_shape(cfg)
        n = count_parameters(build_model(cfg.model, channels, size))
        print(cfg.to_toml())
        print(f"image shape: {channels}x{size}x{size}")
        print(f"parameters: {n:,}")
        return 0
    from .train import train

    out = out or Path("runs") / Path(str(args.config)).stem
    train(cfg, out, resume=args.resume, progress=not args.no_progress, allow_changes=args.allow_changes)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import distributed
    from .devices import resolve_device
    from .images import make_grid, save_grid, save_npz, save_png
    from .sampling import generate_sharded, guide_for, load_model, with_guidance

    out = _sample_out(Path(args.out), args.snapshots)  # a typo fails now, not after minutes of sampling
    device = resolve_device(args.device, "--device")
    world = distributed.init(device)  # under torchrun, each rank draws a contiguous share of the images
    device = distributed.local_device(device, world)
    net, ckpt = distributed.agreed(lambda: load_model(args.checkpoint, ema=not args.no_ema, device=device), world)
    cfg = ckpt.config
    if args.set:
        cfg = cfg.replace(**_sections(args.set, allowed=("sample",)))
    if args.n is None:
        args.n = cfg.sample.n
    elif args.n < 1:
        raise UserError(f"--num-images {args.n}: draw at least one image")
    cfg = with_guidance(cfg, args.guidance)
    guide = distributed.agreed(lambda: guide_for(cfg, ckpt, args.guide, device), world)
    channels, size = ckpt.meta["data"]["channels"], ckpt.meta["data"]["image_size"]
    recorder = None
    if args.video or args.snapshots:
        from .diffusion.objectives import level_label, make_objective
        from .visualize import DenoisingRecorder, check_video_path, parse_levels

        if world.distributed:
            raise distributed.EveryRankError("--video/--snapshots record one batch in one process: run them "
                                             "without torchrun", quiet=not world.is_main)
        if args.n > (args.batch_size or cfg.sample.batch_size):
            raise UserError("--video/--snapshots record one batch: use --n <= --batch-size")
        if args.video:
            check_video_path(args.video)  # a bad extension or a missing extra fails before sampling, not after
        objective = make_objective(cfg.diffusion)
        if args.snapshots:
            wanted = parse_levels(args.snapshots, objective)
        recorder = DenoisingRecorder(every=args.every, with_x0=args.with_x0,
                                     label=lambda level: level_label(objective.name, level))
    images = generate_sharded(net, cfg, args.n, seed=args.seed, channels=channels, image_size=size, device=device,
                              world=world, sampler=args.sampler, steps=args.steps, batch_size=args.batch_size,
                              callback=recorder, progress=not args.no_progress, guide=guide,
                              channels_last=cfg.train.channels_last)
    if not world.is_main:
        return 0  # rank 0 holds all the images and writes them
    if args.snapshots:
        from .visualize import snapshot_strip

        save_png(snapshot_strip(recorder, images, wanted, log_levels=cfg.diffusion.objective == "edm"), out)
        print(f"wrote {out}")
    elif out.suffix.lower() == ".npz":
        save_npz(images, out)  # (N, H, W, C) uint8
        print(f"wrote {out} ({len(images)} images)")
    elif out.suffix.lower() == ".png":
        save_grid(images, out)
        print(f"wrote {out}")
    else:
        for k, image in enumerate(images):
            save_png(make_grid(image[None], padding=0), out / f"{k:06d}.png")
        print(f"wrote {len(images)} images to {out}/")
    if args.video:
        recorder.write_video(args.video, images, fps=args.fps)
        print(f"wrote {args.video}")
    return 0


def _sample_out(out: Path, snapshots: str | None) -> Path:
    """``sample --out`` checked before any work: a known kind of file, in a directory that can be written."""
    kind = out.suffix.lower()
    if snapshots and kind != ".png":
        raise UserError(f"--out {out}: --snapshots writes one picture: use FILE.png")
    if kind not in (".png", ".npz", ""):
        raise UserError(f"--out {out}: use FILE.png (a grid), FILE.npz, or a directory")
    where = out if kind == "" else out.parent
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write there ({existing} is not a writable directory)")
    return out


def _sections(overrides: list[str], allowed: tuple[str, ...]) -> dict:
    from .config import parse_override

    sections: dict[str, dict] = {}
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in allowed:
            raise UserError(f"--set {text}: only {', '.join(allowed)} keys can be changed here")
        sections.setdefault(section, {})[key] = value
    return sections


def build_parser() -> argparse.ArgumentParser:
    from .sampling import add_guidance_options

    parser = _Parser(prog="minidiffusion", description="Train and sample DDPM-family image diffusion models.")
    parser.add_argument("--version", action="version", version=f"minidiffusion {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model", formatter_class=_Formatter, epilog=EXAMPLES["train"],
                       description="Train a diffusion model; writes config.toml, metrics.jsonl, samples/ and "
                                   "checkpoints/ to --out.")
    add_config_args(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out, with the run's own config.toml "
                        "unless --config is given")
    p.add_argument("--allow-changes", action="store_true",
                   help="--resume: train on with a config that differs from the run's in more than length, "
                        "logging and sampling keys (the old config is kept as config.step_N.toml)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter count, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw images from a checkpoint", formatter_class=_Formatter,
                       epilog=EXAMPLES["sample"] + "\n         minidiffusion sample --checkpoint runs/quick "
                       "--num-images 16 --video denoise.gif --out grid.png")
    p.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint) or checkpoint file")
    p.add_argument("--num-images", "--n", dest="n", type=int, default=None,
                   help="number of images (default: the config's sample.n)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default=None,
                   help="default: the checkpoint config's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0, help="image k of seed s is the same whatever --n/--batch-size")
    p.add_argument("--batch-size", type=int, default=None, help="images per network call")
    p.add_argument("--out", default="samples.png", help="FILE.png (grid), FILE.npz (uint8 NHWC 'images') or DIR/")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    add_guidance_options(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--set", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="sampler options, e.g. --set sample.eta=1.0 --set sample.variance=small")
    p.add_argument("--video", default=None, help="also write the denoising video (FILE.gif or FILE.mp4)")
    p.add_argument("--fps", type=int, default=8, help="video frames per second")
    p.add_argument("--every", type=int, default=1, help="video: keep every K-th step")
    p.add_argument("--with-x0", action="store_true", help="video: show the x0 estimate beside x_t")
    p.add_argument("--snapshots", default=None, metavar="T,T,...",
                   help="write the grid at these noise levels side by side to --out: timesteps for ddpm (e.g. "
                        "999,749,499,0), t in [0, 1] for flow (1,0.75,0.5,0), σ for edm (80,5,0.5,0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)

    for module in ("visualize", "evaluate", "interop"):  # each adds its own subcommand
        if importlib.util.find_spec(f"minidiffusion.{module}") is not None:
            importlib.import_module(f"minidiffusion.{module}").register(sub, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MINIDIFFUSION_DEBUG") == "1"
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all; the others warn only
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        for name in ("n", "steps", "batch_size", "fps", "every"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        code = args.func(args)
        if "torch.distributed" in sys.modules:  # leave torchrun's process group cleanly (NCCL warns otherwise)
            from .distributed import shutdown

            shutdown()
        return code
    except UserError as e:
        if debug:
            raise
        if not getattr(e, "quiet", False):  # under torchrun, an error that every rank hits is printed once
            print(f"error{_rank_tag()}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        failure = None if debug else _distributed_failure(e)
        if failure is None:
            raise
        print(f"error{_rank_tag()}: {failure}", file=sys.stderr)
        return 1


def _rank_tag() -> str:
    """' (rank R)' on the ranks other than 0 of a torchrun launch: each error line says where it happened."""
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and rank != "0" else ""


def _distributed_failure(e: Exception) -> str | None:
    """One line when ``e`` means torchrun's process group broke (a peer died, a collective timed out), else None."""
    if "torch.distributed" not in sys.modules:  # nothing distributed ran: do not import torch to find out
        return None
    from .distributed import describe_failure

    return describe_failure(e)


if __name__ == "__main__":
    sys.exit(main())
