"""Every bad input is one line on stderr, ``error: ...``, exit status 2, no traceback -- through the real CLI.

Each command runs as its own process (see conftest.CLI); one case also runs in a fresh interpreter to show the
two agree, and ``--debug`` is checked there too.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from minidiffusion.checkpoint import VERSION, load_checkpoint
from tests.helpers import make_folder, tiny_config

from .conftest import REPO, real_cli, write_config


def train_args(config: Path, out: Path, *sets: str) -> list:
    return ["train", "--config", config, "--out", out, "--no-progress", *[a for s in sets for a in ("--set", s)]]


def dataset(name: str, root: Path) -> tuple[str, ...]:
    """Overrides that point the tiny config at a fixed dataset (native size and channels)."""
    return f"data.name={name}", f"data.root={root}", "data.image_size=0", "data.channels=0"


# -- datasets ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, missing", [("cifar10", "cifar-10-batches-py/data_batch_1"),
                                           ("mnist", "train-images-idx3-ubyte.gz")])
def test_missing_dataset_files(cli, tiny_toml, tmp_path, name, missing):
    (tmp_path / "empty").mkdir()
    cli.run(*train_args(tiny_toml, tmp_path / "run", *dataset(name, tmp_path / "empty"))).assert_one_line_error(
        f"{name}: ", missing, f"not found in {tmp_path / 'empty'}", "downloads are off: MINIDIFFUSION_OFFLINE")
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_the_fork_server_and_a_fresh_interpreter_agree(cli, tiny_toml, tmp_path):
    (tmp_path / "empty").mkdir()
    args = train_args(tiny_toml, tmp_path / "run", *dataset("cifar10", tmp_path / "empty"))
    assert real_cli(*args) == cli.run(*args)


def test_debug_shows_the_traceback(tmp_path):
    result = real_cli("--debug", "train", "--config", tmp_path / "nope.toml")
    assert result.code == 1
    assert result.err.startswith("Traceback (most recent call last):")
    assert result.err.splitlines()[-1].startswith(f"minidiffusion.errors.UserError: config '{tmp_path / 'nope.toml'}'")


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    """A copy of the bundled MNIST training labels, to sit beside a damaged images file."""
    bundled = REPO / "data" / "mnist" / "train-labels-idx1-ubyte.gz"
    if not bundled.is_file():
        pytest.skip("needs the repository's data/mnist")
    root = tmp_path / "mnist"
    root.mkdir()
    shutil.copyfile(bundled, root / bundled.name)
    return root


def test_truncated_mnist_gz(cli, tiny_toml, mnist_root, tmp_path):
    images = REPO / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    with open(images, "rb") as f:
        (mnist_root / images.name).write_bytes(f.read(100_000))  # the first 1% of a download
    cli.run(*train_args(tiny_toml, tmp_path / "run", *dataset("mnist", mnist_root))).assert_one_line_error(
        f"{mnist_root / images.name} is corrupt", "end-of-stream marker", "delete it and download it again")


def test_mnist_gz_that_is_not_idx(cli, tiny_toml, mnist_root, tmp_path):
    (mnist_root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"<html>404 Not Found</html>"))
    cli.run(*train_args(tiny_toml, tmp_path / "run", *dataset("mnist", mnist_root))).assert_one_line_error(
        "is corrupt: bad magic number 0x3c68746d (not an IDX file)")


def cifar_batch(images: np.ndarray) -> bytes:
    return pickle.dumps({b"data": images, b"labels": [0] * len(images)}, protocol=2)


@pytest.mark.parametrize("content, message", [
    (np.random.default_rng(0).bytes(5000), "is corrupt (UnpicklingError"),
    (cifar_batch(np.zeros((4, 3072), np.uint8))[:3000], "is corrupt ("),  # cut short
    (cifar_batch(np.zeros((4, 100), np.uint8)), "is not a CIFAR-10 batch: 'data' should be uint8 (N, 3072)"),
    (pickle.dumps([1, 2, 3]), "is not a CIFAR-10 batch: expected a dict, got list"),
], ids=["random bytes", "truncated", "wrong shape", "not a dict"])
def test_corrupt_cifar_pickle(cli, tiny_toml, tmp_path, content, message):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k in range(1, 6):
        (folder / f"data_batch_{k}").write_bytes(content)
    cli.run(*train_args(tiny_toml, tmp_path / "run", *dataset("cifar10", tmp_path / "cifar"))).assert_one_line_error(
        str(folder / "data_batch_1"), message)


def test_folder_without_images(cli, tiny_toml, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    cli.run(*train_args(tiny_toml, tmp_path / "run", f"data.root={tmp_path / 'docs'}")).assert_one_line_error(
        f"no images under {tmp_path / 'docs'}")


def test_folder_where_no_image_is_readable(cli, tiny_toml, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"")
    cli.run(*train_args(tiny_toml, tmp_path / "run", f"data.root={tmp_path / 'bad'}")).assert_one_line_error(
        f"none of the 2 image files under {tmp_path / 'bad'} could be read")


def test_folder_with_some_unreadable_images_trains_on_the_rest(cli, tiny_toml, tmp_path):
    root = make_folder(tmp_path / "mixed", n=8)
    (root / "000.png").write_bytes((root / "000.png").read_bytes()[:40])  # a truncated PNG
    (root / "zz.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = cli.run(*train_args(tiny_toml, tmp_path / "run", f"data.root={root}", "train.steps=2"))
    assert result.code == 0, result.err
    assert f"skipped 2 unreadable images of 9 (first: {root / '000.png'})" in result.err
    assert "folder: 7 images 1x8x8" in result.err
    assert load_checkpoint(tmp_path / "run").step == 2
    skip_list = tmp_path / "run" / "skipped_files.txt"
    assert f"skipped 2 unreadable or huge image files in all; the list: {skip_list}" in result.err
    assert skip_list.read_text().splitlines() == [str(root / "000.png"), str(root / "zz.jpg")]


# -- configuration ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("toml, message", [
    ("[train]\nlrr = 1e-4\n", "bad.toml: unknown key 'train.lrr' (valid: steps, epochs"),
    ("[trian]\nlr = 1e-4\n", "bad.toml: unknown section 'trian' (valid: model, diffusion, data, train, sample)"),
    ('[train]\nlr = "fast"\n', "train.lr: expected float, got 'fast' (str)"),
    ("[train]\nbatch_size = 0\n", "train.batch_size: 0 is below the minimum 1"),
    ("[train]\nlr = nan\n", "train.lr: must be finite, got nan"),
    ('[train]\nprecision = "fp8"\n', "train.precision: 'fp8' is not one of fp32, bf16, fp16"),
    ("[model]\nchannel_mults = [1, 2.5]\n", "model.channel_mults: expected int, got 2.5"),
    ("train = 3\n", "bad.toml: [train] must be a table, got int"),
    ("[train\nlr = 1\n", "bad.toml: not valid TOML"),
    ("x = " + "[" * 2000 + "]" * 2000 + "\n", "bad.toml: not valid TOML"),  # exhausts tomllib's recursion
])
def test_bad_config_file(cli, tmp_path, toml, message):
    (tmp_path / "bad.toml").write_text(toml)
    cli.run(*train_args(tmp_path / "bad.toml", tmp_path / "run")).assert_one_line_error(message)


def test_config_file_that_is_not_text(cli, tmp_path):
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe\x00garbage")
    cli.run(*train_args(tmp_path / "bad.toml", tmp_path / "run")).assert_one_line_error(
        f"cannot read {tmp_path / 'bad.toml'}: 'utf-8' codec can't decode")


@pytest.mark.parametrize("override, message", [
    ("train.lr=" + "[" * 2000, "train.lr: expected float, got '[[[["),  # too deep for TOML: a bare word
    ("train.steps=-1", "train.steps: -1 is below the minimum 0"),
    ("train.steps=1.5", "train.steps: expected int, got 1.5 (float)"),
    ("train", "expected section.key=value"),
])
def test_bad_override(cli, tiny_toml, tmp_path, override, message):
    cli.run(*train_args(tiny_toml, tmp_path / "run", override)).assert_one_line_error(message)


def test_image_size_the_unet_cannot_take(cli, tiny_toml, tmp_path):
    cli.run(*train_args(tiny_toml, tmp_path / "run", "data.image_size=9")).assert_one_line_error(
        "image size 9 cannot go through 2 levels (size must be divisible by 2: e.g. 2, 4, 6, 8)")


# -- checkpoints and --resume --------------------------------------------------------------------------------------

def test_resume_with_a_different_model_names_the_tensors(cli, folder, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    wider = write_config(tiny_config(folder, model={"base_channels": 16}, train={"steps": 9}), tmp_path / "wider.toml")
    cli.run("train", "--config", wider, "--out", run, "--resume", "--no-progress").assert_one_line_error(
        "ckpt_00000006.json: the checkpoint's model does not match this config's model",
        "time_embed.mlp.0.weight (32, 8) vs (64, 16)")


def newer_version(d: Path) -> None:
    for path in d.glob("*.json"):
        path.write_text(path.read_text().replace('"version": 1,', f'"version": {VERSION + 1},'))


def craft(d: Path, record: dict) -> None:
    """Replace the newest record's content, with the tensor file's true checksum (so only the content is wrong)."""
    json_path = d / "ckpt_00000006.json"
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), **record}))


CHECKPOINT_DAMAGE = {
    "random JSON": (lambda d: (d / "ckpt_00000006.json").write_text('{"hello": [1, 2]}'),
                    "not a minidiffusion checkpoint (no '\"format\": \"minidiffusion-checkpoint\"' record)"),
    "JSON list": (lambda d: (d / "ckpt_00000006.json").write_text("[1, 2]"), "not a minidiffusion checkpoint"),
    "random bytes": (lambda d: (d / "ckpt_00000006.json").write_bytes(np.random.default_rng(1).bytes(300)),
                     "not a minidiffusion checkpoint (unreadable JSON"),
    "truncated record": (lambda d: (d / "ckpt_00000006.json").write_text((d / "ckpt_00000006.json").read_text()[:99]),
                         "not a minidiffusion checkpoint (unreadable JSON"),
    "truncated tensors": (lambda d: (d / "ckpt_00000006.safetensors").write_bytes(b"\x10\x00"),
                          "ckpt_00000006.safetensors: checksum mismatch (truncated or modified file)"),
    "tensors missing": (lambda d: (d / "ckpt_00000006.safetensors").unlink(),
                        "its tensor file ckpt_00000006.safetensors is missing"),
    "newer version": (newer_version, f"written by a newer minidiffusion (format version {VERSION + 1}, this one reads "
                                     f"up to {VERSION})"),
    "no step": (lambda d: craft(d, {"step": "six"}), "checkpoint record is missing a valid 'step'"),
    "foreign config": (lambda d: craft(d, {"config": {"model": {"layers": 12}}}), "unknown key 'model.layers'"),
    "bad image shape": (lambda d: craft(d, {"data": {"channels": "x", "image_size": 8}}),
                        "checkpoint does not record a valid image shape"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_sample_from_a_checkpoint_that_is_not_ours(cli, trained_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    change, message = CHECKPOINT_DAMAGE[damage]
    change(run / "checkpoints")
    cli.run("sample", "--checkpoint", run / "checkpoints" / "ckpt_00000006.json", "--n", "2", "--steps", "2",
            "--out", tmp_path / "s.png", "--no-progress").assert_one_line_error("ckpt_00000006", message)
    assert not (tmp_path / "s.png").exists()


def test_sample_from_a_lone_foreign_safetensors(cli, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(np.random.default_rng(2).bytes(1000))
    cli.run("sample", "--checkpoint", tmp_path / "model.safetensors", "--n", "2").assert_one_line_error(
        "model.safetensors: no model.json beside it, so not a minidiffusion checkpoint")


def test_run_whose_checkpoints_are_all_newer(cli, tiny_toml, trained_run, tmp_path):
    """Neither sample nor --resume falls back to starting over: that would overwrite the newer checkpoints."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    newer_version(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    cli.run("sample", "--checkpoint", run, "--n", "2", "--out", tmp_path / "s.png").assert_one_line_error(
        f"no complete checkpoint in {run} (the newest, ", "written by a newer minidiffusion")
    cli.run("train", "--config", tiny_toml, "--out", run, "--resume", "--no-progress").assert_one_line_error(
        f"--resume: no complete checkpoint in {run}", "newer minidiffusion", "move the checkpoints away")
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


# -- where the output goes -----------------------------------------------------------------------------------------

def test_output_directory_that_cannot_exist(cli, tiny_toml, tmp_path):
    cli.run(*train_args(tiny_toml, "/proc/minidiffusion-run")).assert_one_line_error(
        "cannot write to output directory /proc/minidiffusion-run")
    (tmp_path / "file").write_text("a regular file")
    cli.run(*train_args(tiny_toml, tmp_path / "file" / "run")).assert_one_line_error(
        f"cannot write to output directory {tmp_path / 'file' / 'run'}: Not a directory")


# -- issue 28: tracebacks that are now one line ------------------------------------------------------------------------

def test_resume_without_the_runs_config_toml_refuses_instead_of_taking_the_quick_preset(cli, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "config.toml").unlink()
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    cli.run("train", "--out", run, "--resume", "--no-progress").assert_one_line_error(
        "--resume:", "config.toml is missing", "--config FILE")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(cli, tiny_toml, tmp_path):
    cli.run(*train_args(tiny_toml, tmp_path / "run", "model.base_channels=65536", "model.channel_mults=1,8,8,8")
            ).assert_one_line_error("model.base_channels=65536", "parameters", "GiB", "make it narrower")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_running_out_of_memory_while_training_names_the_batch_size(folder, tmp_path, monkeypatch):
    import minidiffusion.training as training
    from minidiffusion.errors import UserError

    def step(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(training.TrainStep, "__call__", step)
    with pytest.raises(UserError, match=r"out of memory on cpu .* lower train.batch_size=4") as e:
        training.train(tiny_config(folder), tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)


def test_an_unreadable_checkpoint_folder_is_one_line(trained_run, monkeypatch, capsys):
    from minidiffusion.checkpoint import list_checkpoints
    from minidiffusion.errors import UserError

    real = Path.iterdir

    def iterdir(self):
        if self.name == "checkpoints":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)  # (root reads any folder: chmod cannot show it here)
    with pytest.raises(UserError, match="cannot read the checkpoint folder .*checkpoints: Permission denied"):
        list_checkpoints(trained_run / "checkpoints")
    # and so for each command that reads one: sample, train --resume, evaluate
    from minidiffusion.cli import main

    run = str(trained_run)
    for argv in (["sample", "--checkpoint", run, "--n", "2", "--out", str(trained_run.parent / "x.png")],
                 ["train", "--out", run, "--resume", "--set", "train.steps=9", "--no-progress"],
                 ["evaluate", "--checkpoint", run, "--n", "2", "--metrics", "is", "--no-progress"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot read the checkpoint folder" in err[0], (argv, err)


def test_evaluate_reads_the_upper_case_npz_that_sample_writes(tmp_path):
    from minidiffusion.evaluate import load_samples

    with open(tmp_path / "S.NPZ", "wb") as f:  # (numpy would append .npz to the name)
        np.savez_compressed(f, images=np.zeros((3, 8, 8, 1), np.uint8))

    assert load_samples(tmp_path / "S.NPZ").shape == (3, 1, 8, 8)


def test_a_decompression_bomb_among_the_samples_is_one_line(cli, tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "a.png")
    Image.new("1", (14000, 14000)).save(folder / "b.png")  # 196 MP, past twice Pillow's limit: a bomb, not a warning
    cli.run("evaluate", "--samples", folder, "--dataset", "mnist", "--metrics", "is").assert_one_line_error(
        "--samples: cannot read", "b.png", "decompression bomb")
