import json
import subprocess
import sys

import numpy as np
import pytest

from minidiffusion.cli import main
from minidiffusion.config import load_config
from minidiffusion.errors import UserError
from minidiffusion.models.unet import build_model, count_parameters
from tests.helpers import make_folder, tiny_config


def run_cli(*args):
    """The real console entry point in a subprocess: exit code, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "minidiffusion", *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def test_dry_run_prints_config_and_exact_parameter_count():
    code, out, err = run_cli("train", "--config", "configs/cifar10.toml", "--dry-run")
    assert code == 0, err
    assert "parameters: 35,746,307" in out.splitlines()
    assert load_config("cifar10").to_toml() in out


def test_dry_run_counts_the_class_embedding_of_a_conditional_run(tmp_path):
    """A conditional network has one learned 4 × base_channels vector per class and one for "no class": the dry run
    counts the classes the run will see (MNIST's ten; a folder's subfolders, read without decoding an image)."""
    def count(*args):
        code, out, err = run_cli("train", *args, "--dry-run")
        assert code == 0, err
        line = next(line for line in out.splitlines() if line.startswith("parameters: "))
        return out, int(line.removeprefix("parameters: ").replace(",", ""))

    out, cond = count("--config", "mnist-cond")
    model = load_config("mnist-cond").model
    uncond, base = count_parameters(build_model(model, 1, 28)), model.base_channels
    assert cond - uncond == (10 + 1) * 4 * base
    assert "classes: 10 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in out.splitlines()
    for name in ("cat", "dog", "owl"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"not decoded by a dry run")
    folder = ["--config", "mnist-cond", "--set", "data.name=folder", "--set", f"data.root={json.dumps(str(tmp_path))}",
              "--set", "data.image_size=28", "--set", "data.channels=1"]
    out, three = count(*folder)
    assert three - uncond == (3 + 1) * 4 * base and "classes: 3 (cat, dog, owl)" in out.splitlines()


@pytest.mark.parametrize("args, message", [
    (["train", "--set", "train.lrr=1", "--dry-run"], "unknown key 'train.lrr'"),
    (["train", "--set", "train.lr=fast", "--dry-run"], "train.lr: expected float"),
    (["train", "--set", "train.precision=fp8", "--dry-run"], "not one of fp32, bf16, fp16"),
    (["train", "--set", "train.batch_size=0", "--dry-run"], "below the minimum 1"),
    (["train", "--set", "lr=1", "--dry-run"], "expected section.key=value"),
    (["train", "--set", "model.channel_mults=[]", "--dry-run"], "channel_mults: needs at least 1 value(s)"),
    (["train", "--config", "nope", "--dry-run"], "config 'nope' not found"),
    (["train", "--set", "data.image_size=30", "--dry-run"], "image size 30 cannot go through 2 levels "
                                                        "on 2x2 patches (size must be divisible by 4: e.g. 4, 8, 12"),
    (["sample", "--checkpoint", "missing_dir"], "not found"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line_exit_2(args, message):
    code, out, err = run_cli(*args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "sample", "visualize", "evaluate"])
def test_help_shows_defaults_and_an_example(command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "example" in out.lower()


def test_train_then_sample_every_output_kind(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    cfg = tiny_config(root)
    (tmp_path / "tiny.toml").write_text(cfg.to_toml())
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "tiny.toml"), "--out", str(run), "--no-progress"]) == 0
    assert main(["sample", "--checkpoint", str(run), "--n", "5", "--steps", "2", "--out", str(tmp_path / "s.npz"),
                 "--no-progress"]) == 0
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    # per-image seeds: the first 3 of 5 equal a 3-image run, whatever the batch size
    assert main(["sample", "--checkpoint", str(run), "--n", "3", "--steps", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "s3.npz"), "--no-progress"]) == 0
    assert np.array_equal(np.load(tmp_path / "s3.npz")["images"], images[:3])
    assert main(["sample", "--checkpoint", str(run), "--n", "3", "--steps", "2", "--out", str(tmp_path / "dir"),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert main(["sample", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--sampler", "ddpm",
                 "--out", str(tmp_path / "grid.png"), "--no-progress"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert main(["sample", "--checkpoint", str(run), "--n", "2", "--steps", "2000", "--no-progress"]) == 2
    assert "between 1 and T=1000" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_preset_smoke_as_documented(tmp_path):
    """The issue's own smoke: quick preset 30 steps on MNIST, then a 16-image npz."""
    run = tmp_path / "t"
    code, _, err = run_cli("train", "--config", "configs/quick.toml", "--set", "train.steps=30", "--out", str(run))
    assert code == 0, err
    code, _, err = run_cli("sample", "--checkpoint", str(run), "--n", "16", "--sampler", "ddim", "--steps", "10",
                           "--out", str(tmp_path / "s.npz"))
    assert code == 0, err
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (16, 28, 28, 1) and images.dtype == np.uint8


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minidiffusion.training import train

    root = tmp_path_factory.mktemp("cli")
    train(tiny_config(make_folder(root / "data")), root / "run", progress=False)
    return root / "run"


def test_sample_out_is_checked_before_sampling(tiny_run, tmp_path, capsys, monkeypatch):
    import minidiffusion.sampling

    def never(*a, **k):
        raise AssertionError("sampled before the --out check")

    monkeypatch.setattr(minidiffusion.sampling, "load_model", never)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for out, message in [(tmp_path / "x.jpg", "use FILE.png"), (tmp_path / "x.npz", "--snapshots writes one picture"),
                         (tmp_path / "file.png" / "x.png", "not a writable directory")]:
        (tmp_path / "file.png").write_bytes(b"")
        extra = ["--snapshots", "0"] if "snapshots" in message else []
        assert main(["sample", "--checkpoint", str(tiny_run), "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    import os
    if os.geteuid() != 0:  # root writes in a folder without write permission
        assert main(["sample", "--checkpoint", str(tiny_run), "--out", str(locked / "x.npz")]) == 2
    # os.access says yes to root in /proc, where no file can be created: as root too, a real probe fails first
    if os.path.isdir("/proc/self"):
        for flag, value, extra in [("--out", "/proc/x.png", []), ("--out", "/proc/x.npz", []),
                                   ("--out", "/proc/new/folder", []),
                                   ("--video", "/proc/d.gif", ["--out", str(tmp_path / "ok.png")])]:
            argv = ["sample", "--checkpoint", str(tiny_run), flag, value, *extra]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {flag} {value}: cannot write there (cannot create a file in /proc: "), err
            assert err.count("\n") == 1 and "Traceback" not in err


def test_sample_num_images_upper_case_npz_and_set_sample_n(tiny_run, tmp_path):
    assert main(["sample", "--checkpoint", str(tiny_run), "--num-images", "3", "--out", str(tmp_path / "a.NPZ"),
                 "--no-progress"]) == 0
    assert np.load(tmp_path / "a.NPZ")["images"].shape == (3, 8, 8, 1)
    assert main(["sample", "--checkpoint", str(tiny_run), "--set", "sample.n=2", "--out", str(tmp_path / "b.npz"),
                 "--no-progress"]) == 0
    assert np.load(tmp_path / "b.npz")["images"].shape == (2, 8, 8, 1)
    assert main(["sample", "--checkpoint", str(tiny_run), "--n", "5", "--out", str(tmp_path / "c.npz"),
                 "--no-progress"]) == 0  # --n stays
    assert np.load(tmp_path / "c.npz")["images"].shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "a.NPZ")["images"], np.load(tmp_path / "c.npz")["images"][:3])


def test_sample_on_a_missing_gpu_names_its_own_flag(tiny_run, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["sample", "--checkpoint", str(tiny_run), "--device", "cuda", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--device=cuda but no GPU is visible" in err and "train.device" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--set", "train.device=gpu", "--dry-run"], "train.device='gpu': choose auto, cpu, cuda, cuda:N"),
    (["train", "--set", "train.device=cuda:x", "--dry-run"], "train.device='cuda:x': choose"),
    (["sample", "--checkpoint", "nowhere", "--device", "cuda:7"], None),
    (["sample", "--checkpoint", "nowhere", "--device", "mps"], None),
])
def test_device_names_are_checked_in_one_line(argv, message, capsys, monkeypatch):
    """cuda:N and mps are devices users expect; a name that is none of the forms, or a device that is not there,
    is one line."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    if message:
        assert message in err


def test_a_gpu_index_is_checked_against_the_visible_ones(monkeypatch):
    import torch

    from minidiffusion.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda") == "cuda"
    with pytest.raises(UserError, match=r"train.device=cuda:2 but PyTorch sees 2 GPU\(s\), cuda:0 .. cuda:1"):
        resolve_device("cuda:2")
    assert load_config("quick", ["train.device=cuda:1"]).train.device == "cuda:1"


def test_train_data_dir_takes_the_size_and_colour_the_images_share(tmp_path, capsys):
    """`train --data DIR`: your own images in one flag; their common square size and colour become the config's, a
    folder of mixed sizes asks for data.image_size in one line, and what the command line sets wins."""
    from PIL import Image

    for name, mode, size in (("rgb", "RGB", 24), ("grey", "L", 16)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new(mode, (size, size), 60 * i).save(tmp_path / name / f"{i}.png")
    assert main(["train", "--data", str(tmp_path / "rgb"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'name = "folder"' in out and "image_size = 24" in out and "image shape: 3x24x24" in out
    assert main(["train", "--data", str(tmp_path / "grey"), "--dry-run"]) == 0
    assert "image shape: 1x16x16" in capsys.readouterr().out

    Image.new("RGB", (40, 30)).save(tmp_path / "rgb" / "wide.png")
    assert main(["train", "--data", str(tmp_path / "rgb"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not all one square size" in err and "--set data.image_size=32" in err
    assert main(["train", "--data", str(tmp_path / "rgb"), "--set", "data.image_size=16", "--dry-run"]) == 0
    assert "image shape: 3x16x16" in capsys.readouterr().out
