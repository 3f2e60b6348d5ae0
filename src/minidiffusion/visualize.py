"""Pictures: a grid of the data, the forward process, the learned denoising (video and snapshots), training curves.

Every picture is drawn from the library itself -- the dataset loader, ``q_sample`` and the schedules for the forward
figure, the samplers' per-step callback for the denoising -- so a figure never shows math that training did not use.
Labels are drawn with Pillow's built-in font; only ``curves`` needs matplotlib (the ``viz`` extra) and only MP4
videos need imageio (the ``video`` extra).

    minidiffusion visualize data --dataset mnist                         # mnist_data.png
    minidiffusion visualize forward --dataset mnist --schedule both      # forward.png
    minidiffusion sample --checkpoint runs/quick --n 16 --video denoise.gif --out samples.png
    minidiffusion sample --checkpoint runs/quick --n 16 --sampler ddpm --steps 1000 --snapshots 0,499,749,999 \\
        --out snapshots.png
    minidiffusion visualize curves --run runs/quick                      # curves.png

Layout: pictures are made of uint8 (H, W, C) arrays stacked with numpy; cells are images upscaled by an integer
factor (nearest neighbour, so every model pixel is an exact k x k block) inside ``images.make_grid``'s white
padding, with label strips of fixed height above them. The sizes below are therefore exact, and tests check them.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .diffusion import Schedule, StepInfo, q_sample
from .diffusion.objectives import parse_timesteps  # noqa: F401  (visualize.parse_timesteps, as before)
from .errors import UserError
from .images import make_grid, to_model_range, to_pil, to_pixels, write_file
from .rundir import atomic_path

log = logging.getLogger("minidiffusion")

PAD = 2  # white pixels around and between grid cells (as images.make_grid draws them)
GAP = 8  # white pixels between side-by-side panels (snapshots, x_t beside x0)
LABEL_H = 16  # height of a strip of "t=..." labels above a row of cells or panels
BLOCK_H = 18  # height of the strip naming a block of rows (the schedule, in the forward figure)
TITLE_H = 22  # height of a figure's title strip
FONT_SIZE, TITLE_FONT_SIZE = 12, 14

MIN_CELL = 48  # data and forward figures: images are upscaled until a cell is at least this many pixels wide
MIN_VIDEO_WIDTH = 240  # video frames: the grid is upscaled until it is at least this wide (GIFs of noise are big)
MIN_SNAPSHOT_WIDTH = 160  # snapshots: each panel at least this wide
GIF_FINAL_HOLD_MS = 1000  # the last frame (the samples) stays up this long before the video loops


# -- drawing helpers ---------------------------------------------------------------------------------------------

def auto_scale(width: int, minimum: int) -> int:
    """The smallest integer factor that makes ``width`` pixels at least ``minimum`` wide (at least 1)."""
    return max(1, math.ceil(minimum / width))


def upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C, H*factor, W*factor): every pixel repeated as a factor x factor block."""
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def upscale_array(array: np.ndarray, factor: int) -> np.ndarray:
    """uint8 (H, W, C) -> (H*factor, W*factor, C), nearest neighbour."""
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def text_strip(width: int, height: int, labels: Sequence[tuple[float, str]], channels: int,
               font_size: int = FONT_SIZE) -> np.ndarray:
    """A white uint8 (height, width, channels) strip with each ``(x_center, text)`` written in black, centered."""
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    for x_center, text in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((round(x_center - (left + right) / 2), round((height - (top + bottom)) / 2)), text, fill=0, font=font)
    strip = np.asarray(canvas, dtype=np.uint8)[..., None]  # (height, width, 1)
    return strip.repeat(channels, axis=2)


def labelled_panels(panels: Sequence[np.ndarray], labels: Sequence[str], gap: int = GAP) -> np.ndarray:
    """Panels (H, W, C) of equal height side by side, ``gap`` white columns apart, each under a LABEL_H label strip.

    Result: (LABEL_H + H, sum(W) + gap * (len - 1), C).
    """
    height, channels = panels[0].shape[0], panels[0].shape[2]
    columns = []
    for k, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        if k:
            columns.append(np.full((LABEL_H + height, gap, channels), 255, dtype=np.uint8))
        strip = text_strip(panel.shape[1], LABEL_H, [(panel.shape[1] / 2, label)], channels)
        columns.append(np.concatenate([strip, panel], axis=0))
    return np.concatenate(columns, axis=1)


def grid_columns(n: int) -> int:
    """Columns for a grid of n images: a divisor of n near √n when there is one (96 -> 12 x 8), else ⌈√n⌉."""
    side = math.ceil(math.sqrt(n))
    for columns in range(side, 2 * side + 1):
        if n % columns == 0:
            return columns
    return side


# -- the data and the forward process ---------------------------------------------------------------------------

def pick_images(dataset, n: int, seed: int) -> torch.Tensor:
    """n distinct images of ``dataset`` chosen at random with ``seed``, uint8 (n, C, H, W)."""
    if n > len(dataset):
        raise UserError(f"--n {n}: the dataset has only {len(dataset)} images")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([dataset[int(i)] for i in order])


def data_grid(images: torch.Tensor, nrow: int | None = None, scale: int = 1) -> np.ndarray:
    """uint8 (N, C, H, W) -> the (H', W', C) grid of the images upscaled ``scale`` times."""
    return make_grid(upscale(images, scale), nrow or grid_columns(len(images)), padding=PAD)


def forward_figure(images: torch.Tensor, schedules: dict[str, Schedule], timesteps: Sequence,
                   noise: torch.Tensor, *, scale: int = 1, title: str = "", label=None) -> np.ndarray:
    """The forward process: row i is image i noised to each of ``timesteps`` (one column per t) by ``q_sample``.

    A value of ``schedules`` may also be an objective (``diffusion.objectives``): its own ``forward(x0, level,
    noise)`` noises the images to its levels (flow t, edm σ), which ``label`` names (default "t=...").

    images uint8 (N, C, H, W); noise (N, C, H, W): one ε per image, shared by every column and every schedule, so
    a row shows one noising path and the blocks differ only in their schedule. One block of N rows per entry of
    ``schedules`` (name -> schedule), stacked top to bottom. Layout, with cell side s = scale * H, k = len(timesteps):

        width  = PAD + k * (s + PAD)
        height = TITLE_H + len(schedules) * (BLOCK_H + LABEL_H + PAD + N * (s + PAD))

    each block being: a BLOCK_H strip naming the schedule, a LABEL_H strip of "t=..." above each column, then
    ``make_grid`` of the upscaled cells. Returns uint8 (height, width, C).
    """
    n, channels, h, _ = images.shape
    k = len(timesteps)
    x0 = to_model_range(images).repeat_interleave(k, dim=0)  # (N*k, C, H, W): image-major, one copy per column
    eps = noise.float().repeat_interleave(k, dim=0)  # (N*k, C, H, W)
    label = label or (lambda level: f"t={level}")
    cell = scale * h
    width = PAD + k * (cell + PAD)
    centers = [(PAD + j * (cell + PAD) + cell / 2, label(tj)) for j, tj in enumerate(timesteps)]
    parts = [text_strip(width, TITLE_H, [(width / 2, title)], channels, TITLE_FONT_SIZE)]
    for name, schedule in schedules.items():
        if not isinstance(schedule, Schedule):  # an objective with its own forward process
            levels = torch.tensor(list(timesteps), dtype=torch.float32).repeat(n)
            x_t = schedule.forward(x0, levels, eps)
        else:
            if max(timesteps) >= schedule.num_timesteps:
                raise UserError(f"timestep {max(timesteps)} is out of range for the {name} schedule "
                                f"(0..{schedule.num_timesteps - 1})")
            t = torch.tensor(list(timesteps), dtype=torch.long).repeat(n)  # (N*k,): 0..k-1 for each image
            x_t = q_sample(schedule, x0, t, eps)  # (N*k, C, H, W)
        parts.append(text_strip(width, BLOCK_H, [(width / 2, name)], channels))
        parts.append(text_strip(width, LABEL_H, centers, channels))
        parts.append(make_grid(upscale(to_pixels(x_t), scale), nrow=k, padding=PAD))
    return np.concatenate(parts, axis=0)


# -- the reverse process: video and snapshots -------------------------------------------------------------------

class DenoisingRecorder:
    """A sampler callback that keeps the denoising of one batch, for a video or snapshots.

    On every ``every``-th step (indices 0, K, 2K, ...) it stores the uint8 grid of x_t -- and with ``record_x0``
    (default: ``with_x0``) of the network's x0 estimate -- on the CPU, with the step's timestep t. ``with_x0`` puts
    the x0 estimate beside x_t in the video; snapshots show it whenever it was recorded. Grids are small (16 MNIST
    digits: 122 x 122 bytes), so even a 1000-step DDPM of 64 images holds about 60 MB. It records a single batch:
    sample with n <= batch size (the CLI checks this).
    """

    def __init__(self, every: int = 1, with_x0: bool = False, nrow: int | None = None, label=None,
                 record_x0: bool | None = None):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every, self.with_x0, self.nrow = every, with_x0, nrow
        self.record_x0 = with_x0 if record_x0 is None else record_x0 or with_x0
        self.label = label or (lambda level: f"t={level}")  # how a frame names its noise level (t=999, σ=2.5)
        self.timesteps: list = []  # the level of each kept step (ddpm: t, flow: t, edm: σ), noisiest first
        self.frames: list[np.ndarray] = []  # grid of x_t at each kept step, uint8 (H, W, C)
        self.x0_frames: list[np.ndarray] = []  # grid of the x0 estimate at each kept step (with_x0 only)
        self.steps_seen = 0

    def __call__(self, info: StepInfo) -> None:
        if info.index == 0 and self.steps_seen:
            raise ValueError("DenoisingRecorder records one batch, and a second one started: "
                             "sample at most batch_size images")
        self.steps_seen += 1
        if info.index % self.every:
            return
        self.timesteps.append(info.t if isinstance(info.t, float) else int(info.t))
        self.frames.append(make_grid(to_pixels(info.x_t).cpu(), self.nrow))
        if self.record_x0:
            self.x0_frames.append(make_grid(to_pixels(info.x0).cpu(), self.nrow))

    def final_grid(self, final_images: torch.Tensor) -> np.ndarray:
        """The grid of the returned samples, laid out like the recorded frames."""
        return make_grid(final_images.cpu(), self.nrow)

    def video_frames(self, final_images: torch.Tensor, scale: int | None = None) -> list[np.ndarray]:
        """One frame per kept step, then one of ``final_images`` (the samples, uint8 (N, C, H, W)).

        A frame is a LABEL_H strip saying "t=..." above the x_t grid upscaled ``scale`` times (default: until
        MIN_VIDEO_WIDTH wide); with ``with_x0`` the x0 estimate's grid stands GAP pixels to its right. In the
        last frame both panels are the final samples, labelled "t=0 (final)" and "x0 (final)".
        """
        if not self.frames:
            raise ValueError("nothing recorded: pass the recorder as the sampler's callback first")
        final = self.final_grid(final_images)
        if final.shape != self.frames[0].shape:
            raise ValueError(f"final_images make a grid of {final.shape}, "
                             f"the recorded frames are {self.frames[0].shape}")
        scale = scale or auto_scale(final.shape[1], MIN_VIDEO_WIDTH)
        frames = []
        for k, t in enumerate(self.timesteps):
            panels, labels = [self.frames[k]], [self.label(t)]
            if self.with_x0:
                panels, labels = panels + [self.x0_frames[k]], [f"x_t  {self.label(t)}", "x0 estimate"]
            frames.append(labelled_panels([upscale_array(p, scale) for p in panels], labels))
        last = upscale_array(final, scale)
        frames.append(labelled_panels([last, last] if self.with_x0 else [last],
                                      [f"{self.label(0)} (final)", "x0 (final)"][:1 + self.with_x0]))
        return frames

    def write_video(self, path: str | Path, final_images: torch.Tensor, fps: int = 25,
                    scale: int | None = None) -> Path:
        """Write :meth:`video_frames` as a GIF (Pillow) or an MP4 (imageio + ffmpeg, the ``video`` extra).

        The final frame is held for about a second: in a GIF by its duration (the frame count stays steps + 1),
        in an MP4 by repeating it ``fps`` times. Greyscale GIFs are exact; RGB GIFs are quantised by Pillow to 256
        colours per frame, so their pixels can differ slightly from the samples (MP4 is lossy in any case).
        Written atomically: a full disk or a kill mid-write leaves the file that was at ``path`` (if any) whole.
        """
        path = check_video_path(path)
        if fps < 1:
            raise UserError(f"fps must be at least 1, got {fps}")
        frames = self.video_frames(final_images, scale)
        if path.suffix.lower() == ".gif":
            return write_file(path, _gif_bytes(frames, fps))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:  # the encoder writes a file of its own, renamed over path once complete
                _write_mp4(frames, tmp, fps)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        return path


VIDEO_EXTRA_MESSAGE = ("MP4 needs the 'video' extra: pip install imageio imageio-ffmpeg "
                       "(in a clone: pip install -e '.[video]')")


def _imageio():
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's ffmpeg plugin needs it; fail here, not after sampling)
    except ImportError:
        raise UserError(VIDEO_EXTRA_MESSAGE) from None
    return imageio


def check_video_path(path: str | Path) -> Path:
    """The video path as a Path, or a UserError for an extension other than .gif/.mp4 or a missing MP4 extra.

    Cheap: call it before sampling, so a typo costs nothing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise UserError(f"video {path}: use FILE.gif or FILE.mp4")
    if suffix == ".mp4":
        _imageio()
    return path


def _gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    images = [to_pil(f) for f in frames]
    frame_ms = max(20, round(1000 / fps))  # most viewers treat GIF delays under 20 ms as 100 ms
    durations = [frame_ms] * (len(images) - 1) + [max(frame_ms, GIF_FINAL_HOLD_MS)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()


def _write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    imageio = _imageio()
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    # H.264 in yuv420p needs even sides: pad with white rather than let ffmpeg rescale the pixels.
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    frames = frames + [frames[-1]] * (fps - 1)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                            macro_block_size=1) as writer:
        for frame in frames:
            rgb = np.pad(frame, pad, constant_values=255)
            writer.append_data(rgb.repeat(3, axis=2) if rgb.shape[2] == 1 else rgb)
    # imageio-ffmpeg does not look at how ffmpeg exited: one that stopped mid-write (a full disk, a kill) leaves a
    # short file and no error. Count the frames the file holds before it replaces anything.
    try:
        written, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except RuntimeError:  # ffmpeg cannot read it at all
        written = 0
    if written != len(frames):
        raise OSError(f"the encoder stopped after {written} of {len(frames)} frames (a full disk?)")


def nearest_recorded(recorded: Sequence, wanted: Sequence, log: bool = False) -> list[int | None]:
    """For each wanted t, the index in ``recorded`` of the step with the nearest t (ties: the less noisy one).

    ``None`` for t = 0, which stands for the final samples. A sampler with few steps visits only some timesteps
    (DDIM with 50 steps over T = 1000 visits 999, 979, ..., 0), so "t=749" shows the nearest step it did visit.
    """
    if not recorded and any(wanted):
        raise ValueError("nothing recorded: pass the recorder as the sampler's callback first")
    def distance(a, b):  # edm's σ spans 0.002 .. 80: nearest in log σ
        return abs(math.log(a) - math.log(b)) if log else abs(a - b)

    return [None if t == 0 else min(range(len(recorded)), key=lambda k: (distance(recorded[k], t), recorded[k]))
            for t in wanted]


def snapshot_strip(recorder: DenoisingRecorder, final_images: torch.Tensor, wanted: Sequence,
                   scale: int | None = None, log_levels: bool = False) -> np.ndarray:
    """The grid at each wanted reverse-process timestep, side by side in the order given, labelled "t=...".

    t = 0 is the final samples ("t=0 (final)"); any other t shows the recorded step nearest to it and is labelled
    with that step's actual t (see :func:`nearest_recorded`), so a recorder run with ``every`` > 1 or a few-step
    sampler still works, at coarser timesteps. Each panel is upscaled ``scale`` times (default: until it is
    MIN_SNAPSHOT_WIDTH wide) and they stand GAP pixels apart under LABEL_H label strips. When the recorder kept the
    network's x0 estimates, a second row shows them under each x_t, GAP pixels lower: at high noise x_t is noise to
    the eye, the estimate shows what the network already sees. Returns uint8 (H, W, C).
    """
    final = recorder.final_grid(final_images)
    scale = scale or auto_scale(final.shape[1], MIN_SNAPSHOT_WIDTH)
    picked = nearest_recorded(recorder.timesteps, wanted, log=log_levels)
    panels = [upscale_array(final if k is None else recorder.frames[k], scale) for k in picked]
    labels = [f"{recorder.label(0)} (final)" if k is None else recorder.label(recorder.timesteps[k]) for k in picked]
    if not recorder.x0_frames:
        return labelled_panels(panels, labels)
    top = labelled_panels(panels, [f"x_t  {label}" if k is not None else label for k, label in zip(picked, labels)])
    bottom = labelled_panels([upscale_array(final if k is None else recorder.x0_frames[k], scale) for k in picked],
                             ["x0 estimate" if k is not None else "x0 (final)" for k in picked])
    return np.concatenate([top, np.full((GAP, *top.shape[1:]), 255, dtype=np.uint8), bottom], axis=0)


# -- training curves ---------------------------------------------------------------------------------------------

def read_metrics(path: str | Path) -> list[dict]:
    """The training lines of a run's metrics.jsonl (those with a "loss"), in step order.

    Skipped-step lines (``{"step": .., "skipped": ..}``), other records and unreadable lines (a run killed
    mid-write) are left out. When the steps go backwards -- a run resumed from an earlier checkpoint -- the
    lines the resumed run rewrote are replaced by the new ones.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: --run takes a run directory written by `minidiffusion train`")
    records: list[dict] = []
    unreadable = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                unreadable += 1
                continue
            if not isinstance(record, dict) or not isinstance(record.get("loss"), (int, float)) \
                    or not isinstance(record.get("step"), int):
                continue
            while records and records[-1]["step"] >= record["step"]:
                records.pop()
            records.append(record)
    if unreadable:
        log.warning("%s: skipped %d unreadable line%s", path, unreadable, "" if unreadable == 1 else "s")
    if not records:
        raise UserError(f"{path}: no training loss logged yet (train writes a line every train.log_every steps)")
    return records


def ema_smooth(values: Sequence[float | None], smooth: float) -> list[float]:
    """Debiased exponential moving average (as TensorBoard's smoothing): s_k = smooth·s_{k-1} + (1-smooth)·v_k,
    reported as s_k / (1 - smooth^n) after n finite values. Missing (None or non-finite) values stay NaN."""
    if not 0 <= smooth < 1:
        raise UserError(f"--smooth must be in [0, 1), got {smooth}")
    out, s, n = [], 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(math.nan)
            continue
        s, n = smooth * s + (1 - smooth) * v, n + 1
        out.append(s / (1 - smooth**n))
    return out


def plot_curves(records: list[dict], out: str | Path, *, smooth: float = 0.9, title: str = "",
                quartiles: Sequence[str] | None = None) -> Path:
    """Three panels against step: the loss (raw, faint, and smoothed), the smoothed loss per timestep quartile
    (``loss_q0`` .. ``loss_q3``, q0 the least noisy, named by ``quartiles``, e.g. the objective's
    ``quartile_label``s), and training throughput (``img_per_s``). Needs matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("visualize curves needs matplotlib, the 'viz' extra: "
                        "pip install matplotlib (in a clone: pip install -e '.[viz]')") from None

    steps = [r["step"] for r in records]
    column = lambda key: [r.get(key) if isinstance(r.get(key), (int, float)) else math.nan for r in records]
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax_loss, ax_q, ax_speed = fig.subplots(1, 3)

    ax_loss.plot(steps, column("loss"), color="C0", alpha=0.25, linewidth=1)
    ax_loss.plot(steps, ema_smooth(column("loss"), smooth), color="C0", label=f"loss (EMA {smooth})")
    ax_loss.set_title("training loss")
    ax_loss.legend()

    for q in range(4):
        label = quartiles[q] if quartiles else f"quartile {q}"
        ax_q.plot(steps, ema_smooth(column(f"loss_q{q}"), smooth), color=f"C{q}", label=label)
    ax_q.set_title("loss by timestep quartile (q0: least noisy)")
    ax_q.legend()

    ax_speed.plot(steps, column("img_per_s"), color="C2")
    ax_speed.set_title("throughput (images/s)")
    ax_speed.set_ylim(bottom=0)
    for ax in (ax_loss, ax_q):
        ax.set_yscale("log")
    for ax in (ax_loss, ax_q, ax_speed):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)

    out = Path(out)
    buffer = io.BytesIO()  # drawn in memory, then written atomically: a failed write leaves an older plot whole
    fig.savefig(buffer, format=out.suffix[1:].lower() or "png", dpi=100)
    return write_file(out, buffer.getvalue())
