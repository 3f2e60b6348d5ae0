"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and a folder of images, behind one contract.

Every dataset yields uint8 (C, H, W) images with H = W; the trainer converts them to the model's [-1, 1] with
:func:`minidiffusion.images.to_model_range`. Channels and image size are facts of the dataset (``channels``,
``image_size``), not settings, except for a folder, whose images come in every size and mode.

    ds = load_dataset(cfg.data)          # ImageDataset
    ds[0]                                # uint8 (C, H, W)
    ds.tensor                            # uint8 (N, C, H, W), or None for a folder too large to hold in memory
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..rundir import atomic_write_bytes
from .cifar import load_cifar10
from .download import cache_dir
from .folder import FolderImages, class_folders, scan
from .idx import load_idx
from .registry import DATASETS

if TYPE_CHECKING:  # config reads the registry below, so the data package must not import config when loaded
    from ..config import DataConfig

__all__ = ["DATASETS", "ImageDataset", "load_dataset", "default_root", "image_shape", "class_names"]

# the loaders of the datasets with fixed files: (root, split) -> (uint8 images (N, C, H, W), int64 labels)
LOADERS = {"mnist": lambda root, split: load_idx("mnist", root, split),
           "fashion-mnist": lambda root, split: load_idx("fashion-mnist", root, split),
           "cifar10": load_cifar10}
# data.in_memory = auto keeps a folder's decoded images in memory up to this many bytes
IN_MEMORY_MAX_BYTES = 2 * 1024**3


class ImageDataset(torch.utils.data.Dataset):
    """Square uint8 images: ``ds[i]`` is (C, H, W), ``len(ds)`` is N.

    ``images`` is either the whole set as a uint8 (N, C, H, W) tensor, or a :class:`~.folder.FolderImages` that
    decodes files on demand (then ``tensor`` is None and the trainer should use DataLoader workers).
    ``labels`` are int64 (N,) class indices where the dataset has them, and ``classes`` their names (label k is
    ``classes[k]``); for a folder decoded on demand the labels are its files' (``label_of``). ``flip`` says whether
    random horizontal flips are a sensible augmentation for this data; applying them is the trainer's job.
    """

    def __init__(self, name: str, images: torch.Tensor | FolderImages, *, labels: torch.Tensor | None = None,
                 classes: Sequence[str] = (), flip: bool = False, skipped: Sequence[Path] = ()):
        self.name = name
        self.skipped = list(skipped)  # files left out when the set was decoded into memory
        self.flip = flip
        self.labels = labels
        self.classes = tuple(classes)
        every_label = labels if labels is not None or isinstance(images, torch.Tensor) else images.labels
        if (every_label is None) != (not self.classes):
            raise ValueError("class labels and class names come together")
        if every_label is not None and len(every_label) and not 0 <= every_label.min() <= every_label.max() < len(
                self.classes):
            raise ValueError(f"labels outside 0..{len(self.classes) - 1}")
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
                raise ValueError(f"expected square uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
            self.tensor: torch.Tensor | None = images
            self._files: FolderImages | None = None
            self.channels, self.image_size = images.shape[1], images.shape[2]
        else:
            self.tensor, self._files = None, images
            self.channels, self.image_size = images.channels, images.image_size
        if labels is not None and len(labels) != len(self):
            raise ValueError(f"{len(self)} images but {len(labels)} labels")

    def __len__(self) -> int:
        return len(self.tensor) if self.tensor is not None else len(self._files)

    def keep_skip_list(self, path: Path, *, write: bool = True) -> None:
        """Start the list of skipped files at ``path`` (``write``: with those skipped so far; no file while there are
        none), and have the workers that decode on demand append each file they skip later."""
        if write:
            so_far = self.skipped + (self._files.unreadable if self._files is not None else [])
            if so_far:
                atomic_write_bytes(path, "".join(f"{p}\n" for p in so_far).encode())
            else:
                path.unlink(missing_ok=True)  # a list left by an earlier start of this run directory
        if self._files is not None:
            self._files.skip_list = path

    @staticmethod
    def skipped_in(path: Path) -> list[str]:
        """The distinct files a skip list names (workers may each meet the same bad file)."""
        if not path.is_file():
            return []
        return list(dict.fromkeys(path.read_text(encoding="utf-8").splitlines()))

    def fingerprint(self) -> str:
        """SHA-256 of the images (in memory) or of the file list with sizes and times (a folder read on demand)."""
        h = hashlib.sha256()
        if self.tensor is not None:
            h.update(str(tuple(self.tensor.shape)).encode())
            h.update(self.tensor.contiguous().numpy().tobytes())
        else:
            for path in self._files.paths:
                st = path.stat()
                h.update(f"{path.relative_to(self._files.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensor[i] if self.tensor is not None else self._files[i]  # (C, H, W)

    def labelled(self, i: int) -> tuple[torch.Tensor, int]:
        """(image (C, H, W), its class index); for a set without labels, a UserError."""
        if not self.classes:
            raise UserError(f"{self.name}: these images have no class labels")
        if self.tensor is not None:
            return self.tensor[i], int(self.labels[i])
        return self._files.labelled(i)

    def __repr__(self) -> str:
        where = "in memory" if self.tensor is not None else "decoded on demand"
        return f"ImageDataset({self.name}: {len(self)} x {self.channels}x{self.image_size}x{self.image_size}, {where})"


def default_root(name: str) -> Path:
    """Where ``name`` is looked for (and downloaded to) when ``data.root`` is empty.

    MNIST ships with the repository (``data/mnist``), so a source checkout trains without a network; elsewhere
    datasets live in the cache, ``$MINIDIFFUSION_DATA`` or ``~/.cache/minidiffusion``, one folder per dataset.
    """
    if name == "folder":
        raise UserError("data.name=folder has no default location: set data.root to a folder of images "
                        "(--set data.root=DIR)")
    if name not in LOADERS:
        raise UserError(f"unknown dataset '{name}' (valid: {', '.join(DATASETS)})")
    if name == "mnist":
        bundled = Path(__file__).resolve().parents[3] / "data" / "mnist"  # src/minidiffusion/data/ -> repository
        if bundled.is_dir():
            return bundled
    return cache_dir() / name


def image_shape(cfg: DataConfig) -> tuple[int, int]:
    """(channels, image size) that ``cfg`` will produce, from the table alone (no file is read)."""
    d = DATASETS[cfg.name]
    if not d.size:  # a folder: its settings say
        if not cfg.image_size:
            raise UserError("data.name=folder needs data.image_size (e.g. --set data.image_size=64): the images are "
                            "scaled and center-cropped to that square size")
        return cfg.channels or 3, cfg.image_size
    if cfg.channels and cfg.channels != d.channels:
        raise UserError(f"data.channels={cfg.channels} does not apply to {cfg.name}, which has {d.channels}; "
                        f"data.channels is for data.name=folder (leave it at 0)")
    return d.channels, cfg.image_size or d.size


def class_names(cfg: DataConfig) -> tuple[str, ...]:
    """The classes a run on ``cfg`` is conditioned on: () for an unconditional run, the table's names for a named
    dataset, a folder's subfolders (only their names are read, no image is decoded)."""
    if not cfg.conditional:
        return ()
    if cfg.name != "folder":
        return DATASETS[cfg.name].classes
    if not cfg.root:
        default_root("folder")  # raises the "set data.root" error
    root = Path(cfg.root).expanduser()
    found = class_folders(root, scan(root))
    if found is None:
        raise UserError(f"data.conditional=true needs one subfolder per class, and {root} is a flat folder")
    return found[0]


def load_dataset(cfg: DataConfig, split: str = "train", *, labelled: bool = False) -> ImageDataset:
    """The dataset ``cfg`` describes, ``split`` = "train" or "test" (a folder has only "train").

    MNIST, Fashion-MNIST and CIFAR-10 always come with their labels and class names. A folder comes with them only
    when ``labelled``: then its images must sit in one subfolder per class (see ``folder.class_folders``); without
    it, any layout is read as one unlabelled set."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split '{split}' (valid: train, test)")
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset '{cfg.name}' (valid: {', '.join(DATASETS)})")
    flip = DATASETS[cfg.name].flip if cfg.flip == "auto" else cfg.flip == "yes"
    if cfg.name == "folder":
        return _load_folder(cfg, split, flip, labelled)
    image_shape(cfg)  # data.channels is refused before the files are read
    root = Path(cfg.root).expanduser() if cfg.root else default_root(cfg.name)
    images, labels = LOADERS[cfg.name](root, split)
    if cfg.image_size and cfg.image_size != images.shape[-1]:
        images = resize(images, cfg.image_size)
    return ImageDataset(cfg.name, images, labels=labels, classes=DATASETS[cfg.name].classes, flip=flip)


def _load_folder(cfg: DataConfig, split: str, flip: bool, labelled: bool) -> ImageDataset:
    if split != "train":
        raise UserError(f"data.name=folder has only a train split (asked for '{split}')")
    if not cfg.root:
        default_root("folder")  # raises the "set data.root" error
    image_shape(cfg)  # data.image_size is required
    root = Path(cfg.root).expanduser()
    paths = scan(root)
    # classes only when asked for: an unconditional run keeps reading any folder, whatever its layout
    classes, labels = (class_folders(root, paths) or ((), None)) if labelled else ((), None)
    if labelled and labels is None:
        raise UserError(f"class labels were asked for, and {root} is a flat folder: put the images in one "
                        f"subfolder per class (the class is the subfolder's name)")
    files = FolderImages(root, paths, cfg.image_size, cfg.channels or 3, labels)
    decoded_bytes = len(files) * files.channels * files.image_size**2
    if cfg.in_memory == "yes" or (cfg.in_memory == "auto" and decoded_bytes <= IN_MEMORY_MAX_BYTES):
        images, kept = files.decode_all()
        return ImageDataset("folder", images, labels=kept, classes=classes, flip=flip, skipped=files.unreadable)
    _ = files[0]  # fail now, not inside a DataLoader worker, if not a single file can be read
    return ImageDataset("folder", files, classes=classes, flip=flip)


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), antialiased bilinear, in chunks to bound float memory."""
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out
