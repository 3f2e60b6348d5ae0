"""CIFAR-10, "python version": the ``cifar-10-batches-py`` folder of Krizhevsky's pickled batches.

Each batch is a pickled dict with ``b"data"``, uint8 (10000, 3072) -- per image the 1024 red values, then green,
then blue, each plane row-major -- and ``b"labels"``, a list of ints in 0..9. Pickles can run arbitrary code when
loaded, so they are read with an unpickler that only knows how to rebuild numpy arrays.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .download import RemoteFile, fetch_archive, missing_files_message

FOLDER = "cifar-10-batches-py"
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
ARCHIVE = RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     md5="c58f30108f718f92721af3b95e74349a")  # the MD5 published on the CIFAR page
NUM_CLASSES = 10
IMAGE_SIZE = 32

# Everything a pickled numpy array may refer to, under the names numpy 1.x (numpy.core) and 2.x (numpy._core)
# give it. The objects are taken from numpy itself rather than imported by name: importing numpy.core warns on
# numpy 2. `_frombuffer` is what protocol-5 pickles use; `_codecs.encode` is how Python 3 pickles bytes with
# protocol 2.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_FROMBUFFER = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER


class _Refused(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need; anything else is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise UserError(f"refusing to unpickle {e} from {path}: a CIFAR-10 batch holds only numpy arrays and "
                        f"lists, so this file is not one (or has been tampered with)") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    except Exception as e:  # a damaged pickle fails in many ways: EOFError, UnpicklingError, ValueError, ...
        raise UserError(f"{path} is corrupt ({type(e).__name__}: {e}); delete it and download it again") from None

    def corrupt(why: str) -> UserError:
        return UserError(f"{path} is not a CIFAR-10 batch: {why}; delete it and download it again")

    if not isinstance(batch, dict):
        raise corrupt(f"expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt(f"'data' should be uint8 (N, 3072), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise corrupt("'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise corrupt(f"{len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise corrupt(f"labels outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels  # (N, 3, 32, 32): the planes are already CHW


def batches_dir(root: Path) -> Path:
    """``root`` may be the folder that contains ``cifar-10-batches-py`` or that folder itself."""
    if root.name == FOLDER or (root / "test_batch").is_file() or (root / "data_batch_1").is_file():
        return root
    return root / FOLDER


def load_cifar10(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``root`` -> images uint8 (N, 3, 32, 32) and labels int64 (N,), downloading it when missing."""
    folder = batches_dir(root)
    missing = [name for name in FILES[split] if not (folder / name).is_file()]
    if missing and folder.name == FOLDER:
        fetch_archive("cifar10", ARCHIVE, folder.parent, [f"{FOLDER}/{name}" for name in missing])
    elif missing:  # a renamed batches folder: the archive would not extract into it, so only say what is missing
        raise UserError(missing_files_message("cifar10", folder, missing))
    images, labels = zip(*(load_batch(folder / name) for name in FILES[split]))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
