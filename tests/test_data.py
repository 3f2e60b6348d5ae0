"""Datasets: tiny files written in the real formats, read back pixel for pixel; damage and danger rejected clearly.

No test touches the network: MINIDIFFUSION_OFFLINE=1 is set for every test, and the download tests fetch from
``file://`` URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minidiffusion.config import DataConfig
from minidiffusion.data import DATASETS, ImageDataset, cifar, default_root, download, idx, load_dataset
from minidiffusion.errors import UserError

REPO_MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFFUSION_OFFLINE", "1")
    monkeypatch.setenv("MINIDIFFUSION_DATA", str(tmp_path / "cache"))


# -- writers for the real formats ------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = idx.FILES[split]
    (root / images_name).write_bytes(gzip.compress(idx_bytes(images)))
    (root / labels_name).write_bytes(gzip.compress(idx_bytes(labels)))


def make_idx_dataset(root: Path, n_train: int = 6, n_test: int = 3, side: int = 28, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx_split(root, split, images, labels)
        data[split] = (images, labels)
    return data


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    # Protocol 2 and bytes keys, as in the published Python-2 pickles (which load with encoding="bytes").
    batch = {b"batch_label": b"synthetic", b"data": images.reshape(len(images), -1), b"labels": labels,
             b"filenames": [b"x.png"] * len(labels)}
    payload = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:  # name numpy's array rebuilder as numpy 1.x (and the published files) do
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(payload)


def make_cifar(root: Path, per_batch: int = 2, seed: int = 0) -> dict:
    """A ``cifar-10-batches-py`` folder under ``root``: 5 train batches of ``per_batch`` images and a test batch."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = {"train": ([], []), "test": ([], [])}
    for split, names in cifar.FILES.items():
        for name in names:
            images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, per_batch)]
            write_cifar_batch(folder / name, images, labels)
            data[split][0].append(images)
            data[split][1].extend(labels)
    return {split: (np.concatenate(images), np.array(labels)) for split, (images, labels) in data.items()}


def solid(size: tuple[int, int], color, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


# -- MNIST / Fashion-MNIST --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path, name):
    data = make_idx_dataset(tmp_path / name)
    for split in ("train", "test"):
        ds = load_dataset(DataConfig(name=name, root=str(tmp_path / name)), split)
        images, labels = data[split]
        assert ds.tensor.shape == (len(images), 1, 28, 28) and ds.tensor.dtype == torch.uint8
        assert torch.equal(ds.tensor[:, 0], torch.from_numpy(images))
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
        assert (ds.name, ds.channels, ds.image_size, len(ds)) == (name, 1, 28, len(images))
        assert torch.equal(ds[1], torch.from_numpy(images[1])[None])  # (C, H, W)


@pytest.mark.skipif(not REPO_MNIST.is_dir(), reason="the repository's bundled data/mnist is not here")
def test_bundled_mnist_is_the_default():
    assert default_root("mnist") == REPO_MNIST
    train = load_dataset(DataConfig(name="mnist"))
    assert train.tensor.shape == (60000, 1, 28, 28) and train.tensor.dtype == torch.uint8
    assert train.labels.shape == (60000,) and train.labels.min() == 0 and train.labels.max() == 9
    assert 0 < train.tensor.float().mean() < 255 and not train.flip
    test = load_dataset(DataConfig(name="mnist"), "test")
    assert test.tensor.shape == (10000, 1, 28, 28) and test.labels.shape == (10000,)


def test_idx_resize_to_image_size(tmp_path):
    root = tmp_path / "m"
    write_idx_split(root, "train", np.full((3, 28, 28), 200, np.uint8), np.arange(3, dtype=np.uint8))
    ds = load_dataset(DataConfig(name="mnist", root=str(root), image_size=32))
    assert ds.tensor.shape == (3, 1, 32, 32) and ds.image_size == 32
    assert (ds.tensor == 200).all()  # a flat image stays flat through antialiased resampling and rounding
    assert load_dataset(DataConfig(name="mnist", root=str(root), image_size=14)).tensor.shape == (3, 1, 14, 14)
    write_idx_split(root, "test", np.full((2, 7, 7), 9, np.uint8), np.arange(2, dtype=np.uint8))  # not 28 x 28
    assert load_dataset(DataConfig(name="mnist", root=str(root), image_size=28), "test").tensor.shape == (2, 1, 28, 28)
    with pytest.raises(UserError, match="data.channels"):
        load_dataset(DataConfig(name="mnist", root=str(root), channels=3))


def test_truncated_gz_is_reported_as_corrupt(tmp_path):
    root = tmp_path / "m"
    make_idx_dataset(root)
    images = root / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-40])
    with pytest.raises(UserError, match="corrupt") as e:
        load_dataset(DataConfig(name="mnist", root=str(root)))
    assert str(images) in str(e.value) and "download" in str(e.value)


def test_not_gzip_at_all_is_reported_as_corrupt(tmp_path):
    root = tmp_path / "m"
    make_idx_dataset(root)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz is corrupt"):
        load_dataset(DataConfig(name="mnist", root=str(root)))


@pytest.mark.parametrize("payload, why", [
    (b"\x01\x00\x08\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4), "magic"),
    (b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 2, 2) + bytes(16), "type code"),  # 0x0D = float
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + bytes(5), "header says"),  # 8 bytes promised, 5 given
    (b"\x00\x00\x08\x03" + struct.pack(">2I", 1, 2), "cut short"),
])
def test_bad_idx_headers(tmp_path, payload, why):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(UserError, match=why):
        idx.read_idx(path)


def test_idx_reader_is_big_endian_and_c_ordered(tmp_path):
    path = tmp_path / "x.gz"
    array = (np.arange(2 * 3 * 300) % 251).astype(np.uint8).reshape(2, 3, 300)  # a size > 255 tests the endianness
    path.write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(idx.read_idx(path), array)


def test_image_and_label_counts_must_agree(tmp_path):
    root = tmp_path / "m"
    write_idx_split(root, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(UserError, match="4 images but .* 3 labels"):
        load_dataset(DataConfig(name="mnist", root=str(root)))


def test_missing_files_offline_say_where_and_how(tmp_path):
    root = tmp_path / "empty"
    start = time.monotonic()
    with pytest.raises(UserError) as e:
        load_dataset(DataConfig(name="fashion-mnist", root=str(root)), "test")
    message = str(e.value)
    assert time.monotonic() - start < 2  # offline must fail at once, not after network timeouts
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(root) in message and "data.root" in message and "\n" not in message


def test_default_roots_follow_the_cache_variable(tmp_path):
    assert default_root("fashion-mnist") == tmp_path / "cache" / "fashion-mnist"
    assert default_root("cifar10") == tmp_path / "cache" / "cifar10"
    with pytest.raises(UserError, match="data.root"):
        default_root("folder")
    with pytest.raises(UserError, match="missing|not found"):  # nothing in the cache and no network
        load_dataset(DataConfig(name="cifar10"))


# -- downloads (from file:// URLs: no network) -------------------------------------------------------------------

def test_download_verifies_the_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDIFFUSION_OFFLINE")
    source = tmp_path / "mirror" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "dl" / "blob.bin"
    with pytest.raises(UserError, match="sha256"):
        download.download(source.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left behind
    download.download(source.as_uri(), dest, md5=hashlib.md5(source.read_bytes()).hexdigest())
    assert dest.read_bytes() == source.read_bytes()
    with pytest.raises(download.DownloadFailed):
        download.download((tmp_path / "mirror" / "absent.bin").as_uri(), tmp_path / "dl" / "absent.bin")
    monkeypatch.setenv("MINIDIFFUSION_OFFLINE", "1")
    with pytest.raises(download.DownloadFailed, match="OFFLINE"):
        download.download(source.as_uri(), tmp_path / "dl" / "again.bin")


def test_missing_mnist_is_downloaded_and_verified(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    data = make_idx_dataset(mirror)
    monkeypatch.delenv("MINIDIFFUSION_OFFLINE")
    monkeypatch.setattr(idx, "MNIST_URL", mirror.as_uri() + "/")
    monkeypatch.setattr(idx, "MNIST_SHA256", {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                                              for f in mirror.iterdir()})
    ds = load_dataset(DataConfig(name="mnist", root=str(tmp_path / "fresh")), "test")
    assert torch.equal(ds.tensor[:, 0], torch.from_numpy(data["test"][0]))


def test_missing_cifar_is_downloaded_and_extracted(tmp_path, monkeypatch):
    data = make_cifar(tmp_path / "src")
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.delenv("MINIDIFFUSION_OFFLINE")
    monkeypatch.setattr(cifar, "ARCHIVE", download.RemoteFile(archive.name, archive.as_uri(),
                                                               md5=hashlib.md5(archive.read_bytes()).hexdigest()))
    ds = load_dataset(DataConfig(name="cifar10"))  # default root: the cache
    assert torch.equal(ds.tensor, torch.from_numpy(data["train"][0]))
    root = tmp_path / "cache" / "cifar10"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # archive and staging folder gone


def test_tar_extraction_refuses_path_traversal(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    (tmp_path / "into").mkdir()
    with pytest.raises(UserError, match="refusing to extract"):
        download.extract_tar(archive, tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()


# -- CIFAR-10 ---------------------------------------------------------------------------------------------------

def test_cifar_round_trip(tmp_path):
    data = make_cifar(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent folder or the batches folder itself
        for split, n in (("train", 10), ("test", 2)):
            ds = load_dataset(DataConfig(name="cifar10", root=str(root)), split)
            assert ds.tensor.shape == (n, 3, 32, 32) and ds.tensor.dtype == torch.uint8
            assert torch.equal(ds.tensor, torch.from_numpy(data[split][0]))
            assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == data[split][1].tolist()
            assert (ds.channels, ds.image_size, ds.flip) == (3, 32, True)


@pytest.mark.parametrize("protocol", [2, 5])  # 5: numpy pickles arrays through numpy._core.numeric._frombuffer
def test_cifar_channel_planes_are_rgb(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)  # R, G, B planes
    write_cifar_batch(folder / "test_batch", row[None], [3], protocol)
    ds = load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), "test")
    assert ds[0][:, 5, 7].tolist() == [10, 20, 30]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError, match="refusing to unpickle") as e:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert "system" in str(e.value) and str(batch) in str(e.value)
    assert not marker.exists()


def test_truncated_and_wrong_cifar_pickles(tmp_path):
    make_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    good = batch.read_bytes()
    batch.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="test_batch is corrupt"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), "test")
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(UserError, match="not a CIFAR-10 batch"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), "test")


def test_cifar_missing_batches_offline(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4.*data.root"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


# -- a folder of images -----------------------------------------------------------------------------------------

def make_folder(root: Path) -> list[tuple[int, int, int]]:
    """Images of assorted sizes, modes and formats, one flat colour each; returns the colours in path order."""
    (root / "sub" / "deeper").mkdir(parents=True)
    solid((40, 30), (255, 0, 0)).save(root / "a.png")
    solid((16, 16), 128, "L").save(root / "b.png")
    solid((20, 50), (0, 0, 255, 255), "RGBA").save(root / "c.PNG")
    solid((64, 64), (0, 255, 0)).save(root / "d.bmp")
    (root / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    solid((33, 17), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "sub" / "f.gif")
    solid((50, 20), (250, 250, 250)).save(root / "sub" / "deeper" / "g.jpg", quality=95)
    solid((18, 18), (7, 8, 9)).save(root / "sub" / "h.tiff")
    solid((24, 24), (90, 60, 30)).save(root / "sub" / "i.webp", lossless=True)
    (root / "notes.txt").write_text("not an image")
    return [(255, 0, 0), (128, 128, 128), (0, 0, 255), (0, 255, 0),
            (250, 250, 250), (10, 200, 30), (7, 8, 9), (90, 60, 30)]  # sub/deeper/ sorts before sub/f.gif


def test_folder_decodes_resizes_and_skips(tmp_path, caplog):
    colours = make_folder(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING, logger="minidiffusion"):
        ds = load_dataset(DataConfig(name="folder", root=str(tmp_path / "imgs"), image_size=16))
    assert ds.tensor.shape == (len(colours), 3, 16, 16) and ds.tensor.dtype == torch.uint8
    assert (ds.channels, ds.image_size, ds.labels, ds.flip) == (3, 16, None, True)
    for image, colour in zip(ds.tensor, colours):
        assert (image.int() - torch.tensor(colour)[:, None, None]).abs().max() <= 2, colour  # JPEG/GIF: near
    assert "skipped 1 unreadable image" in caplog.text and "e_corrupt.jpg" in caplog.text


def test_folder_center_crop_is_exact(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16], wide[:, 16:32], wide[:, 32:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    wide[3, 20] = (1, 2, 3)  # one marked pixel inside the middle block
    Image.fromarray(wide).save(root / "wide.png")
    tall = np.arange(10 * 30 * 3, dtype=np.uint8).reshape(30, 10, 3)
    Image.fromarray(tall).save(root / "tall.png")
    ds = load_dataset(DataConfig(name="folder", root=str(root), image_size=16))
    assert torch.equal(ds[1], torch.from_numpy(wide[:, 16:32]).permute(2, 0, 1))  # sorted: tall.png, wide.png
    ds = load_dataset(DataConfig(name="folder", root=str(root), image_size=10))
    assert torch.equal(ds[0], torch.from_numpy(tall[10:20]).permute(2, 0, 1))  # no scaling needed: only the crop
    assert ds.tensor.shape == (2, 3, 10, 10)


def test_folder_grey(tmp_path):
    make_folder(tmp_path / "imgs")
    ds = load_dataset(DataConfig(name="folder", root=str(tmp_path / "imgs"), image_size=8, channels=1))
    assert ds.tensor.shape == (8, 1, 8, 8) and ds.channels == 1
    assert (ds[1] == 128).all()  # b.png was grey already


def test_folder_streaming_substitutes_unreadable_files(tmp_path, caplog):
    colours = make_folder(tmp_path / "imgs")
    cfg = DataConfig(name="folder", root=str(tmp_path / "imgs"), image_size=12, in_memory="no", flip="no")
    ds = load_dataset(cfg)
    assert ds.tensor is None and len(ds) == len(colours) + 1 and not ds.flip  # the corrupt file still counts
    assert pickle.loads(pickle.dumps(ds))[0].shape == (3, 12, 12)  # DataLoader workers get a pickled copy
    with caplog.at_level(logging.WARNING, logger="minidiffusion"):
        items = [ds[i] for i in range(len(ds))]
    assert all(item.shape == (3, 12, 12) and item.dtype == torch.uint8 for item in items)
    assert torch.equal(items[4], items[5])  # e_corrupt.jpg (index 4) was replaced by the next file
    assert ds._files.skipped == 1 and "e_corrupt.jpg" in caplog.text
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 12, 12)


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images"):
        load_dataset(DataConfig(name="folder", root=str(empty), image_size=8))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "nowhere"), image_size=8))
    with pytest.raises(UserError, match="data.root"):
        load_dataset(DataConfig(name="folder", image_size=8))
    make_folder(tmp_path / "imgs")
    with pytest.raises(UserError, match="data.image_size"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "imgs")))
    with pytest.raises(UserError, match="only a train split"):
        load_dataset(DataConfig(name="folder", root=str(tmp_path / "imgs"), image_size=8), "test")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 1 image files"):
        load_dataset(DataConfig(name="folder", root=str(bad), image_size=8))


# -- the shared contract ----------------------------------------------------------------------------------------

def test_flip_resolution(tmp_path):
    make_idx_dataset(tmp_path / "m")
    make_cifar(tmp_path / "c")
    make_folder(tmp_path / "f")
    cases = {"mnist": str(tmp_path / "m"), "fashion-mnist": str(tmp_path / "m"), "cifar10": str(tmp_path / "c"),
             "folder": str(tmp_path / "f")}
    auto = {name: load_dataset(DataConfig(name=name, root=root, image_size=8 if name == "folder" else 0)).flip
            for name, root in cases.items()}
    assert auto == {"mnist": False, "fashion-mnist": False, "cifar10": True, "folder": True}
    assert load_dataset(DataConfig(name="mnist", root=cases["mnist"], flip="yes")).flip is True
    assert load_dataset(DataConfig(name="cifar10", root=cases["cifar10"], flip="no")).flip is False


def test_image_dataset_from_a_tensor():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    ds = ImageDataset("synthetic", images, labels=torch.arange(5), classes="abcde")
    assert (len(ds), ds.channels, ds.image_size) == (5, 3, 8) and torch.equal(ds[2], images[2])
    image, label = ds.labelled(3)
    assert torch.equal(image, images[3]) and (label, ds.classes[label]) == (3, "d")
    with pytest.raises(ValueError):
        ImageDataset("bad", images.float())
    with pytest.raises(ValueError):
        ImageDataset("bad", images, labels=torch.arange(4), classes="abcde")
    with pytest.raises(ValueError, match="come together"):
        ImageDataset("bad", images, labels=torch.arange(5))
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        ImageDataset("bad", images, labels=torch.arange(5), classes="abcd")
    with pytest.raises(UserError, match="no class labels"):
        ImageDataset("plain", images).labelled(0)


# -- class labels ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_datasets_name_their_ten_classes(tmp_path, name):
    made = make_cifar(tmp_path) if name == "cifar10" else make_idx_dataset(tmp_path)
    ds = load_dataset(DataConfig(name=name, root=str(tmp_path)), "test")
    assert len(ds.classes) == 10 and ds.classes == DATASETS[name].classes
    assert ds.labels.tolist() == made["test"][1].tolist()
    assert {"mnist": "7", "fashion-mnist": "Sneaker", "cifar10": "horse"}[name] == ds.classes[7]


def make_classes(root: Path, counts: dict[str, int]) -> None:
    """One subfolder per class (a class may hold a nested folder), each image a flat grey of its class index."""
    for k, (name, count) in enumerate(counts.items()):
        for i in range(count):
            folder = root / name / ("nested" if i % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            solid((12, 12), 40 * k, "L").save(folder / f"{i}.png")


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_class_subfolders_label_a_folder(tmp_path, in_memory):
    make_classes(tmp_path, {"zebra": 2, "ant": 3, "cat": 1})
    (tmp_path / "ant" / "broken.png").write_bytes(b"not a png")  # skipped: the labels of the rest stay right
    cfg = DataConfig(name="folder", root=str(tmp_path), image_size=8, channels=1, in_memory=in_memory)
    ds = load_dataset(cfg, labelled=True)
    assert ds.classes == ("ant", "cat", "zebra")  # sorted names, not the order of creation
    grey = {"zebra": 0, "ant": 40, "cat": 80}
    pairs = [ds.labelled(i) for i in range(len(ds))]
    # decoded up front the broken file is left out; read on demand it is replaced by the next file (another ant)
    ants = 3 if in_memory == "yes" else 4
    assert sorted(ds.classes[label] for _, label in pairs) == ["ant"] * ants + ["cat"] + ["zebra"] * 2
    for image, label in pairs:  # every image comes with its own class
        assert int(image.float().mean().round()) == grey[ds.classes[label]]
    # not asked for labels, the same folder is just its images, whatever the layout
    plain = load_dataset(DataConfig(name="folder", root=str(tmp_path), image_size=8, channels=1))
    assert (plain.classes, plain.labels) == ((), None) and len(plain) == 6


def test_class_folder_layout_errors(tmp_path):
    def folder_at(root: Path) -> DataConfig:
        return DataConfig(name="folder", root=str(root), image_size=8)

    make_classes(tmp_path / "mixed", {"a": 1, "b": 1})
    solid((8, 8), 0, "L").save(tmp_path / "mixed" / "loose.png")
    with pytest.raises(UserError, match=r"both at its top \(loose.png\) and in subfolders \(a/0.png\)"):
        load_dataset(folder_at(tmp_path / "mixed"), labelled=True)

    make_classes(tmp_path / "empty", {"a": 1, "b": 1})
    (tmp_path / "empty" / "c").mkdir()
    (tmp_path / "empty" / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"class folder .*empty/c holds no images"):
        load_dataset(folder_at(tmp_path / "empty"), labelled=True)

    (tmp_path / "flat").mkdir()
    solid((8, 8), 0, "L").save(tmp_path / "flat" / "x.png")
    with pytest.raises(UserError, match="flat folder: put the images in one subfolder per class"):
        load_dataset(folder_at(tmp_path / "flat"), labelled=True)


def test_unknown_split():
    with pytest.raises(UserError, match="split"):
        load_dataset(DataConfig(), "validation")
