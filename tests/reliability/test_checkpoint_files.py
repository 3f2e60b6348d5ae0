"""Checkpoint files as a user meets them: readable like their JSON, a damaged newest one skipped out loud."""

import os
import stat

import pytest

import minidiffusion
from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.cli import main
from minidiffusion.errors import UserError
from minidiffusion.training import train
from tests.helpers import make_folder, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    train(tiny_config(make_folder(root / "data")), root / "run", progress=False)
    return root / "run"


def test_the_tensor_file_has_the_json_files_mode(run):
    ckpt = run / "checkpoints"
    for step in (3, 6):
        json_mode = stat.S_IMODE((ckpt / f"ckpt_{step:08d}.json").stat().st_mode)
        assert stat.S_IMODE((ckpt / f"ckpt_{step:08d}.safetensors").stat().st_mode) == json_mode
        assert json_mode & stat.S_IRGRP  # group-readable under the usual umask 022


def test_sample_load_and_evaluate_say_which_checkpoint_they_skipped(run, tmp_path, caplog):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    (damaged / "checkpoints" / "ckpt_00000006.safetensors").write_bytes(b"\0" * 100)
    caplog.set_level("WARNING", logger="minidiffusion")
    assert minidiffusion.load(damaged).checkpoint.step == 3
    assert "skipping a checkpoint that does not load" in caplog.text and "ckpt_00000006.safetensors" in caplog.text
    assert "using ckpt_00000003.json (step 3)" in caplog.text
    caplog.clear()
    assert main(["sample", "--checkpoint", str(damaged), "--n", "2", "--out", str(tmp_path / "x.png"),
                 "--no-progress"]) == 0
    assert "ckpt_00000006.safetensors: checksum mismatch" in caplog.text


def test_an_unreadable_tensor_file_is_a_one_line_error(run, tmp_path):
    """Unreadable by mode (not as root, who reads anything), or not a file at all (a directory in its place)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "checkpoints" / "ckpt_00000006.safetensors"
    if os.geteuid() != 0:
        weights.chmod(0)
        with pytest.raises(UserError, match="cannot read the tensor file"):
            load_checkpoint(copy / "checkpoints" / "ckpt_00000006.json")
        weights.chmod(0o644)
    weights.unlink()
    weights.mkdir()
    with pytest.raises(UserError, match="its tensor file ckpt_00000006.safetensors is missing"):
        load_checkpoint(copy / "checkpoints" / "ckpt_00000006.json")
