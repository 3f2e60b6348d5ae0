"""Pictures: exact layouts, cells equal to q_sample, videos whose last frame is the samples, nearest-t snapshots."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minidiffusion import visualize as V
from minidiffusion.cli import main
from minidiffusion.config import DiffusionConfig
from minidiffusion.diffusion import (
    DDPM,
    cosine_schedule,
    ddim,
    ddpm_grid,
    eps_from_x0,
    linear_schedule,
    q_sample,
    timesteps,
)
from minidiffusion.errors import UserError
from minidiffusion.images import make_grid, to_model_range, to_pixels

S = linear_schedule()
TIMESTEPS = [0, 10, 50, 100, 150, 200, 250, 300, 400, 600, 800, 999]


def grey_images(n=4, size=8, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def oracle(x0):
    """An ε-model that knows the clean images: DDIM (η = 0) with it returns x0."""
    return lambda x_t, t: eps_from_x0(S, x_t, t, x0)


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("L")))  # grey palette -> exact values
        return frames


# -- forward figure --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedules", [["linear"], ["linear", "cosine"]])
def test_forward_figure_layout_and_cells_are_q_sample(schedules):
    n, size, scale = 3, 8, 2
    images = grey_images(n, size)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    by_name = {"linear": S, "cosine": cosine_schedule(1000)}
    fig = V.forward_figure(images, {name: by_name[name] for name in schedules}, TIMESTEPS, noise, scale=scale,
                           title="forward")

    cell = size * scale
    block_h = V.BLOCK_H + V.LABEL_H + V.PAD + n * (cell + V.PAD)
    assert fig.dtype == np.uint8
    assert fig.shape == (V.TITLE_H + len(schedules) * block_h, V.PAD + 12 * (cell + V.PAD), 1)

    x0 = to_model_range(images)
    for b, name in enumerate(schedules):
        grid_top = V.TITLE_H + b * block_h + V.BLOCK_H + V.LABEL_H
        for j, t in enumerate(TIMESTEPS):
            expected = to_pixels(q_sample(by_name[name], x0, torch.full((n,), t), noise))  # (n, 1, 8, 8)
            for i in range(n):
                top, left = grid_top + V.PAD + i * (cell + V.PAD), V.PAD + j * (cell + V.PAD)
                got = fig[top:top + cell, left:left + cell, 0]
                want = expected[i, 0].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
                np.testing.assert_array_equal(got, want, err_msg=f"{name} row {i} t={t}")
        # the label strip holds dark text, the padding between cells is white
        assert fig[grid_top - V.LABEL_H:grid_top].min() < 128
        assert (fig[grid_top:grid_top + V.PAD] == 255).all()


def test_forward_figure_rgb():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    fig = V.forward_figure(images, {"linear": S}, [0, 999], torch.zeros(2, 3, 4, 4), scale=1)
    assert fig.shape == (V.TITLE_H + V.BLOCK_H + V.LABEL_H + V.PAD + 2 * (4 + V.PAD), V.PAD + 2 * (4 + V.PAD), 3)
    np.testing.assert_array_equal(fig[-4 - V.PAD:-V.PAD, V.PAD:V.PAD + 4], images[1].permute(1, 2, 0).numpy())


def test_forward_cli_writes_figure_of_the_right_size(tmp_path):
    out = tmp_path / "fwd.png"
    assert main(["visualize", "forward", "--dataset", "mnist", "--n", "2", "--out", str(out)]) == 0
    cell = 28 * V.auto_scale(28, V.MIN_CELL)
    with Image.open(out) as im:
        assert im.size == (V.PAD + 12 * (cell + V.PAD), V.TITLE_H + V.BLOCK_H + V.LABEL_H + V.PAD + 2 * (cell + V.PAD))


def test_forward_cli_errors(tmp_path, capsys):
    assert main(["visualize", "forward", "--dataset", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["visualize", "forward", "--timesteps", "0,1000", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["visualize", "forward", "--set", "train.lr=1", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "timestep 1000 is out of range" in err and "only data, diffusion" in err
    assert not (tmp_path / "x.png").exists()


# -- data grid ---------------------------------------------------------------------------------------------------

def make_folder(root: Path, n: int = 16, size: int = 8) -> Path:
    """n greyscale PNGs, image k filled with the value 10 k (so a grid's content is easy to check)."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(np.full((size, size), 10 * k, np.uint8)).save(root / f"{k:03d}.png")
    return root


def test_data_cli_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    out = tmp_path / "grid.png"
    argv = ["visualize", "data", "--dataset", "folder", "--n", "6", "--scale", "3", "--out", str(out),
            "--set", f"data.root={root}", "--set", "data.image_size=8", "--set", "data.channels=1"]
    assert main(argv) == 0
    grid = np.asarray(Image.open(out))
    cell = 8 * 3
    assert grid.shape == (2 * (cell + V.PAD) + V.PAD, 3 * (cell + V.PAD) + V.PAD)  # 6 images -> 3 per row
    centers = [(V.PAD + r * (cell + V.PAD) + 5, V.PAD + c * (cell + V.PAD) + 5) for r in (0, 1) for c in (0, 1, 2)]
    values = {int(grid[y, x]) for y, x in centers}
    assert len(values) == 6 and values <= {10 * k for k in range(16)}  # six distinct images of the folder
    assert main(argv[:-6] + ["--set", "data.root=/does/not/exist", "--set", "data.image_size=8"]) == 2
    assert main(["visualize", "data", "--dataset", "folder", "--n", "99", "--set", f"data.root={root}",
                 "--set", "data.image_size=8", "--out", str(out)]) == 2  # more images than the folder has


def test_forward_cli_schedule_flag_wins_over_the_config(tmp_path):
    """Regression: --schedule linear with --set diffusion.schedule=cosine drew the cosine schedule."""
    from minidiffusion.config import DataConfig
    from minidiffusion.data import load_dataset

    root = make_folder(tmp_path / "imgs")
    out = tmp_path / "f.png"
    assert main(["visualize", "forward", "--dataset", "folder", "--n", "1", "--scale", "1", "--timesteps", "500",
                 "--schedule", "linear", "--set", "diffusion.schedule=cosine", "--set", f"data.root={root}",
                 "--set", "data.image_size=8", "--set", "data.channels=1", "--out", str(out)]) == 0
    images = V.pick_images(load_dataset(DataConfig(name="folder", root=str(root), image_size=8, channels=1)), 1, 0)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))  # what the CLI draws for --seed 0
    want = to_pixels(q_sample(S, to_model_range(images), torch.tensor([500]), noise))[0, 0].numpy()
    top = V.TITLE_H + V.BLOCK_H + V.LABEL_H + V.PAD
    np.testing.assert_array_equal(np.asarray(Image.open(out))[top:top + 8, V.PAD:V.PAD + 8], want)


def test_grid_columns():
    assert [V.grid_columns(n) for n in (96, 64, 16, 6, 2, 1, 7)] == [12, 8, 4, 3, 2, 1, 3]


# -- timesteps ---------------------------------------------------------------------------------------------------

def test_parse_timesteps():
    assert V.parse_timesteps("0,499,749,999", 1000) == [0, 499, 749, 999]
    assert V.parse_timesteps(" 5 , 3 ", 10) == [5, 3]
    for text, bad in [("0,1000", "1000"), ("abc", "'abc'"), ("1,2,1", "1"), ("-1", "-1"), ("1,,2", "''"),
                      ("2.5", "'2.5'")]:
        with pytest.raises(UserError, match="valid timesteps: 0..999") as info:
            V.parse_timesteps(text, 1000)
        assert bad in str(info.value) and "\n" not in str(info.value)


# -- denoising video -------------------------------------------------------------------------------------------

def run_ddim(recorder, n=4, steps=5, seed=0):
    """DDIM with the oracle: returns (clean uint8 images, sampled uint8 images)."""
    clean = grey_images(n, 8, seed)
    x0 = to_model_range(clean)
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    objective = DDPM(DiffusionConfig())  # S, T = 1000
    sigmas = objective.sigmas_at(ddpm_grid(S.num_timesteps, steps))
    out = ddim(objective.denoiser(oracle(x0)), objective.prior(x_T, float(sigmas[0])), sigmas,
               callback=lambda info: recorder(objective.step_info(info)))
    return clean, to_pixels(out)


@pytest.mark.parametrize("every, expected_frames", [(1, 6), (2, 4), (5, 2)])
def test_gif_has_a_frame_per_kept_step_and_ends_on_the_samples(tmp_path, every, expected_frames):
    recorder = V.DenoisingRecorder(every=every)
    clean, samples = run_ddim(recorder, steps=5)
    assert recorder.timesteps == timesteps(1000, 5).flip(0).tolist()[::every]
    path = recorder.write_video(tmp_path / "d.gif", samples, fps=10, scale=3)
    frames = gif_frames(path)
    assert len(frames) == expected_frames  # one per kept step + the final samples

    final = make_grid(samples).repeat(3, 0).repeat(3, 1)[..., 0]  # (H, W) upscaled 3x
    np.testing.assert_array_equal(frames[-1][V.LABEL_H:], final)
    np.testing.assert_array_equal(samples, clean)  # the oracle's DDIM recovers the clean images exactly
    for k, frame in enumerate(frames[:-1]):  # the recorded x_t grids, in order
        np.testing.assert_array_equal(frame[V.LABEL_H:], recorder.frames[k].repeat(3, 0).repeat(3, 1)[..., 0])
    assert frames[0][:V.LABEL_H].min() < 128  # a "t=999" label is drawn
    with Image.open(path) as im:
        im.seek(len(frames) - 1)
        assert im.info["duration"] == V.GIF_FINAL_HOLD_MS  # the samples stay up before the loop


def test_gif_with_x0_shows_the_estimate_beside_x_t(tmp_path):
    recorder = V.DenoisingRecorder(with_x0=True)
    clean, samples = run_ddim(recorder, steps=3)
    frames = gif_frames(recorder.write_video(tmp_path / "d.gif", samples, fps=5, scale=2))
    width = make_grid(samples).shape[1] * 2
    assert len(frames) == 4 and frames[0].shape[1] == 2 * width + V.GAP
    truth = make_grid(clean).repeat(2, 0).repeat(2, 1)[..., 0]
    for frame in frames:  # the oracle's estimate is the clean image at every step; the last frame shows the samples
        np.testing.assert_array_equal(frame[V.LABEL_H:, width + V.GAP:], truth)
    np.testing.assert_array_equal(frames[-1][V.LABEL_H:, :width], truth)


def test_rgb_gif_is_close_to_the_samples(tmp_path):
    """RGB GIFs are quantised to 256 colours per frame: close to the samples, not exact."""
    recorder = V.DenoisingRecorder()
    samples = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    recorder(V.StepInfo(0, 999, torch.randn(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)))
    path = recorder.write_video(tmp_path / "c.gif", samples, fps=5, scale=1)
    with Image.open(path) as im:
        im.seek(1)
        last = np.asarray(im.convert("RGB"))[V.LABEL_H:].astype(int)
    assert np.abs(last - make_grid(samples).astype(int)).mean() < 8


def test_video_errors(tmp_path, monkeypatch):
    recorder = V.DenoisingRecorder()
    _, samples = run_ddim(recorder, steps=2)
    with pytest.raises(UserError, match="FILE.gif or FILE.mp4"):
        recorder.write_video(tmp_path / "d.avi", samples, fps=5)
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    with pytest.raises(UserError, match=r"MP4 needs the 'video' extra: pip install imageio imageio-ffmpeg "
                                        r"\(in a clone: pip install -e '.\[video\]'\)"):
        recorder.write_video(tmp_path / "d.mp4", samples, fps=5)
    with pytest.raises(ValueError, match="one batch"):
        run_ddim(recorder, steps=2)  # a second batch into the same recorder


def test_mp4_frames(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    recorder = V.DenoisingRecorder()
    _, samples = run_ddim(recorder, steps=3)
    path = recorder.write_video(tmp_path / "d.mp4", samples, fps=4)
    with imageio.get_reader(path) as reader:
        frames = [f for f in reader]
    assert len(frames) == 3 + 4  # 3 steps, then the samples held for fps frames (one second)
    expected = V.labelled_panels([V.upscale_array(make_grid(samples), V.auto_scale(make_grid(samples).shape[1],
                                                                                  V.MIN_VIDEO_WIDTH))], ["x"])
    h, w = expected.shape[:2]
    assert frames[-1].shape[:2] == (h + h % 2, w + w % 2)
    assert np.abs(frames[-1][V.LABEL_H:h, :w, 0].astype(int) - expected[V.LABEL_H:, :, 0]).mean() < 4  # lossy


# -- snapshots ---------------------------------------------------------------------------------------------------

def test_nearest_recorded():
    recorded = timesteps(1000, 5).flip(0).tolist()
    assert recorded == [999, 749, 500, 250, 0]
    assert V.nearest_recorded(recorded, [0, 499, 749, 999, 1]) == [None, 2, 1, 0, 4]
    assert V.nearest_recorded([999, 500, 0], [749, 750, 10]) == [1, 0, 2]  # 749 is nearer 500, 750 nearer 999
    assert V.nearest_recorded([999, 499, 0], [749]) == [1]  # a tie goes to the less noisy step
    with pytest.raises(ValueError):
        V.nearest_recorded([], [5])
    assert V.nearest_recorded([], [0]) == [None]


def test_snapshot_strip_picks_the_nearest_steps():
    recorder = V.DenoisingRecorder()
    _, samples = run_ddim(recorder, steps=5)  # records t = 999, 749, 500, 250, 0
    strip = V.snapshot_strip(recorder, samples, [0, 499, 999], scale=2)
    panel_w = make_grid(samples).shape[1] * 2
    assert strip.shape == (V.LABEL_H + panel_w, 3 * panel_w + 2 * V.GAP, 1)
    expected = [make_grid(samples), recorder.frames[2], recorder.frames[0]]  # final, t=500, t=999
    for k, grid in enumerate(expected):
        left = k * (panel_w + V.GAP)
        np.testing.assert_array_equal(strip[V.LABEL_H:, left:left + panel_w], V.upscale_array(grid, 2))


def test_snapshot_strip_shows_the_x0_estimates_under_x_t_when_recorded():
    recorder = V.DenoisingRecorder(record_x0=True)
    clean, samples = run_ddim(recorder, steps=5)  # the oracle: every x0 estimate is the clean images
    strip = V.snapshot_strip(recorder, samples, [999, 0], scale=2)
    panel_w = make_grid(samples).shape[1] * 2
    row_h = V.LABEL_H + panel_w
    assert strip.shape == (2 * row_h + V.GAP, 2 * panel_w + V.GAP, 1)
    np.testing.assert_array_equal(strip[V.LABEL_H:row_h, :panel_w], V.upscale_array(recorder.frames[0], 2))  # x_999
    below = strip[row_h + V.GAP + V.LABEL_H:, :panel_w]
    np.testing.assert_array_equal(below, V.upscale_array(make_grid(clean), 2))  # what the network saw at t = 999
    assert not recorder.with_x0  # recorded for the snapshots; the video stays x_t alone
    assert recorder.video_frames(samples, scale=2)[0].shape[1] == panel_w  # one panel wide, no x0 beside it


# -- curves ------------------------------------------------------------------------------------------------------

def write_metrics(path: Path, records: list) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def log_line(step, loss=0.5):
    return {"step": step, "loss": loss, "loss_q0": loss * 2, "loss_q1": None, "loss_q2": loss, "loss_q3": loss / 2,
            "lr": 1e-4, "img_per_s": 100.0 + step, "fid": 3.0}


def test_read_metrics_skips_and_resumes(tmp_path):
    run = write_metrics(tmp_path / "run", [log_line(2), {"step": 3, "skipped": "non-finite"}, log_line(4), "{broken",
                                           log_line(6), log_line(4, 0.1), log_line(6, 0.2), {"step": 8, "fid": 1.0}])
    records = V.read_metrics(run)
    assert [(r["step"], r["loss"]) for r in records] == [(2, 0.5), (4, 0.1), (6, 0.2)]  # resumed at 4
    with pytest.raises(UserError, match="no training loss"):
        V.read_metrics(write_metrics(tmp_path / "empty", [{"step": 1, "skipped": "x"}]))
    with pytest.raises(UserError, match="not found"):
        V.read_metrics(tmp_path / "nothing")


def test_ema_smooth_known_values():
    assert V.ema_smooth([1.0, 2.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75])
    out = V.ema_smooth([1.0, None, 3.0], 0.0)
    assert out[0] == 1.0 and np.isnan(out[1]) and out[2] == 3.0
    with pytest.raises(UserError):
        V.ema_smooth([1.0], 1.0)


def test_curves_cli(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    run = write_metrics(tmp_path / "run", [log_line(s, 1.0 / s) for s in range(1, 30)])
    out = tmp_path / "curves.png"
    assert main(["visualize", "curves", "--run", str(run), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (1500, 400)
    assert main(["visualize", "curves", "--run", str(tmp_path / "none"), "--out", str(out)]) == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UserError, match=r"pip install matplotlib \(in a clone: pip install -e '.\[viz\]'\)"):
        V.plot_curves(V.read_metrics(run), out)


def test_help_has_defaults_and_an_example(capsys):
    for figure in ("data", "forward", "curves"):
        with pytest.raises(SystemExit) as info:
            main(["visualize", figure, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "example: minidiffusion visualize " + figure in text and "(default:" in text


# -- end to end: train a tiny model, then sample a video and snapshots -----------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minidiffusion.config import Config
    from minidiffusion.training import train

    tmp = tmp_path_factory.mktemp("run")
    root = make_folder(tmp / "imgs")
    cfg = Config.from_dict({
        "model": {"variant": "simple", "base_channels": 8, "channel_mults": [1, 2]},
        "data": {"name": "folder", "root": str(root), "image_size": 8, "channels": 1},
        "train": {"steps": 2, "batch_size": 4, "device": "cpu", "log_every": 1},
        "sample": {"n": 4, "steps": 3, "batch_size": 4},
    })
    train(cfg, tmp / "run", progress=False)
    return tmp / "run"


def test_sample_video_and_snapshots_end_to_end(tiny_run, tmp_path):
    common = ["sample", "--checkpoint", str(tiny_run), "--n", "4", "--steps", "3", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "grid.png")]) == 0
    assert main(common + ["--video", str(tmp_path / "d.gif"), "--snapshots", "0,499,999",
                          "--out", str(tmp_path / "snaps.png")]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))  # (H, W) grey
    frames = gif_frames(tmp_path / "d.gif")
    assert len(frames) == 3 + 1
    scale = V.auto_scale(grid.shape[1], V.MIN_VIDEO_WIDTH)
    np.testing.assert_array_equal(frames[-1][V.LABEL_H:], grid.repeat(scale, 0).repeat(scale, 1))

    snaps = np.asarray(Image.open(tmp_path / "snaps.png"))  # x_t above, the x0 estimates below (the default)
    scale = V.auto_scale(grid.shape[1], V.MIN_SNAPSHOT_WIDTH)
    panel_w, row_h = grid.shape[1] * scale, V.LABEL_H + grid.shape[0] * scale
    assert snaps.shape == (2 * row_h + V.GAP, 3 * panel_w + 2 * V.GAP)
    for top in (V.LABEL_H, row_h + V.GAP + V.LABEL_H):  # the final samples head both rows
        np.testing.assert_array_equal(snaps[top:top + row_h - V.LABEL_H, :panel_w],
                                      grid.repeat(scale, 0).repeat(scale, 1))
    assert main(common + ["--snapshots", "0,499,999", "--no-x0", "--out", str(tmp_path / "xt.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "xt.png")).shape == (row_h, 3 * panel_w + 2 * V.GAP)

    bad = common + ["--snapshots", "0,1000", "--out", str(tmp_path / "s2.png")]
    assert main(bad) == 2 and not (tmp_path / "s2.png").exists()
    assert main(common + ["--video", str(tmp_path / "d.avi"), "--out", str(tmp_path / "g2.png")]) == 2
    if importlib.util.find_spec("matplotlib") is not None:  # the run's own metrics.jsonl plots
        assert main(["visualize", "curves", "--run", str(tiny_run), "--out", str(tmp_path / "c.png")]) == 0


# -- the continuous objectives: their own forward process, levels and labels ------------------------------------

def test_forward_figure_of_flow_cells_are_the_straight_path():
    from minidiffusion.config import DiffusionConfig
    from minidiffusion.diffusion import Flow

    images, levels = grey_images(2, 8), [0.0, 0.5, 1.0]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    flow = Flow(DiffusionConfig(objective="flow", min_snr_gamma=0.0))
    fig = V.forward_figure(images, {"flow": flow}, levels, noise, scale=1, label=lambda t: f"t={t:.2f}")
    top = V.TITLE_H + V.BLOCK_H + V.LABEL_H
    x0 = to_model_range(images)
    for i in range(2):
        for j, t in enumerate(levels):
            y, x = top + V.PAD + i * (8 + V.PAD), V.PAD + j * (8 + V.PAD)
            want = to_pixels(((1 - t) * x0[i] + t * noise[i])[None])[0, 0].numpy()
            np.testing.assert_array_equal(fig[y:y + 8, x:x + 8, 0], want)


def test_parse_levels_by_objective():
    from minidiffusion.config import DiffusionConfig
    from minidiffusion.diffusion import make_objective

    flow = make_objective(DiffusionConfig(objective="flow", min_snr_gamma=0.0))
    edm = make_objective(DiffusionConfig(objective="edm", min_snr_gamma=0.0))
    assert flow.parse_levels("1, 0.75,0") == [1.0, 0.75, 0.0]
    assert edm.parse_levels("80,0.5,0") == [80.0, 0.5, 0.0]
    assert make_objective(DiffusionConfig()).parse_levels("999,0") == [999, 0]
    for text, objective, message in [("1.5", flow, "out of range"), ("-1", edm, "out of range"),
                                     ("x", flow, "not a number"), ("0.5,0.5", flow, "listed twice")]:
        with pytest.raises(UserError, match=message):
            objective.parse_levels(text)


def test_snapshots_of_edm_pick_the_nearest_sigma_in_log_space():
    recorder = V.DenoisingRecorder(label=lambda s: f"σ={s:.3g}")
    assert V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [0.2, 3.0], log=True) == [3, 2]  # 0.2: |ln .2/.1| < |ln 1/.2|
    assert V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [0.2, 3.0]) == [3, 2]
    assert V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [20.0], log=True) == [1] and \
        V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [20.0]) == [1]
    assert V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [40.0], log=True) == [0]  # ln: 40 is nearer 80 than 10
    assert V.nearest_recorded([80.0, 10.0, 1.0, 0.1], [40.0]) == [1]  # linear: nearer 10
    assert recorder.label(2.5) == "σ=2.5"


def test_sample_snapshots_and_forward_of_a_flow_run(tmp_path):
    from minidiffusion.training import train
    from tests.helpers import make_folder, tiny_config

    folder = make_folder(tmp_path / "data")
    cfg = tiny_config(folder, diffusion={"objective": "flow"}, sample={"sampler": "euler", "steps": 4})
    train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "snap.png"
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "4", "--snapshots", "1,0.5,0", "--out",
                 str(out), "--no-progress", "--video", str(tmp_path / "v.gif")]) == 0
    assert Image.open(out).size[0] > 3 * 8 and gif_frames(tmp_path / "v.gif")
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "4", "--snapshots", "2", "--out",
                 str(out), "--no-progress"]) == 2  # flow's t lies in [0, 1]
    assert main(["visualize", "forward", "--dataset", "folder", "--set", f"data.root={folder}", "--set",
                 "data.image_size=8", "--set", "data.channels=1", "--set", "diffusion.objective=flow",
                 "--set", "diffusion.min_snr_gamma=0", "--n", "2", "--out", str(tmp_path / "f.png")]) == 0
