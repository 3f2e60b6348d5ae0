"""Feature extractors for evaluation: uint8 images -> (features for FID/KID, logits for IS).

Two extractors, one interface:

- ``classifier``: the project's small MNIST digit classifier (128 features, 10 classes; :mod:`.classifier`);
  shipped with the package, fast on a CPU, and only meaningful for digits.
- ``inception``: the standard FID Inception-V3 (2048 features, 1008 classes; :mod:`.inception`); its weights are
  read from a local file, never downloaded.

    extractor = load_extractor("classifier", "mnist")
    features, logits = extract(extractor, images)   # numpy float32 (N, D) and (N, K) or None
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import UserError

EXTRACTORS = ("classifier", "inception")
# Images per network call: the classifier is tiny; Inception at 299x299 needs ~25 MB of activations per image.
BATCH_SIZES = {"classifier": 1000, "inception": 64}


@dataclass
class FeatureExtractor:
    """A frozen network and what identifies it: ``weights_sha256`` keys cached statistics to these weights."""
    name: str  # "classifier" or "inception"
    net: nn.Module  # uint8 (N, C, H, W) -> (features (N, dim), logits (N, num_classes))
    dim: int
    num_classes: int  # 0 when the weights have no class head (then no Inception Score)
    weights_sha256: str
    info: dict = field(default_factory=dict)  # where the weights came from, accuracy, ...

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> FeatureExtractor:
        self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (N, C, H, W) -> features float32 (N, dim) and logits float32 (N, num_classes) or None."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {pixels.dtype} {tuple(pixels.shape)}")
        features, logits = self.net(pixels.to(self.device))
        return features.float(), logits.float() if self.num_classes else None


def load_extractor(name: str, dataset: str = "mnist", *, inception_weights: str | None = None,
                   classifier_weights: str | None = None, device: str = "cpu") -> FeatureExtractor:
    """The extractor ``name`` in eval mode on ``device``; ``dataset`` picks the classifier's weights."""
    if name == "classifier":
        from .classifier import FEATURE_DIM, NUM_CLASSES, load_classifier, prepare

        if dataset not in ("mnist", "fashion-mnist"):
            raise UserError(f"--features classifier is for digits (mnist, or fashion-mnist with trained weights); "
                            f"for {dataset} use --features inception")
        net, meta = load_classifier(dataset, classifier_weights)
        return FeatureExtractor("classifier", _Prepared(net, prepare), FEATURE_DIM, NUM_CLASSES, meta["sha256"],
                                {"path": meta["path"], "test_accuracy": meta.get("test_accuracy")}).to(device)
    if name == "inception":
        from .inception import FEATURE_DIM, NUM_CLASSES, build_inception, find_weights, load_weights, weights_sha256

        path = find_weights(inception_weights)
        state = load_weights(path)
        net, has_fc = build_inception(state, str(path))
        return FeatureExtractor("inception", net, FEATURE_DIM, NUM_CLASSES if has_fc else 0, weights_sha256(state),
                                {"path": str(path)}).to(device)
    raise UserError(f"unknown feature extractor {name!r} (choose from {', '.join(EXTRACTORS)})")


class _Prepared(nn.Module):
    """A network that takes float input, behind the conversion from uint8 pixels it expects."""

    def __init__(self, net: nn.Module, prepare):
        super().__init__()
        self.net = net
        self.prepare = prepare

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.prepare(pixels))


def batches(images: torch.Tensor | Sequence[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 batches from a (N, C, H, W) tensor, an ImageDataset, or any sequence of (C, H, W) images."""
    tensor = images if isinstance(images, torch.Tensor) else getattr(images, "tensor", None)
    if tensor is not None:
        for start in range(0, len(tensor), batch_size):
            yield tensor[start:start + batch_size]
        return
    chunk: list[torch.Tensor] = []
    for i in range(len(images)):  # by index: a folder dataset's [i] wraps around instead of raising IndexError
        chunk.append(images[i])
        if len(chunk) == batch_size:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def extract(extractor: FeatureExtractor, images: torch.Tensor | Sequence[torch.Tensor], *,
            batch_size: int | None = None, progress: bool = False,
            desc: str = "features") -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, dim) and logits (N, num_classes) or None, as float32 numpy arrays, batch by batch."""
    batch_size = batch_size or BATCH_SIZES[extractor.name]
    total = len(images)
    features, logits = [], []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for batch in batches(images, batch_size):
            f, lg = extractor(batch)
            features.append(f.cpu().numpy())
            if lg is not None:
                logits.append(lg.cpu().numpy())
            bar.update(len(batch))
    if not features:
        raise UserError("no images to evaluate")
    return np.concatenate(features), (np.concatenate(logits) if logits else None)
