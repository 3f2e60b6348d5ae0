"""Kill the trainer at any moment, resume until done: nothing lost, no torn checkpoint, the same final weights.

A checkpoint is written as tensors-to-temp, rename, JSON-to-temp, rename (the JSON, holding the tensor file's
SHA-256, makes it complete). SIGKILL at random moments, with a checkpoint every step so that some kills land
inside writes, checks that the newest checkpoint on disk always loads; torn files that only a power cut or a bad
disk could leave (truncated tensors, a record without its tensors, stray temp files) are made by hand.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch

from minidiffusion.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from minidiffusion.errors import UserError
from minidiffusion.training import train
from tests.helpers import tiny_config

from .conftest import write_config

STEPS = 16


def kill_config(folder: Path):
    # dropout > 0: its randomness must be a function of the step too, or resumed runs would drift
    return tiny_config(folder, model={"dropout": 0.1},
                       train={"steps": STEPS, "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 1})


def assert_same_tensors(a, b) -> None:
    assert a.step == b.step
    assert a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


def newest_step_on_disk(directory: Path) -> int:
    """The highest step any checkpoint file (complete or not, temp or not) names, or -1."""
    steps = [int(p.name[5:13]) for p in directory.glob("ckpt_*")] if directory.is_dir() else []
    return max(steps, default=-1)


def disk_state(directory: Path) -> str:
    """What a kill left behind, for the failure message: 'clean', 'tmp' (inside a write) or 'orphan tensors'."""
    names = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    if any(n.endswith(".tmp") for n in names):
        return "tmp"
    if any(n.endswith(".safetensors") and n.replace(".safetensors", ".json") not in names for n in names):
        return "orphan tensors"
    return "clean"


def kill_and_resume(cli, config: Path, run: Path, seed: int, kills: int) -> list[str]:
    """Start the run, SIGKILL it ``kills`` times at seeded random moments, resume until it finishes."""
    rng = random.Random(seed)
    ckpt_dir = run / "checkpoints"
    left_behind = []
    args = ["train", "--config", config, "--out", run, "--no-progress"]
    expected = None  # the checkpoint the next attempt must resume from
    for attempt in range(kills + 1):
        proc = cli.start(*args, *(["--resume"] if attempt else []))
        if attempt == kills:
            break
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.3))  # a moment during start-up (data loading, model building)
        else:
            # Wait until the checkpoint of a random later step starts being written, then a little longer: the
            # kill lands inside that write or just after it (a write takes a few milliseconds here).
            target = min(STEPS - 1, newest_step_on_disk(ckpt_dir) + rng.randint(1, 4))
            deadline = time.monotonic() + 60
            while newest_step_on_disk(ckpt_dir) < target and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.01))
        proc.kill()
        result = proc.wait()
        assert result.code in (-9, 0), result.err  # 0: it finished before the kill arrived
        assert_resumed_from(expected, result.err)
        left_behind.append(disk_state(ckpt_dir))
        # The newest checkpoint record on disk is always complete: it loads, and is the one a resume picks.
        records = list_checkpoints(ckpt_dir)
        if records:
            expected = load_checkpoint(records[-1][1])
            assert latest_checkpoint(run).path == expected.path
    result = proc.wait()
    assert result.code == 0, result.err
    assert_resumed_from(expected, result.err)
    return left_behind


def assert_resumed_from(expected, err: str) -> None:
    """The log of an attempt says it resumed from ``expected`` (None: started afresh), if it got that far."""
    if expected is None:
        assert "resuming from" not in err, err
    elif "resuming from" in err or "steps" in err:
        assert f"resuming from {expected.path} (step {expected.step})" in err, err


def assert_matches_reference(run: Path, reference: Path) -> None:
    assert_same_tensors(load_checkpoint(run), load_checkpoint(reference))
    assert list(run.rglob("*.tmp")) == []
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last == {**json.loads((reference / "metrics.jsonl").read_text().splitlines()[-1]),
                    "img_per_s": last["img_per_s"]}


@pytest.fixture(scope="module")
def kill_setup(cli, folder, tmp_path_factory):
    """The config as TOML, and the uninterrupted run with it (made through the CLI, like the interrupted ones)."""
    base = tmp_path_factory.mktemp("kill")
    config = write_config(kill_config(folder), base / "kill.toml")
    result = cli.run("train", "--config", config, "--out", base / "reference", "--no-progress")
    assert result.code == 0, result.err
    return config, base / "reference"


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(cli, kill_setup, tmp_path):
    config, reference = kill_setup
    kill_and_resume(cli, config, tmp_path / "run", seed=0, kills=3)
    assert_matches_reference(tmp_path / "run", reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_sigkill_many_times(cli, kill_setup, tmp_path, seed):
    config, reference = kill_setup
    left_behind = kill_and_resume(cli, config, tmp_path / "run", seed=seed, kills=8)
    print("after each kill:", left_behind)  # with -s: how many kills landed inside a write
    assert_matches_reference(tmp_path / "run", reference)


# -- torn writes made by hand ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(folder, tmp_path_factory):
    """An uninterrupted in-process run with a checkpoint every step (the newest three kept)."""
    cfg = tiny_config(folder, train={"steps": 8, "checkpoint_every": 1})
    run = tmp_path_factory.mktemp("torn") / "run"
    train(cfg, run, progress=False)
    return cfg, run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same length, different content: only the checksum can tell
    path.write_bytes(bytes(data))


TORN = {
    "truncated tensors": lambda d: truncate(d / "ckpt_00000008.safetensors"),
    "modified tensors": lambda d: flip_a_byte(d / "ckpt_00000008.safetensors"),
    "record without tensors": lambda d: (d / "ckpt_00000008.safetensors").unlink(),
    "truncated record": lambda d: truncate(d / "ckpt_00000008.json"),
    "two newest torn": lambda d: (truncate(d / "ckpt_00000008.safetensors"),
                                  (d / "ckpt_00000007.safetensors").unlink()),
}


@pytest.mark.parametrize("damage", TORN)
def test_a_torn_newest_checkpoint_falls_back_and_resume_recovers(finished, tmp_path, damage, caplog):
    cfg, reference = finished
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    ckpt_dir = run / "checkpoints"
    TORN[damage](ckpt_dir)
    (ckpt_dir / "ckpt_00000009.safetensors.tmp").write_bytes(b"\0" * 10)  # a write a crash interrupted
    fallback = 6 if damage == "two newest torn" else 7
    with pytest.raises(UserError):
        load_checkpoint(ckpt_dir / "ckpt_00000008.json")
    assert latest_checkpoint(run).step == fallback
    assert "skipping a checkpoint that does not load" in caplog.text and "ckpt_00000008" in caplog.text

    train(cfg, run, resume=True, progress=False)
    assert_same_tensors(load_checkpoint(run), load_checkpoint(reference))
    assert list(run.rglob("*.tmp")) == []
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [f"ckpt_0000000{s}.{ext}" for s in (6, 7, 8)
                                                          for ext in ("json", "safetensors")]


def test_resume_refuses_to_start_over_when_no_checkpoint_loads(finished, tmp_path):
    """Every record damaged: starting afresh would overwrite them, so --resume stops and says why."""
    cfg, reference = finished
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for path in (run / "checkpoints").glob("*.safetensors"):
        truncate(path)
    with pytest.raises(UserError, match=r"no complete checkpoint in .*ckpt_00000008.safetensors: checksum mismatch"):
        train(cfg, run, resume=True, progress=False)
