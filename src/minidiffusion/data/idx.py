"""MNIST and Fashion-MNIST: the four gzip-compressed IDX files of LeCun et al., read with numpy.

IDX layout (all integers big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions D, then D uint32 sizes, then the values in C order. Images are (N, 28, 28), labels (N,).
Both datasets use the same four file names; only the mirror and the checksums differ.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .download import RemoteFile, ensure_files

IDX_UBYTE = 0x08

FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}

# Zalando publishes MD5s only (github.com/zalandoresearch/fashion-mnist, README "Get the Data").
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

NUM_CLASSES = 10


def remote_files(name: str, split: str) -> list[RemoteFile]:
    """The two files of one split of ``mnist`` or ``fashion-mnist``, with their mirror and checksum."""
    if name == "mnist":
        return [RemoteFile(f, MNIST_URL + f, sha256=MNIST_SHA256[f]) for f in FILES[split]]
    return [RemoteFile(f, FASHION_URL + f, md5=FASHION_MD5[f]) for f in FILES[split]]


def read_idx(path: Path) -> np.ndarray:
    """One gzip-compressed IDX file of unsigned bytes -> a writable uint8 array of the shape its header gives."""
    try:
        with gzip.open(path, "rb") as f:
            data = bytearray(f.read())  # bytearray, not bytes: torch.from_numpy wants a writable buffer
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a truncated stream is an EOFError
        raise UserError(f"{path} is corrupt ({e}); delete it and download it again") from None

    def corrupt(why: str) -> UserError:
        return UserError(f"{path} is corrupt: {why}; delete it and download it again")

    if len(data) < 4:
        raise corrupt(f"{len(data)} bytes is too short for an IDX header")
    zero1, zero2, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0 or ndim == 0:
        raise corrupt(f"bad magic number 0x{bytes(data[:4]).hex()} (not an IDX file)")
    if type_code != IDX_UBYTE:
        raise corrupt(f"IDX type code 0x{type_code:02x}, expected 0x08 (unsigned byte)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupt(f"header of {ndim} dimensions is cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise corrupt(f"header says {' x '.join(map(str, shape))} = {math.prod(shape)} bytes of data, "
                      f"the file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_idx(name: str, root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mnist`` / ``fashion-mnist`` from ``root`` -> images uint8 (N, 1, 28, 28) and labels int64 (N,).

    Missing files are downloaded when the network allows (see :mod:`.download`).
    """
    ensure_files(name, root, remote_files(name, split))
    images_file, labels_file = (root / f for f in FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3:
        raise UserError(f"{images_file}: expected 3 dimensions (count, rows, columns), got shape {images.shape}")
    if labels.ndim != 1:
        raise UserError(f"{labels_file}: expected 1 dimension (count), got shape {labels.shape}")
    if len(images) != len(labels):
        raise UserError(f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise UserError(f"{labels_file}: label {labels.max()} is outside 0..{NUM_CLASSES - 1}")
    pixels = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W)
    return pixels, torch.from_numpy(labels).long()
