"""Evaluation, offline: features -> statistics -> FID / KID / IS (the command: cli/evaluate.py).

The metrics are pure float64 functions of feature arrays, written to give the numbers the reference
implementations give:

- FID (Heusel et al. 2017) = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with mean and unbiased covariance
  as pytorch-fid computes them. Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
  S1^(1/2) S2 S1^(1/2) (the same eigenvalues as S1 S2), computed exactly with symmetric eigendecompositions;
  ``method="scipy"`` instead runs pytorch-fid's own procedure (``scipy.linalg.sqrtm``, retried with 1e-6 added to
  the diagonals when the product is singular). The two agree to ~1e-12 relative on well-conditioned inputs and
  ~1e-8 when the covariances are singular (fewer samples than dimensions).
- KID (Binkowski et al. 2018) = the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over 100
  random subsets of 1000 samples from each side (torch-fidelity's defaults and seed; the subset size is clipped
  to the number of samples); returns mean and standard deviation over the subsets. The reference side draws from
  a fixed random 5,000 of the split's features (what the cache keeps), not from all of them.
- IS (Salimans et al. 2016) = exp(E_x KL(p(y|x) || p(y))) over 10 splits of the shuffled samples, p(y) estimated
  per split (torch-fidelity's procedure and seed); returns mean and standard deviation over the splits.

Features come from :mod:`minidiffusion.features`: the project's MNIST classifier (fast, CPU) or the standard FID
Inception-V3 (weights from a local file). Statistics of a dataset split ("reference statistics"), and for FID by
class the split's features with their labels, are computed once and cached as ``.npz`` next to the data, keyed by
everything they depend on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import Config, DataConfig
from .data import ImageDataset, default_root, load_dataset
from .data.download import cache_dir
from .diffusion import make_objective
from .errors import UserError
from .features import FeatureExtractor, extract, load_extractor
from .images import SIXTEEN_BIT, pil_to_mode
from .rundir import atomic_write_bytes
from .sampling import generate, unguided_until

log = logging.getLogger("minidiffusion")

METRICS = ("fid", "kid", "is")
CONFIDENT = 0.9  # a sample "is a digit" when the classifier gives one class more than this probability
KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED = 100, 1000, 2020  # torch-fidelity's defaults
IS_SPLITS, IS_SEED = 10, 2020  # torch-fidelity's defaults
# KID needs reference *features*, not just moments; this many (a fixed random subset) are kept in the cache.
# Subsets of 1,000 drawn from 5,000 leave the estimate unbiased, and the 5,000 x 5,000 kernel fits in memory.
KID_REFERENCE_MAX = 5_000
FULL_KERNEL_MAX = 25_000_000  # kernel matrices up to this many entries (200 MB) are computed once
STATS_ENV = "MINIDIFFUSION_STATS"  # a folder for cached statistics, instead of next to the data
STATS_FORMAT, STATS_VERSION = "minidiffusion-reference-stats", 1


# -- statistics: pure functions of float arrays ----------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) -> mean (D,) and unbiased covariance (D, D), in float64 (as pytorch-fid)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     method: str = "eigh") -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2); ``method`` = "eigh" (exact, numpy) or "scipy" (pytorch-fid)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape}")
    if method == "eigh":
        tr_covmean = trace_sqrt_product(sigma1, sigma2)
    elif method == "scipy":
        tr_covmean = _trace_sqrtm_scipy(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'eigh' or 'scipy', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, exactly: S1 S2 has the eigenvalues of S1^(1/2) S2 S1^(1/2).

    That matrix is symmetric PSD, so its eigenvalues are real and >= 0 (up to rounding, clipped), and the trace of
    the principal square root of S1 S2 is the sum of their square roots. Singular covariances (fewer samples
    than dimensions) need no special case.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2)
    m = sqrt1 @ sigma2 @ sqrt1
    eigenvalues = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def _trace_sqrtm_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid's Tr(sqrtm(S1 S2)): scipy's sqrtm, retried with eps on the diagonals if not finite."""
    try:
        from scipy import linalg
    except ImportError:
        raise UserError("method='scipy' needs scipy: pip install scipy (in a clone: pip install -e '.[eval]')"
                        ) from None

    def sqrtm(a: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "matrix is singular", and the deprecation of disp=
            try:
                root = linalg.sqrtm(a, disp=False)[0]  # disp=False: older scipy *prints* to stdout otherwise
            except TypeError:  # scipy >= 1.18 dropped disp
                root = linalg.sqrtm(a)
        return root

    covmean = sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FID: the covariance product is singular; adding %g to its diagonals (as pytorch-fid)", eps)
        offset = np.eye(len(sigma1)) * eps
        covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all pairs of rows: (M, D), (K, D) -> (M, K)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel matrices of two equal-sized sets (torch-fidelity's ``mmd2``)."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))  # pairs i != j only
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = KID_SUBSETS,
                    subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED) -> tuple[float, float]:
    """KID: mean and std of the unbiased MMD^2 over random subsets (size clipped to the smaller set)."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"mismatched features: {f1.shape} vs {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.RandomState(seed)  # the legacy generator draws torch-fidelity's subsets
    draws = [(rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False))
             for _ in range(num_subsets)]
    # A subset's MMD^2 only needs sums over blocks of the kernel matrices. Where a whole matrix is small enough it
    # is computed once and its blocks are summed, rather than recomputed for each of the 100 subsets (about 10x
    # faster for 1,000 samples against 5,000 reference features). Sorted indices: same sums, better locality.
    k11, k22, k12 = _full_kernel(f1, f1), _full_kernel(f2, f2), _full_kernel(f1, f2)
    mmds = np.empty(num_subsets)
    for k, (a, b) in enumerate(draws):
        a, b = np.sort(a), np.sort(b)
        k_xx = k11[np.ix_(a, a)] if k11 is not None else polynomial_kernel(f1[a], f1[a])
        k_yy = k22[np.ix_(b, b)] if k22 is not None else polynomial_kernel(f2[b], f2[b])
        k_xy = k12[np.ix_(a, b)] if k12 is not None else polynomial_kernel(f1[a], f2[b])
        mmds[k] = mmd2_unbiased(k_xx, k_yy, k_xy)
    return float(mmds.mean()), float(mmds.std())


def _full_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    return polynomial_kernel(x, y) if len(x) * len(y) <= FULL_KERNEL_MAX else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def inception_score(logits: np.ndarray, *, splits: int = IS_SPLITS, shuffle: bool = True,
                    seed: int = IS_SEED) -> tuple[float, float]:
    """IS from class logits (N, K): exp(mean KL(p(y|x) || p(y))) per split, then mean and std over splits."""
    logits = np.asarray(logits, np.float64)
    n = len(logits)
    if logits.ndim != 2 or n < splits:
        raise ValueError(f"need (N, K) logits with N >= splits={splits}, got shape {logits.shape}")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(logits)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        log_marginal = np.log(p[part].mean(axis=0))  # log p(y), this split's estimate
        kl = (p[part] * (log_p[part] - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def class_summary(logits: np.ndarray, threshold: float = CONFIDENT) -> dict:
    """What a classifier says about samples: confident fraction, mean confidence, predicted-class histogram."""
    p = np.exp(log_softmax(logits))
    top = p.max(axis=1)
    return {"confident_fraction": float((top > threshold).mean()), "mean_confidence": float(top.mean()),
            "class_histogram": np.bincount(p.argmax(axis=1), minlength=p.shape[1]).tolist()}


def within_class_diversity(features: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between the feature vectors (N, dim) of one class: a class collapsed onto
    a few images scores near 0, however well each is drawn."""
    if len(features) < 2:
        return float("nan")
    x = features.astype(np.float64)
    squared = (x * x).sum(1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0.0)
    n = len(x)
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())


def requested_class_summary(features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                            threshold: float = CONFIDENT) -> dict:
    """How well samples drawn for ``labels`` (N,) are their class, by a classifier's ``logits`` and ``features``:
    ``requested_accuracy`` is the share whose top class is the requested one with probability > ``threshold``; per
    class, that share, the confident share and the within-class diversity (``within_class_diversity``)."""
    p = np.exp(log_softmax(logits))
    top, predicted = p.max(axis=1), p.argmax(axis=1)
    hit = (predicted == labels) & (top > threshold)
    per_class = {}
    for k in np.unique(labels):
        mine = labels == k
        per_class[int(k)] = {"n": int(mine.sum()), "requested_accuracy": float(hit[mine].mean()),
                             "confident": float((top[mine] > threshold).mean()),
                             "diversity": within_class_diversity(features[mine])}
    return {"requested_accuracy": float(hit.mean()), "per_class": per_class,
            "diversity": float(np.nanmean([c["diversity"] for c in per_class.values()]))}


def per_class_fid(features: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                  reference_labels: np.ndarray) -> dict[int, float]:
    """FID of each class's samples against the same class of the reference data (the features of both, (N, dim)):
    a class drawn well but unlike its real examples shows here, not in the overall FID."""
    out = {}
    for k in np.unique(labels):
        mine, theirs = features[labels == k], reference[reference_labels == k]
        if len(mine) > 1 and len(theirs) > 1:
            out[int(k)] = float(frechet_distance(*feature_statistics(mine), *feature_statistics(theirs)))
    return out


def classifier_score(images: torch.Tensor | np.ndarray, *, dataset: str = "mnist", device: str = "cpu",
                     threshold: float = CONFIDENT) -> dict:
    """Quality of uint8 (N, 1, H, W) digit images by the shipped classifier (no reference data needed).

    Returns ``n``, ``confident_fraction`` (share of images with top class probability > ``threshold``; the
    quickstart's gate is >= 0.9 of 1,000 samples), ``mean_confidence``, ``class_histogram`` (predicted-class
    counts: a collapsed model shows as a lopsided histogram), and ``is_mean``/``is_std`` (IS on the softmax).
    """
    images = torch.as_tensor(images)
    extractor = load_extractor("classifier", dataset, device=device)
    _, logits = extract(extractor, images)
    is_mean, is_std = inception_score(logits, splits=min(IS_SPLITS, len(logits)))
    return {"n": len(logits), **class_summary(logits, threshold), "is_mean": is_mean, "is_std": is_std}


# -- reference statistics, cached -------------------------------------------------------------------------------

@dataclass
class ReferenceStats:
    """Moments of a dataset split's features, and a subset of the features themselves for KID."""
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    kid_features: np.ndarray  # (min(N, KID_REFERENCE_MAX), D) float32
    n: int  # images in the split
    path: Path | None  # the cache file, None when it could not be written
    cached: bool  # True when read from the cache rather than computed now


def stats_dirs(cfg: DataConfig, explicit: str | Path | None = None) -> list[Path]:
    """Where reference statistics are looked for and written, in order of preference.

    An explicit folder (``--stats-dir`` or ``$MINIDIFFUSION_STATS``) alone; else ``stats/`` beside the dataset's
    files, then ``~/.cache/minidiffusion/stats`` (or under ``$MINIDIFFUSION_DATA``) for when that is read-only.
    A folder of the user's own images is never written into: its statistics go to the cache.
    """
    explicit = explicit or os.environ.get(STATS_ENV, "").strip()
    if explicit:
        return [Path(explicit).expanduser()]
    fallback = cache_dir() / "stats"
    if cfg.name == "folder":
        return [fallback]
    root = Path(cfg.root).expanduser() if cfg.root else default_root(cfg.name)
    return [root / "stats", fallback]


def reference_stats(extractor: FeatureExtractor, data: ImageDataset, split: str, dirs: Sequence[Path], *,
                    progress: bool = False) -> ReferenceStats:
    """Statistics of ``data`` under ``extractor``: read from the first of ``dirs`` that has them, else computed and
    written to the first that is writable.

    The cache key is everything the numbers depend on: dataset, split, resolution, channels, the extractor and a
    hash of its weights, and a hash of the images; the file name carries a hash of the key and the file the key
    itself, so any change means a different file (a stale one is recomputed, never used).
    """
    name, key_json = _cache_entry(extractor, data, split)
    for directory in dirs:
        z = _read_cached(directory / name, key_json, ("mu", "sigma", "kid_features", "n"))
        if z is not None:
            return ReferenceStats(z["mu"], z["sigma"], z["kid_features"], int(z["n"]), directory / name, True)

    log.info("computing %s reference statistics of %s %s (%d images, %dpx)", extractor.name, data.name, split,
             len(data), data.image_size)
    features, _ = extract(extractor, data, progress=progress, desc=f"reference {data.name} {split}")
    mu, sigma = feature_statistics(features)
    if len(features) > KID_REFERENCE_MAX:
        keep = np.sort(np.random.RandomState(0).choice(len(features), KID_REFERENCE_MAX, replace=False))
        features = features[keep]
    stats = ReferenceStats(mu, sigma, features.astype(np.float32), len(data), None, False)
    stats.path = _write_cached(dirs, name, key_json, mu=mu, sigma=sigma, kid_features=stats.kid_features,
                               n=np.array(stats.n))
    return stats


def reference_class_features(extractor: FeatureExtractor, data: ImageDataset, split: str, dirs: Sequence[Path], *,
                             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every image's features (N, D) float32 and its class (N,) int64, of a labelled ``data``, for FID by class:
    cached like :func:`reference_stats`, in a file of its own whose key adds a hash of the labels."""
    labels = data.labels.numpy().astype(np.int64)
    name, key_json = _cache_entry(extractor, data, split, by_class=True,
                                  labels_sha256=hashlib.sha256(labels.tobytes()).hexdigest())
    for directory in dirs:
        z = _read_cached(directory / name, key_json, ("features", "labels"))
        if z is not None and len(z["labels"]) == len(labels):
            return z["features"], z["labels"]
    features, _ = extract(extractor, data.tensor if data.tensor is not None else data, progress=progress,
                          desc=f"reference {data.name} {split} by class")
    features = features.astype(np.float32)
    _write_cached(dirs, name, key_json, features=features, labels=labels)
    return features, labels


def _cache_entry(extractor: FeatureExtractor, data: ImageDataset, split: str, **more) -> tuple[str, str]:
    """(file name, key as JSON) of ``data``'s cached numbers under ``extractor``; ``more`` joins the key."""
    key = {"format": STATS_FORMAT, "version": STATS_VERSION, "dataset": data.name, "split": split,
           "resolution": data.image_size, "channels": data.channels, "n": len(data), "extractor": extractor.name,
           "weights_sha256": extractor.weights_sha256, "data_sha256": data.fingerprint(), **more}
    key_json = json.dumps(key, sort_keys=True)
    kind = "-by-class" if more.get("by_class") else ""
    return (f"{data.name}-{split}-{data.image_size}px-{extractor.name}{kind}-"
            f"{hashlib.sha256(key_json.encode()).hexdigest()[:12]}.npz"), key_json


def _read_cached(path: Path, key_json: str, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of a cache file written for ``key_json``; None when absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key_json:
                log.info("%s was computed for other settings; recomputing", path)
                return None
            return {name: z[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError) as e:  # damaged or foreign file: compute afresh
        log.warning("ignoring unreadable statistics file %s (%s)", path, e)
        return None


def _write_cached(dirs: Sequence[Path], name: str, key_json: str, **arrays: np.ndarray) -> Path | None:
    """Write ``arrays`` as ``name`` into the first of ``dirs`` that takes it, through a temporary file and a rename
    (a reader never sees half a file); the path, or None (with a warning) when none is writable."""
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key_json), **arrays)
    for directory in dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(directory / name, buffer.getvalue())
            return directory / name
        except OSError as e:
            log.info("cannot cache statistics in %s (%s)", directory, e.strerror or e)
    log.warning("reference statistics not cached: none of %s is writable", ", ".join(map(str, dirs)))
    return None


# -- metrics of a set of images -----------------------------------------------------------------------------------

def compute_metrics(features: np.ndarray, logits: np.ndarray | None, reference: ReferenceStats | None,
                    metrics: Sequence[str]) -> dict:
    """The requested metrics of sample features (and logits) against ``reference`` (needed for fid and kid)."""
    out: dict = {}
    if "fid" in metrics:
        out["fid"] = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
    if "kid" in metrics:
        out["kid_mean"], out["kid_std"] = kernel_distance(features, reference.kid_features)
    if "is" in metrics:
        out["is_mean"], out["is_std"] = inception_score(logits, splits=min(IS_SPLITS, len(logits)))
    return out


class TrainingEvaluator:
    """In-training evaluation (``train.eval_every``): classifier FID of ``train.eval_n`` EMA samples, fixed seed.

    ``data`` is the training set; the reference is its test split (as ``minidiffusion evaluate`` uses with the
    classifier), at the same resolution, with statistics cached like any other: only the first run pays for them.
    """

    def __init__(self, cfg: Config, data: ImageDataset, device: str):
        if data.name not in ("mnist", "fashion-mnist"):
            raise UserError(f"train.eval_every needs data.name=mnist (in-training evaluation uses the digit "
                            f"classifier; {data.name} has none): set train.eval_every=0 and run "
                            f"`minidiffusion evaluate --features inception` after training")
        self.cfg, self.device = cfg, device
        self.channels, self.image_size = data.channels, data.image_size
        self.extractor = load_extractor("classifier", data.name, device=device)
        reference_data = load_dataset(dataclasses.replace(cfg.data, image_size=data.image_size), "test")
        self.reference = reference_stats(self.extractor, reference_data, "test", stats_dirs(cfg.data))

    @torch.no_grad()
    def __call__(self, ema_model: nn.Module, step: int, guide: nn.Module | None = None) -> dict:
        images = generate(ema_model, make_objective(self.cfg.diffusion), unguided_until(self.cfg.sample, guide),
                          self.cfg.train.eval_n, seed=self.cfg.train.seed,
                          shape=(self.channels, self.image_size, self.image_size), device=self.device, guide=guide)
        features, logits = extract(self.extractor, images)
        fid = frechet_distance(*feature_statistics(features), self.reference.mu, self.reference.sigma)
        return {"eval_fid_classifier": fid, "eval_confident": class_summary(logits)["confident_fraction"]}


def parse_metrics(text: str | None, extractor: FeatureExtractor) -> list[str]:
    if text is None:
        return ["fid", "kid", "is"] if extractor.num_classes else ["fid", "kid"]
    metrics = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise UserError(f"--metrics {text!r}: choose from {', '.join(METRICS)} (comma-separated)")
    if "is" in metrics and not extractor.num_classes:
        raise UserError(f"--metrics is needs the Inception classifier layer (fc), which {extractor.info['path']} "
                        f"does not have: use pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or drop 'is'")
    return metrics


def load_samples(path: str | Path, n: int | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) from an .npz with key 'images' (N, H, W, C) or a folder of PNG files (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        images = _load_png_folder(path)
    elif path.suffix.lower() == ".npz":  # `sample --out X.NPZ` writes one too
        if not path.is_file():
            raise UserError(f"--samples {path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise UserError(f"--samples {path}: no 'images' array (it has: {', '.join(z.files) or 'nothing'})")
                array = z["images"]
        except (OSError, ValueError) as e:
            raise UserError(f"--samples {path}: not a readable .npz file ({e})") from None
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
            raise UserError(f"--samples {path}: 'images' must be uint8 (N, H, W, C) with C = 1 or 3, got "
                            f"{array.dtype} {array.shape}")
        images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    else:
        raise UserError(f"--samples {path}: expected FILE.npz or a folder of PNGs" +
                        ("" if path.exists() else " (it does not exist)"))
    if images.shape[2] != images.shape[3]:
        raise UserError(f"--samples {path}: images must be square, got {images.shape[2]}x{images.shape[3]}")
    if n is not None:
        if n > len(images):
            raise UserError(f"--n {n}: {path} holds only {len(images)} images")
        images = images[:n]
    if len(images) < 2:
        raise UserError(f"--samples {path}: need at least 2 images, got {len(images)}")
    return images


def _load_png_folder(folder: Path) -> torch.Tensor:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise UserError(f"--samples {folder}: no .png files in it")
    arrays = []
    mode = None
    for f in files:
        try:
            with Image.open(f) as im:
                grey = ("1", "L", "LA", "La", "I", "F", *SIXTEEN_BIT)
                mode = mode or ("L" if im.mode in grey else "RGB")  # the first file decides
                arrays.append(np.asarray(pil_to_mode(im, mode), dtype=np.uint8))
        except (OSError, Image.DecompressionBombError) as e:  # a bomb is Pillow's own error, not an OSError
            raise UserError(f"--samples: cannot read {f} ({e})") from None
        if arrays[-1].shape != arrays[0].shape:
            raise UserError(f"--samples {folder}: {f.name} is {arrays[-1].shape[:2]}, {files[0].name} is "
                            f"{arrays[0].shape[:2]}: all images must have one size")
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
