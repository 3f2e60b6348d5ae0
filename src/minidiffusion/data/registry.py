"""The facts of each dataset, in one table: what config validation, loading, the command line, evaluation and the
benchmarks read. A new dataset is its loader (in ``data/__init__.py``) plus one line here.

This module imports nothing from the package, so that ``config`` (a lower layer than the loaders) can read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    channels: int  # image channels; 0: a folder's own (data.channels, default 3)
    size: int  # the native side in pixels; 0: a folder's (data.image_size, required)
    flip: bool  # random horizontal flips by default (data.flip = auto)
    features: str  # the feature extractor evaluate uses by default: "classifier" (digits) or "inception"
    classes: tuple[str, ...] = ()  # the names of labels 0, 1, ...; a folder's are its subfolders' (sorted)


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # batches.meta


# A mirrored photo is still a plausible photo; a mirrored digit is not a digit (a flipped 7 is not a 7).
# Fashion-MNIST is treated like its MNIST sibling, so that results on the two stay comparable.
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(1, 28, False, "classifier", DIGITS),  # LeCun & Cortes; ships with a clone
    "fashion-mnist": Dataset(1, 28, False, "classifier", FASHION),  # Xiao et al. 2017, their README's names
    "cifar10": Dataset(3, 32, True, "inception", CIFAR10),  # Krizhevsky 2009, the python pickles
    "folder": Dataset(0, 0, True, "inception"),  # any folder of images (data.root), scaled and center-cropped
}
