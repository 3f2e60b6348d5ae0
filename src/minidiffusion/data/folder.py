"""A folder of image files (searched recursively), each resized and center-cropped to one square size.

A folder whose images all sit in subfolders is labelled by them, the usual class-per-subfolder layout: the class of
an image is the subfolder of the root it is under (at any depth), the classes are the subfolders' names in sorted
order. A flat folder has no labels. Images both at the top and in subfolders, or a class folder without images, is
refused in one line that names it.

Files are taken in sorted path order so that a dataset, and therefore a seeded run, is the same on every machine.
A file Pillow cannot read is skipped with a one-line report, never a crash: one bad JPEG in a folder of a
hundred thousand should not end a training run. Small folders are decoded once up front; large ones are decoded
per item (in DataLoader workers), where an unreadable file is replaced by the next readable one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import UserError
from ..images import pil_to_mode

log = logging.getLogger("minidiffusion")

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


MAX_PIXELS = 64_000_000  # a larger image (a 20 KB PNG can claim 13000 x 13000) is skipped, not decoded into GBs


def scan(root: Path) -> list[Path]:
    """Every image file under ``root`` (by extension, any case), in sorted order; symlinked folders are followed,
    each real folder once (a link back up the tree is not a loop)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise UserError(f"data.root {root} {what}; data.name=folder needs a folder of images (--set data.root=DIR)")
    seen: set[tuple[int, int]] = set()
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []  # met before through another link
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in EXTENSIONS]
    paths = sorted(p for p in found if p.is_file())
    if not paths:
        raise UserError(f"no images under {root} (looked for {', '.join(sorted(EXTENSIONS))}, in subfolders too)")
    return paths


def class_folders(root: Path, paths: Sequence[Path]) -> tuple[tuple[str, ...], torch.Tensor] | None:
    """(class names, int64 label of each path) from the subfolder of ``root`` each path is under; None for a flat
    folder. Hidden subfolders (a name starting with '.') are not classes, and their images are refused."""
    firsts = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in paths]
    top = [p for p, first in zip(paths, firsts) if first is None]
    if len(top) == len(paths):
        return None
    nested = next(p for p, first in zip(paths, firsts) if first is not None)
    if top:
        raise UserError(f"{root} has images both at its top ({top[0].name}) and in subfolders "
                        f"({nested.relative_to(root)}): put every image in a class subfolder (class-conditional) "
                        f"or all at the top (unconditional)")
    classes = tuple(sorted(set(firsts)))
    hidden = [c for c in classes if c.startswith(".")]
    if hidden:
        raise UserError(f"{root / hidden[0]} is a hidden folder with images: move them into a class folder or out of "
                        f"{root}")
    empty = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   and d.name not in classes)
    if empty:
        raise UserError(f"class folder {root / empty[0]} holds no images (looked for {', '.join(sorted(EXTENSIONS))}): "
                        f"add some or remove it")
    index = {name: k for k, name in enumerate(classes)}
    return classes, torch.tensor([index[f] for f in firsts], dtype=torch.int64)


def common_shape(root: Path, paths: Sequence[Path], limit: int = 256) -> tuple[int, int]:
    """(side, channels) shared by a folder's images (the first ``limit`` of them, headers only): the training size and
    colour when nothing says otherwise. Images of several sizes, or not square, are one line asking for
    data.image_size."""
    sizes, grey = {}, True
    for path in paths[:limit]:
        try:
            with Image.open(path) as im:
                sizes.setdefault(im.size, path)
                grey = grey and im.mode in ("1", "L", "LA", "I", "I;16", "F")
        except Exception:  # noqa: BLE001 -- an unreadable file is skipped when training, and here
            continue
    if len(sizes) == 1 and (size := next(iter(sizes)))[0] == size[1]:
        return size[0], 1 if grey else 3
    examples = ", ".join(f"{w}x{h} ({p.relative_to(root)})" for (w, h), p in list(sizes.items())[:3]) or "none readable"
    raise UserError(f"{root}: the images are not all one square size ({examples}): choose the size they are trained "
                    f"at, e.g. --set data.image_size=32 (each is scaled and center-cropped to it)")


def decode_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """One image file -> uint8 (C, S, S): converted to grey or RGB, shorter side scaled to S, center-cropped."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as im:
        if im.width * im.height > MAX_PIXELS:
            raise TooLarge(f"{path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP), above the "
                           f"{MAX_PIXELS / 1e6:.0f} MP limit for training images")
        # JPEG only: let the decoder shrink by 2, 4 or 8 while decoding, never below the requested size -- much
        # faster for camera-sized photos, and the resize below does the rest.
        im.draft(mode, (image_size, image_size))
        im = ImageOps.exif_transpose(im)  # photos are often stored sideways with an orientation tag
        im = pil_to_mode(im, mode)  # 16-bit, float and transparent images scaled and composited, not clipped
        # Center-crop the largest square, then scale it to S in one resampling step (the same as scaling the
        # shorter side to S and cropping the middle). Pillow's filters widen when shrinking, so this antialiases.
        w, h = im.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        if (w, h) != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
        pixels = np.asarray(im, dtype=np.uint8).reshape(image_size, image_size, channels)  # (S, S, C)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()  # (C, S, S)


class TooLarge(ValueError):
    """An image above MAX_PIXELS: skipped like an unreadable one, and named."""


def _try_decode(path: Path, image_size: int, channels: int) -> torch.Tensor | None:
    try:
        return decode_image(path, image_size, channels)
    except TooLarge as e:
        log.warning("skipped a huge image: %s", e)
        return None
    except Exception:  # Pillow reports damage as OSError, ValueError, SyntaxError, struct.error, ...: all "unreadable"
        return None


def _report_skipped(count: int, first: Path, total: int, *, so_far: bool = False) -> None:
    when = " so far" if so_far else ""
    log.warning("skipped %d unreadable image%s%s of %d (first: %s)", count, "" if count == 1 else "s", when, total,
                first)


class FolderImages:
    """The files of a folder, decoded on demand: ``len()`` and ``[i] -> uint8 (C, S, S)``; ``labelled(i)`` also
    gives its class (``labels``: int64 per path, or None for an unlabelled folder).

    ``skipped`` counts the unreadable files met so far in this process (each DataLoader worker has its own copy);
    ``unreadable`` names them; with ``skip_list`` set, each is also appended to that file as it is met, one line
    per file, so that the workers' skips add up in one place.
    """

    def __init__(self, root: Path, paths: Sequence[Path], image_size: int, channels: int,
                 labels: torch.Tensor | None = None):
        self.root = root
        self.paths = list(paths)
        self.labels = labels
        self.image_size = image_size
        self.channels = channels
        self.unreadable: list[Path] = []
        self.skip_list: Path | None = None
        self._unreadable: set[int] = set()

    @property
    def skipped(self) -> int:
        return len(self.unreadable)

    def _skip(self, path: Path) -> None:
        self.unreadable.append(path)
        if self.skip_list is not None:
            with open(self.skip_list, "a", encoding="utf-8") as f:  # one short O_APPEND write: lines do not mix
                f.write(f"{path}\n")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._read(i)[1]

    def labelled(self, i: int) -> tuple[torch.Tensor, int]:
        """(image, its class) of item ``i``: the class of the file actually read when ``i`` is unreadable."""
        j, image = self._read(i)
        return image, int(self.labels[j])

    def _read(self, i: int) -> tuple[int, torch.Tensor]:
        # An unreadable file is replaced by the next readable one, so that batches keep their size and a run its
        # schedule; it is remembered so that later epochs do not pay for it again.
        n = len(self.paths)
        for k in range(n):
            j = (i + k) % n
            if j in self._unreadable:
                continue
            image = _try_decode(self.paths[j], self.image_size, self.channels)
            if image is not None:
                return j, image
            self._unreadable.add(j)
            self._skip(self.paths[j])
            if self.skipped == 1 or self.skipped % 100 == 0:
                _report_skipped(self.skipped, self.paths[j], n, so_far=True)
        raise UserError(f"none of the {n} image files under {self.root} could be read")

    def decode_all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode every file now -> (uint8 (N', C, S, S), their int64 labels (N',) or None), N' = the readable ones,
        in path order."""
        n, s, c = len(self.paths), self.image_size, self.channels
        out = torch.empty((n, c, s, s), dtype=torch.uint8)
        count, unreadable, kept = 0, [], []
        # Pillow releases the GIL while decoding and resizing, so threads give a near-linear speed-up here.
        with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
            for j, (path, image) in enumerate(zip(self.paths, pool.map(lambda p: _try_decode(p, s, c), self.paths))):
                if image is None:
                    unreadable.append(path)
                else:
                    out[count] = image
                    kept.append(j)
                    count += 1
        if not count:
            raise UserError(f"none of the {n} image files under {self.root} could be read")
        if unreadable:
            for path in unreadable:
                self._skip(path)
            _report_skipped(len(unreadable), unreadable[0], n)
            out = out[:count].clone()  # clone: let go of the rows reserved for the unreadable files
        return out, None if self.labels is None else self.labels[kept]
