"""A full disk during a checkpoint write: a one-line UserError, the previous checkpoint intact, no temp files left,
and once there is space again ``--resume`` finishes the run exactly as if nothing had happened."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import resource
import sys
import types
from pathlib import Path

import pytest
import torch

import minidiffusion.checkpoint as checkpoint_module
from minidiffusion.checkpoint import latest_checkpoint, load_checkpoint
from minidiffusion.cli import main
from minidiffusion.errors import UserError
from minidiffusion.training import train
from tests.helpers import tiny_config

from .conftest import write_config


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def fail_tensor_write(monkeypatch, at_call: int) -> None:
    """``save_file`` writes half a file, then finds the disk full, on its ``at_call``-th call (1-based)."""
    real, calls = checkpoint_module.save_file, itertools.count(1)

    def save_file(tensors, filename, *args, **kwargs):
        if next(calls) == at_call:
            Path(filename).write_bytes(b"\0" * 64)
            raise no_space(filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)


def fail_record_rename(monkeypatch, at_call: int) -> None:
    """Renaming a checkpoint's JSON into place fails on the ``at_call``-th record (its tensors are already in place)."""
    real, calls = os.replace, itertools.count(1)

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".json") and next(calls) == at_call:
            raise no_space(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory):
    cfg = tiny_config(folder, train={"steps": 6, "checkpoint_every": 2})
    run = tmp_path_factory.mktemp("full") / "run"
    train(cfg, run, progress=False)
    return cfg, load_checkpoint(run)


@pytest.mark.parametrize("fail", [fail_tensor_write, fail_record_rename])
def test_disk_full_at_the_second_checkpoint(uninterrupted, tmp_path, monkeypatch, fail):
    cfg, reference = uninterrupted
    with monkeypatch.context() as patch:
        fail(patch, at_call=2)
        with pytest.raises(UserError) as caught:
            train(cfg, tmp_path, progress=False)
    ckpt_dir = tmp_path / "checkpoints"
    assert str(caught.value) == (f"could not write checkpoint for step 4 in {ckpt_dir}: No space left on device "
                                 f"(earlier checkpoints are untouched)")
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["ckpt_00000002.json", "ckpt_00000002.safetensors"]
    assert latest_checkpoint(tmp_path).step == 2  # intact: it loads and its checksum verifies

    train(cfg, tmp_path, resume=True, progress=False)  # space again
    final = load_checkpoint(tmp_path)
    assert final.step == reference.step == 6
    for key in reference.tensors:
        assert torch.equal(final.tensors[key], reference.tensors[key]), key


def test_disk_full_through_the_cli(folder, tmp_path, monkeypatch, capsys):
    config = write_config(tiny_config(folder, train={"steps": 6, "checkpoint_every": 2}), tmp_path / "tiny.toml")
    fail_tensor_write(monkeypatch, at_call=1)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write checkpoint for step 2") and err.count("\n") == 1
    assert "No space left on device" in err
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def _small_filesystem(path: Path, size: str):
    """A real tmpfs of ``size`` at ``path`` (root only); None where it cannot be mounted."""
    import subprocess

    if os.geteuid() != 0:
        return None
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return path if done.returncode == 0 else None


def test_a_really_full_disk_gives_the_one_line_error_and_keeps_the_earlier_checkpoint(tmp_path):
    """Not a faked exception: a tmpfs that holds one checkpoint of the tiny model but not two."""
    import shutil
    import subprocess
    import sys

    from tests.helpers import make_folder

    folder = make_folder(tmp_path / "data")
    cfg = tiny_config(folder, train={"keep_checkpoints": 5})
    sized = train(cfg.replace(train={"steps": 3}), tmp_path / "sized", progress=False)
    one = sum(p.stat().st_size for p in sized.parent.iterdir())  # one checkpoint: tensors + record
    disk = _small_filesystem(tmp_path / "disk", f"{(one * 3 // 2 + 64 * 1024) // 1024}k")
    if disk is None:
        pytest.skip("needs root and tmpfs to make a small real filesystem")
    try:
        toml = tmp_path / "tiny.toml"
        toml.write_text(cfg.to_toml())
        run = disk / "run"
        args = [sys.executable, "-m", "minidiffusion", "train", "--config", str(toml), "--out", str(run),
                "--no-progress"]
        p = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("error: could not write checkpoint for step 6")
        assert "earlier checkpoints are untouched" in last
        assert "Traceback" not in p.stderr
        assert latest_checkpoint(run).step == 3 and not list(run.rglob("*.tmp"))
        # --resume on the same full disk: the same one-line error, the step-3 checkpoint still the newest
        p = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "earlier checkpoints are untouched" in p.stderr.strip().splitlines()[-1]
        assert latest_checkpoint(run).step == 3
        # with space again, --resume finishes the run like the uninterrupted one
        shutil.copytree(run, tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    assert load_checkpoint(train(cfg, tmp_path / "moved", resume=True, progress=False)).step == 6


def test_an_output_that_cannot_be_written_leaves_the_file_already_there_whole(tmp_path, monkeypatch):
    """sample --out FILE on a full disk: before, a truncated FILE replaced a good one. Every output now goes through
    one atomic write: the failure is one clear error, the old file is untouched and no temporary file is left."""
    import minidiffusion.rundir as rundir
    from minidiffusion.images import save_npz, save_png

    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    npz, png = save_npz(images, tmp_path / "out.npz"), save_png(images[0].permute(1, 2, 0).numpy(), tmp_path / "a.png")
    good = {path: path.read_bytes() for path in (npz, png)}

    def fsync(fd):
        raise no_space("the output")

    monkeypatch.setattr(rundir.os, "fsync", fsync)  # the bytes did not all reach the disk
    with pytest.raises(UserError, match=r"cannot write .*out.npz: No space left on device"):
        save_npz(torch.zeros((64, 1, 8, 8), dtype=torch.uint8), npz)
    with pytest.raises(UserError, match=r"cannot write .*a.png: No space left on device"):
        save_png(torch.zeros((8, 8, 1), dtype=torch.uint8).numpy(), png)
    assert {path: path.read_bytes() for path in good} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "out.npz"]


def test_a_sample_grid_that_cannot_be_written_costs_a_warning_not_the_run(folder, tmp_path, monkeypatch, caplog):
    """The final checkpoint is written before the final grid, and a grid that fails is a warning."""
    import minidiffusion.training as training

    def save_png(array, path):
        raise UserError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(training, "save_png", save_png)
    final = train(tiny_config(folder, train={"steps": 4, "sample_every": 2}), tmp_path / "run", progress=False)
    assert load_checkpoint(final).step == 4
    assert caplog.text.count("No space left on device; training goes on") == 2  # step 2's grid and the final one


@contextlib.contextmanager
def disk_fills_after(nbytes: int):
    """Any write past ``nbytes`` into a file fails, as on a disk that fills mid-write: RLIMIT_FSIZE makes the kernel
    refuse it (EFBIG; Python ignores SIGXFSZ) and kills an encoder in a child process with SIGXFSZ."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def stand_in_encoder() -> types.ModuleType:
    """imageio and imageio-ffmpeg as ``_write_mp4`` uses them: the frames go raw straight into the path given, as
    ffmpeg writes its output, and are counted back from the file's size."""
    frame_bytes = []

    class Writer:
        def __init__(self, path, **options):
            self.file = open(path, "wb")  # noqa: SIM115  (closed by __exit__, like imageio's writer)

        def append_data(self, frame):
            frame_bytes[:] = [frame.nbytes]
            self.file.write(frame.tobytes())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    module = types.ModuleType("imageio")
    module.v2, module.get_writer = module, Writer
    module.count_frames_and_secs = lambda path: (os.path.getsize(path) // frame_bytes[0], 0.0)
    return module


@pytest.mark.parametrize("kind", ["gif", "mp4 (stand-in encoder)", "mp4 (ffmpeg)", "curves"])
def test_a_video_or_curves_that_fail_mid_write_leave_the_file_already_there_whole(kind, tmp_path, monkeypatch):
    """Videos and curves were written straight to their path: a disk full mid-write left a truncated file where a
    good one had been. They now go through a temporary file renamed into place, like every other output."""
    import minidiffusion.visualize as V

    if kind == "mp4 (ffmpeg)":
        pytest.importorskip("imageio.v2", reason="the real MP4 encoder needs the 'video' extra (imageio)")
        pytest.importorskip("imageio_ffmpeg", reason="the real MP4 encoder needs the 'video' extra (imageio-ffmpeg)")
    elif kind == "mp4 (stand-in encoder)":
        encoder = stand_in_encoder()
        for name in ("imageio", "imageio.v2", "imageio_ffmpeg"):
            monkeypatch.setitem(sys.modules, name, encoder)
    elif kind == "curves":
        pytest.importorskip("matplotlib", reason="curves need the 'viz' extra (matplotlib)")

    def write(path: Path, seed: int) -> Path:
        if kind == "curves":
            steps = range(1, 40)
            loss = torch.rand(len(steps), generator=torch.Generator().manual_seed(seed)).tolist()
            records = [{"step": s, "loss": v, "img_per_s": 100.0} | {f"loss_q{q}": v for q in range(4)}
                       for s, v in zip(steps, loss)]
            return V.plot_curves(records, path)
        generator = torch.Generator().manual_seed(seed)
        recorder = V.DenoisingRecorder()
        for k, t in enumerate((999, 499)):
            x = torch.rand((4, 1, 8, 8), generator=generator) * 2 - 1
            recorder(V.StepInfo(k, t, x, x))
        return recorder.write_video(path, torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=generator),
                                    fps=4)

    path = write(tmp_path / ("curves.png" if kind == "curves" else f"denoise.{kind[:3]}"), seed=0)
    good = path.read_bytes()
    with disk_fills_after(len(good) // 2), pytest.raises(UserError, match=f"^cannot write {re.escape(str(path))}: "):
        write(path, seed=1)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
