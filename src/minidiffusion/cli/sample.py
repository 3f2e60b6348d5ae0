"""``minidiffusion sample``: draw images from a checkpoint, as a grid, an .npz, PNG files, a video or snapshots."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from ..errors import UserError
from .common import add_sampling_options, add_set, sections

EXAMPLES = ("example: minidiffusion sample --checkpoint runs/quick --num-images 64 --out grid.png\n"
            "         minidiffusion sample --checkpoint runs/quick --num-images 16 --video denoise.gif --out grid.png\n"
            "         minidiffusion sample --checkpoint runs/mnist-cond --class 0,3,7 --cfg 2 --out digits.png")


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser("sample", help="draw images from a checkpoint", formatter_class=formatter_class,
                              epilog=EXAMPLES)
    p.add_argument("--checkpoint", required=True, help="run directory (newest checkpoint) or checkpoint file")
    p.add_argument("--num-images", "--n", dest="n", type=int, default=None,
                   help="number of images (default: the config's sample.n)")
    add_sampling_options(p, seed_help="image k of seed s is the same whatever --n/--batch-size")
    p.add_argument("--class", dest="classes", default=None, metavar="C[,C...]",
                   help="class-conditional checkpoints: the classes to draw, by name or index (e.g. 7, 0,3,7 or "
                        "cat,dog), the images split evenly among them, one grid row each (default: every class)")
    p.add_argument("--out", default="samples.png", help="FILE.png (grid), FILE.npz (uint8 NHWC 'images', and a "
                                                        "conditional run's int64 'labels') or DIR/")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    add_set(p, "sample.KEY=VALUE", "sampler options, e.g. --set sample.eta=1.0 --set sample.variance=small")
    p.add_argument("--video", default=None, help="also write the denoising video (FILE.gif or FILE.mp4)")
    p.add_argument("--fps", type=int, default=8, help="video frames per second")
    p.add_argument("--every", type=int, default=1, help="video: keep every K-th step")
    p.add_argument("--with-x0", action="store_true", help="video: show the x0 estimate beside x_t")
    p.add_argument("--snapshots", default=None, metavar="T,T,...",
                   help="write the grid at these noise levels side by side to --out, in the objective's own time: "
                        "timesteps for ddpm (e.g. 999,749,499,0), t in [0, 1] for flow (1,0.75,0.5,0), σ for edm "
                        "(80,5,0.5,0)")
    p.add_argument("--no-x0", action="store_true",
                   help="snapshots: x_t only, without the row of the network's x0 estimates under it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..config import replace_sample
    from ..devices import resolve_device
    from ..diffusion import make_objective
    from ..images import make_class_grid, make_grid, save_grid, save_npz, save_png
    from ..sampling import Options, class_labels, generate_sharded, guide_for, load_model, parse_classes

    out = _sample_out(Path(args.out), args.snapshots)  # a typo fails now, not after minutes of sampling
    if args.video:
        _check_writable(Path(args.video).parent, f"--video {args.video}")
    device = resolve_device(args.device, "--device")
    world = distributed.init(device)  # under torchrun, each rank draws a contiguous share of the images
    device = distributed.local_device(device, world)
    net, ckpt = distributed.agreed(lambda: load_model(args.checkpoint, ema=not args.no_ema, device=device), world)
    # the [sample] section, built and checked once: the checkpoint's, with --set and the sampling options
    sample = replace_sample(ckpt.config.sample, {**sections(args.set, allowed=("sample",)).get("sample", {}),
                                                 "guidance": args.guidance, "sampler": args.sampler,
                                                 "steps": args.steps, "batch_size": args.batch_size,
                                                 "cfg_weight": args.cfg})
    objective = make_objective(ckpt.config.diffusion)
    if args.n is None:
        args.n = sample.n
    elif args.n < 1:
        raise UserError(f"--num-images {args.n}: draw at least one image")
    labels = None  # the class of each image, for a conditional checkpoint
    if args.classes is not None or ckpt.classes:
        classes = range(len(ckpt.classes)) if args.classes is None else parse_classes(args.classes, ckpt.classes)
        labels = class_labels(args.n, classes)
    guide = distributed.agreed(lambda: guide_for(sample, ckpt, args.guide, device), world)
    recorder = None
    if args.video or args.snapshots:
        from ..visualize import DenoisingRecorder, check_video_path

        if world.distributed:
            raise distributed.EveryRankError("--video/--snapshots record one batch in one process: run them "
                                             "without torchrun", quiet=not world.is_main)
        if args.n > sample.batch_size:
            raise UserError("--video/--snapshots record one batch: use --n <= --batch-size")
        if args.video:
            check_video_path(args.video)  # a bad extension or a missing extra fails before sampling, not after
        if args.snapshots:
            wanted = objective.parse_levels(args.snapshots)
        # a conditional run's classes come in consecutive runs: a grid row per class, as in its PNG grids
        nrow = None if labels is None else int(torch.unique_consecutive(labels, return_counts=True)[1].max())
        recorder = DenoisingRecorder(every=args.every, with_x0=args.with_x0, record_x0=bool(args.snapshots)
                                     and not args.no_x0, nrow=nrow, label=objective.label)
    options = Options(channels_last=ckpt.config.train.channels_last, callback=recorder, progress=not args.no_progress)
    images = generate_sharded(net, objective, sample, args.n, seed=args.seed, shape=ckpt.image_shape, device=device,
                              world=world, guide=guide, labels=labels, options=options)
    if not world.is_main:
        return 0  # rank 0 holds all the images and writes them
    if args.snapshots:
        from ..visualize import snapshot_strip

        save_png(snapshot_strip(recorder, images, wanted, log_levels=objective.log_levels), out)
        print(f"wrote {out}")
    elif out.suffix.lower() == ".npz":
        save_npz(images, out, labels)  # (N, H, W, C) uint8, and (N,) int64 classes
        print(f"wrote {out} ({len(images)} images)")
    elif out.suffix.lower() == ".png":
        save_png(make_class_grid(images, labels, ckpt.classes), out) if labels is not None else save_grid(images, out)
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
    _check_writable(out if kind == "" else out.parent, f"--out {out}")
    return out


def _check_writable(where: Path, what: str) -> None:
    """A file can be created in the folder ``where``, or, while it does not exist, in the nearest folder above it
    (the writers create the rest); else a one-line UserError naming ``what``.

    A real probe, a temporary file created and removed: ``os.access`` says yes to root also on a read-only mount or
    in /proc, where the write then failed only after the whole sampling.
    """
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"{what}: cannot write there ({existing} is not a writable directory)")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".minidiffusion-probe-")
    except OSError as e:
        raise UserError(f"{what}: cannot write there (cannot create a file in {existing}: {e.strerror or e})") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
