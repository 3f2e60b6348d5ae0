"""Images in every mode a folder may hold decode to their values, not to clipped black and white; huge ones are
skipped by name; symlinked folders are followed once."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from minidiffusion.config import DataConfig
from minidiffusion.data import load_dataset
from minidiffusion.data.folder import decode_image, scan
from minidiffusion.evaluate import load_samples
from minidiffusion.images import pil_to_mode

GREY = np.array([[0, 100, 255, 30]], dtype=np.uint8)  # the 8-bit values each file below encodes


def save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def files(tmp_path):
    """(path, expected grey values) per mode; each file is one row of four pixels."""
    sixteen = (GREY.astype(np.uint16) * 257)
    transparent_p = Image.fromarray(GREY, "L").convert("P")
    transparent_p.info["transparency"] = int(np.asarray(transparent_p)[0, 3])  # the 30 pixel: white once composited
    la = np.stack([GREY, np.array([[255, 255, 255, 0]], np.uint8)], axis=-1)
    cmyk = Image.merge("CMYK", [Image.fromarray(np.zeros_like(GREY))] * 3 + [Image.fromarray(255 - GREY)])
    return [
        (save(tmp_path, "i16.png", Image.fromarray(sixteen)), GREY),  # opens as I;16
        (save(tmp_path, "i32.tif", Image.fromarray(sixteen.astype(np.int32), "I")), GREY),  # 16-bit data in I
        (save(tmp_path, "f.tif", Image.fromarray(GREY.astype(np.float32) / 255, "F")), GREY),  # [0, 1] floats
        (save(tmp_path, "p.png", transparent_p), np.array([[0, 100, 255, 255]])),
        (save(tmp_path, "la.png", Image.fromarray(la, "LA")), np.array([[0, 100, 255, 255]])),
        (save(tmp_path, "cmyk.jpg", cmyk, quality=100), GREY),
        (save(tmp_path, "l.png", Image.fromarray(GREY)), GREY),
    ]


def test_modes_open_as_expected(tmp_path):
    modes = {p.name: Image.open(p).mode for p, _ in files(tmp_path)}
    assert modes["i16.png"] == "I;16" and modes["i32.tif"] == "I" and modes["f.tif"] == "F"
    assert modes["p.png"] == "P" and modes["la.png"] == "LA" and modes["cmyk.jpg"] == "CMYK"


def test_every_mode_decodes_to_its_values(tmp_path):
    for path, want in files(tmp_path):
        with Image.open(path) as im:
            got = np.asarray(pil_to_mode(im, "L")).astype(int)
        tol = 2 if path.suffix == ".jpg" else 0  # JPEG is lossy
        assert np.abs(got - want).max() <= tol, (path.name, got, want)
    with Image.open(files(tmp_path)[0][0]) as im:
        assert np.asarray(im.convert("L")).tolist() == [[0, 255, 255, 255]]  # what Pillow alone does to 16-bit


def test_folder_dataset_and_evaluate_read_16_bit_pngs_by_value(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    for k, d in enumerate(digits):
        Image.fromarray(d.astype(np.uint16) * 257).save(root / f"{k}.png")
    data = load_dataset(DataConfig(name="folder", root=str(root), image_size=8, channels=1, in_memory="yes"), "train")
    assert torch.equal(data.tensor[:, 0], torch.from_numpy(digits))
    assert torch.equal(load_samples(root)[:, 0], torch.from_numpy(digits))
    rgb = decode_image(root / "0.png", 8, 3)  # and to RGB: three equal channels
    assert torch.equal(rgb[0], torch.from_numpy(digits[0])) and torch.equal(rgb[0], rgb[2])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_huge_image_is_skipped_by_name(tmp_path, caplog):
    root = tmp_path / "d"
    root.mkdir()
    Image.new("L", (13000, 13000)).save(root / "huge.png")  # about 20 KB on disk, 169 MP decoded
    Image.fromarray(GREY.repeat(4, 0)).save(root / "ok.png")
    caplog.set_level(logging.WARNING, logger="minidiffusion")
    data = load_dataset(DataConfig(name="folder", root=str(root), image_size=4, channels=1, in_memory="yes"), "train")
    assert len(data) == 1
    assert "skipped a huge image" in caplog.text and "huge.png is 13000x13000 (169 MP)" in caplog.text
    assert "skipped 1 unreadable image of 2" in caplog.text


def test_symlinked_folders_are_followed_once(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(GREY).save(root / "a" / "1.png")
    Image.fromarray(GREY).save(tmp_path / "elsewhere" / "2.png")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # back up the tree
    names = [p.relative_to(root).as_posix() for p in scan(root)]
    assert names == ["a/1.png", "linked/2.png"]


@pytest.mark.parametrize("channels", [1, 3])
def test_transparent_rgba_is_composited_on_white(tmp_path, channels):
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black
    path = save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))
    with Image.open(path) as im:
        out = np.asarray(pil_to_mode(im, "RGB" if channels == 3 else "L"))
    if channels == 3:
        assert out.tolist() == [[[10, 20, 30], [255, 255, 255]]]
    else:
        assert out[0, 1] == 255
