"""The Python API (minidiffusion.load / .sample / train / load_config) and packaging (wheel, --version)."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import minidiffusion
from minidiffusion.cli import main
from minidiffusion.errors import UserError
from minidiffusion.images import to_model_range, to_pixels
from tests.helpers import make_folder, tiny_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "example_api.py"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run far faster on one thread than on two contended ones (and so does the subprocess)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run of a tiny model, trained through the public API."""
    root = tmp_path_factory.mktemp("api")
    cfg = minidiffusion.load_config(None).replace(**tiny_config(make_folder(root / "data")).to_dict())
    cfg = cfg.replace(train={"steps": 4, "checkpoint_every": 0, "ema_decay": 0.5})
    final = minidiffusion.train(cfg, root / "run", progress=False)
    assert final == root / "run" / "checkpoints" / "ckpt_00000004.json"
    return root / "run"


def test_import_is_cheap_and_keeps_the_version():
    code = "import sys, minidiffusion; print(minidiffusion.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.1.0", "False"]


def test_public_names():
    assert isinstance(minidiffusion.load_config("quick"), minidiffusion.Config)
    assert minidiffusion.UserError is UserError
    # minidiffusion.train is a function (api.train: the training loop with the digit classifier's evaluation);
    # the loop and its parts live in minidiffusion.training
    from minidiffusion import api, train, training

    assert train is minidiffusion.train is api.train and callable(training.train) and callable(training.lr_at)
    with pytest.raises(AttributeError):
        minidiffusion.no_such_name  # noqa: B018


def test_load_and_sample(run):
    model = minidiffusion.load(run)
    assert model.image_shape == (1, 8, 8)
    assert model.config == minidiffusion.load_config(run / "config.toml")
    assert model.checkpoint.step == 4 and not model.net.training
    assert "parameters, images 1x8x8, cpu, step 4" in repr(model)
    images = model.sample(5, steps=3, seed=7)
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 8, 8)
    # image k depends only on (seed, k): not on n or the batch size
    assert torch.equal(model.sample(3, steps=3, seed=7, batch_size=2), images[:3])
    assert not torch.equal(model.sample(5, steps=3, seed=8), images)
    floats = model.sample(5, steps=3, seed=7, output="float")
    assert floats.dtype == torch.float32 and floats.min() >= -1 and floats.max() <= 1
    assert torch.equal(to_pixels(floats), images)
    assert not torch.equal(floats, to_model_range(images))  # unquantized, not pixels / 127.5 - 1


def test_sample_options_and_errors(run):
    model = minidiffusion.load(run)
    deterministic = model.sample(2, steps=3, seed=1, output="float")
    stochastic = model.sample(2, steps=3, seed=1, output="float", eta=1.0)  # another [sample] key
    assert not torch.equal(deterministic, stochastic)
    with pytest.raises(UserError, match="sample.bogus"):
        model.sample(2, bogus=1)
    with pytest.raises(UserError, match="output="):
        model.sample(2, output="png")
    with pytest.raises(UserError, match="n=0"):
        model.sample(0)
    with pytest.raises(UserError, match="not found|no complete checkpoint"):
        minidiffusion.load(run / "nothing-here")


def test_raw_weights_differ_from_the_ema(run):
    ema, raw = minidiffusion.load(run), minidiffusion.load(run, ema=False, device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(ema.net.parameters(), raw.net.parameters()))


def test_the_documented_example_runs(run, tmp_path):
    """docs/example_api.py, exactly as the README shows it, from a directory holding runs/quick."""
    shutil.copytree(run, tmp_path / "runs" / "quick")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the package itself is installed (editable) in this environment
    result = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "(16, 1, 8, 8)" in result.stdout
    # the same pixels as the command line with the same options
    assert main(["sample", "--checkpoint", str(run), "--n", "16", "--seed", "0", "--out", str(tmp_path / "cli.png"),
                 "--no-progress"]) == 0
    api, cli = (np.asarray(Image.open(tmp_path / name)) for name in ("runs/api_samples.png", "cli.png"))
    assert api.shape == cli.shape and np.array_equal(api, cli)


def test_readme_shows_the_tested_example():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S) if section else None
    if block is None:
        pytest.skip("README.md has no ```python block under '## Python API' yet")
    assert block.group(1).strip() == EXAMPLE.read_text().strip()


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minidiffusion {minidiffusion.__version__}"


@pytest.mark.slow
def test_wheel_ships_the_presets(tmp_path):
    """pip wheel (no network) -> install into an empty folder -> `--config quick` works from elsewhere."""
    src = tmp_path / "src-copy"  # build from a copy: no build/ or egg-info in the checkout
    skip = shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info", "build", "dist", "bench",
                                  "tests")
    # the bundled MNIST (top-level data/) is not needed, but src/minidiffusion/data/ is the data package
    ignore = lambda d, names: set(skip(d, names)) | ({"data"} if Path(d) == REPO else set())
    shutil.copytree(REPO, src, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("minidiffusion-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"minidiffusion/presets/quick.toml", "minidiffusion/presets/cifar10.toml"} <= set(names)
    subprocess.run(pip + ["install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    # -S: no site-packages processing, so the checkout's editable install cannot shadow the wheel; torch and
    # friends come from this environment's site-packages, placed after the wheel's folder.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), sysconfig.get_paths()["purelib"]])}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import minidiffusion, sys; print(minidiffusion.__file__); sys.argv[0] = 'minidiffusion'; " \
           "from minidiffusion.cli import main; sys.exit(main(sys.argv[1:]))"
    for args, expected in ((["--version"], "minidiffusion 0.1.0"),
                           (["train", "--config", "quick", "--dry-run"], "parameters: ")):
        result = subprocess.run([sys.executable, "-S", "-c", code, *args], cwd=elsewhere, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith(str(tmp_path / "site")), result.stdout
        assert expected in result.stdout


def test_submodules_are_reachable_without_importing_them_first():
    import subprocess
    import sys

    code = ("import minidiffusion, sys; assert 'torch' not in sys.modules; "
            "print(minidiffusion.evaluate.classifier_score.__name__, minidiffusion.diffusion.make_objective.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["classifier_score", "make_objective"]
