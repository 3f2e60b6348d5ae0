"""The one pair of conversions between pixels and the model's range, and image grids.

Pixels are uint8 in [0, 255]; the model works in float [-1, 1]. Every module converts with these two
functions, so the mapping (x / 127.5 - 1 and its rounding inverse) exists once.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import UserError
from .rundir import atomic_write_bytes


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (any shape)."""
    return pixels.float() / 127.5 - 1.0


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded to nearest and clipped (any shape)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) image, images left to right then top to bottom.

    ``nrow`` images per row (default: a square-ish grid); ``padding`` pixels of ``pad_value`` around each.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("make_grid expects uint8 (N, C, H, W)")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    for k in range(n):
        top, left = padding + (k // nrow) * (h + padding), padding + (k % nrow) * (w + padding)
        grid[top:top + h, left:left + w] = pixels[k]
    return grid


def make_class_grid(images: torch.Tensor, labels: torch.Tensor, names: list[str] | tuple[str, ...],
                    padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) of classes ``labels`` (N,), which come in consecutive runs (``sampling.class_labels``) ->
    one uint8 (H', W', C) image with a row per run (wrapped at the grid's width; a single run: a square-ish grid),
    each run's class name written at its left. Label ``len(names)`` is "no class"."""
    starts = [0] + [k for k in range(1, len(labels)) if labels[k] != labels[k - 1]]
    runs = list(zip(starts, starts[1:] + [len(labels)]))
    ncol = max(b - a for a, b in runs) if len(runs) > 1 else math.ceil(math.sqrt(len(labels)))
    blocks = [make_grid(images[a:b], ncol, padding, pad_value) for a, b in runs]
    grid = np.concatenate([blocks[0]] + [block[padding:] for block in blocks[1:]])  # one padding between runs
    font = ImageFont.load_default()
    text = [names[int(labels[a])] if int(labels[a]) < len(names) else "no class" for a, _ in runs]
    width = max(font.getbbox(t)[2] for t in text) + 2 * padding
    margin = Image.new("L", (width, grid.shape[0]), pad_value)
    draw, top = ImageDraw.Draw(margin), 0
    for block, t in zip(blocks, text):
        draw.text((padding, top + padding + images.shape[2] // 2), t, fill=255 - pad_value, font=font, anchor="lm")
        top += block.shape[0] - padding
    label = np.asarray(margin, dtype=np.uint8)[..., None].repeat(grid.shape[2], axis=2)
    return np.concatenate([label, grid], axis=1)


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def pil_to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Any Pillow image -> 8-bit ``mode`` ("L" or "RGB"), its values scaled rather than clipped.

    Pillow's own ``convert`` clips 16-bit and 32-bit grey to 0..255 (16-bit photos become black and white), so:
    16-bit grey (I;16*) is divided by 257 (65535 -> 255); 32-bit integer grey (I, how some files hold 16-bit data)
    too when any value exceeds 255, else taken as it is; float grey (F) is read as [0, 1] when no value exceeds 1,
    else as [0, 255]. Transparent pixels (LA, PA, RGBA, a palette with a transparent colour) are composited onto
    white, as a viewer shows them on a page. CMYK and the rest go through Pillow's conversion.
    """
    if im.mode in SIXTEEN_BIT or im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if im.mode in SIXTEEN_BIT or (im.mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif im.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert(mode)


def to_pil(array: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) with C in {1, 3} -> a PIL image ('L' or 'RGB')."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write uint8 (H, W, C) as a PNG, creating the directory; clear error if it cannot be written."""
    buffer = io.BytesIO()
    to_pil(array).save(buffer, format="PNG")
    return write_file(path, buffer.getvalue())


def save_npz(images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """uint8 (N, C, H, W) -> ``path`` as .npz, key ``images``, (N, H, W, C), and with ``labels`` the int64 class of
    each image under key ``labels`` (N,); clear error if it cannot be written."""
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"{len(images)} images but labels of shape {tuple(labels.shape)}")
    arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_file(path, buffer.getvalue())


def write_file(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path`` atomically, creating the directory: a full disk or a kill leaves the file that was there
    (if any) whole, never a truncated one; one clear error if it cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """uint8 (N, C, H, W) -> a grid PNG at path."""
    return save_png(make_grid(images, nrow), path)
