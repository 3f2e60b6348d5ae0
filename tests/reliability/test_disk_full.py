"""A full disk during a checkpoint write: a one-line UserError, the previous checkpoint intact, no temp files left,
and once there is space again ``--resume`` finishes the run exactly as if nothing had happened."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest
import torch

import minidiffusion.checkpoint as checkpoint_module
from minidiffusion.checkpoint import latest_checkpoint, load_checkpoint
from minidiffusion.cli import main
from minidiffusion.errors import UserError
from minidiffusion.train import train
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
