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


def _edited(run, tmp_path, edit):
    """A copy of ``run`` whose newest checkpoint's record went through ``edit`` (a dict -> None)."""
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "checkpoints" / "ckpt_00000006.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return copy, path


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.update(step=-5), "says step -5, which its name does not"),
    (lambda r: r.update(step=60), "says step 60, which its name does not"),
    (lambda r: r["data"].update(image_size=10**9), "at 1000000000 px, which its config"),
    (lambda r: r["data"].update(channels=7), "of 7 channels"),
])
def test_an_edited_record_is_skipped_out_loud_and_resume_goes_on_from_a_good_one(run, tmp_path, caplog, edit, why):
    """Before, a record edited to step -5 made --resume start at -5 and overwrite the run's checkpoints."""
    copy, path = _edited(run, tmp_path, edit)
    with pytest.raises(UserError, match=why):
        load_checkpoint(path)
    before = {p.name: p.read_bytes() for p in (copy / "checkpoints").iterdir()}
    assert main(["train", "--out", str(copy), "--resume", "--set", "train.steps=9", "--no-progress"]) == 0
    assert why in caplog.text  # the newest was skipped, out loud; the run went on from step 3, writing only new steps
    after = {p.name: p.read_bytes() for p in (copy / "checkpoints").iterdir()}
    assert all(after.get(name) == data for name, data in before.items() if "00000003" in name)
    assert load_checkpoint(copy).step == 9


def test_an_optimizer_state_of_the_wrong_shape_is_a_one_line_refusal(run, tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from minidiffusion.checkpoint import file_sha256

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "checkpoints" / "ckpt_00000006.safetensors"
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.startswith("optim.") and k.endswith(".exp_avg"))
    tensors[key] = tensors[key].flatten()[:3].clone()
    save_file(tensors, str(weights))
    record_path = copy / "checkpoints" / "ckpt_00000006.json"
    record = json.loads(record_path.read_text())
    record["sha256"] = file_sha256(weights)
    record_path.write_text(json.dumps(record))
    cfg = load_checkpoint(copy).config  # the record and its checksum hold: only the shape is wrong
    with pytest.raises(UserError, match=r"optimizer state 'exp_avg' of parameter \d+ has shape \(3,\), not \(") as e:
        train(cfg.replace(train={"steps": 9}), copy, resume=True, progress=False)
    assert "\n" not in str(e.value)


def test_a_checkpoint_pruned_while_it_is_read_makes_the_reader_look_again(run, tmp_path, monkeypatch):
    """`sample` while training runs with keep_checkpoints=1: the one record it listed is deleted (pruned) as the
    next is written. Before, that was "no complete checkpoint"; now the reader lists again and takes the new one."""
    import shutil

    import minidiffusion.checkpoint as checkpoint_module

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    newest = copy / "checkpoints" / "ckpt_00000006.json"
    (copy / "checkpoints" / "ckpt_00000003.json").unlink()
    real, spare = checkpoint_module._read_record, tmp_path / "step9"
    shutil.copytree(copy / "checkpoints", spare)

    def training_meanwhile(path):
        if path == newest and newest.exists():  # the trainer writes step 9 and prunes step 6
            for suffix in (".safetensors", ".json"):
                (copy / "checkpoints" / f"ckpt_00000009{suffix}").write_bytes(
                    (spare / f"ckpt_00000006{suffix}").read_bytes())
            newest.unlink()
        return real(path)

    monkeypatch.setattr(checkpoint_module, "_read_record", training_meanwhile)
    with pytest.raises(UserError, match="says step 6, which its name does not"):  # the copy stands in for step 9
        load_checkpoint(copy)
