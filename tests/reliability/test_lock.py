"""One training per run directory: a second process is refused with one line, a kill -9 leaves no stale lock."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minidiffusion.checkpoint import list_checkpoints
from minidiffusion.errors import UserError
from minidiffusion.rundir import RunLock
from minidiffusion.training import train
from tests.helpers import make_folder, tiny_config


def start_training(folder, run, steps=100_000):
    """A real training process on ``run``; returns once it holds the lock (its pid is in RUN/.lock)."""
    args = [sys.executable, "-m", "minidiffusion", "train", "--out", str(run), "--no-progress", "--resume",
            "--set", "data.name=folder", "--set", f"data.root={folder}", "--set", "data.image_size=8",
            "--set", "data.channels=1", "--set", "model.variant=simple", "--set", "model.base_channels=8",
            "--set", "model.channel_mults=1,2", "--set", "model.dropout=0", "--set", f"train.steps={steps}",
            "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "train.checkpoint_every=5",
            "--set", "sample.sampler=heun", "--set", "sample.steps=2", "--set", "sample.n=4",
            "--set", "sample.guidance=1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if json.loads((run / ".lock").read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the training never took its lock")


def test_a_second_training_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path):
    folder = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    first = start_training(folder, run)
    try:
        second = subprocess.run([sys.executable, "-m", "minidiffusion", "train", "--config", "quick", "--out",
                                 str(run), "--resume"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and f"is in use by another training (pid {first.pid}" in second.stderr
        with pytest.raises(UserError, match="in use by another training"):  # the Python API alike
            train(tiny_config(folder), run, resume=True, progress=False)
        deadline = time.time() + 120
        while not list_checkpoints(run / "checkpoints") and time.time() < deadline:
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 left .lock behind, naming a dead pid: the next run takes it over and finishes
    assert json.loads((run / ".lock").read_text())["pid"] == first.pid
    step = max(s for s, _ in list_checkpoints(run / "checkpoints"))
    again = start_training(folder, run, steps=step + 2)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming from" in err and json.loads((run / ".lock").read_text())["pid"] == again.pid


def test_the_lock_is_released_when_the_run_ends_or_fails(tmp_path):
    folder = make_folder(tmp_path / "data")
    train(tiny_config(folder), tmp_path / "r", progress=False)
    RunLock.acquire(tmp_path / "r").release()  # free again
    with pytest.raises(UserError):  # a run that fails (here: refusing to overwrite) releases it too
        train(tiny_config(folder), tmp_path / "r", progress=False)
    lock = RunLock.acquire(tmp_path / "r")
    with pytest.raises(UserError, match="in use"):
        RunLock.acquire(tmp_path / "r")
    lock.release()
    assert os.path.exists(tmp_path / "r" / ".lock")
