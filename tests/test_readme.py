"""The README, as a reader follows it: every command it shows parses, every config it names loads, and every shell
and Python block runs, in order, on a fresh copy of the checkout (`test_the_readme_runs_top_to_bottom`, slow: the
README's own commands with tiny step counts substituted here, not by the reader)."""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidiffusion.cli import build_parser
from minidiffusion.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


SUBCOMMAND = r"\bminidiffusion ((?:train|sample|evaluate|visualize|convert)\b.*)"


def readme_commands() -> list[str]:
    """The commands of the code blocks (line by line, continuations joined) and of inline code (which may wrap),
    comments dropped; a bare mention such as `minidiffusion evaluate` is not a command."""
    parts = README.read_text(encoding="utf-8").replace("\\\n", " ").split("```")
    lines = []
    for k, part in enumerate(parts):
        if k % 2:  # a fenced block
            lines += part.splitlines()
        else:  # prose: inline code spans, and indented code lines
            lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", part)]
            lines += [line for line in part.splitlines() if line.startswith("    ")]
    found = set()
    for line in lines:
        match = re.search(SUBCOMMAND, line)
        if match:
            command = re.split(r" && |\s#", match.group(1))[0].strip()
            if " " in command:
                found.add(" ".join(command.split()))
    return sorted(found)


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_we_expect():
    names = {c.split()[0] for c in COMMANDS}
    assert names == {"train", "sample", "evaluate", "visualize", "convert"} and len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_and_its_config_loads(command):
    argv = shlex.split(command)
    args = build_parser().parse_args(argv)  # argparse exits (SystemExit 2) on an unknown or misspelt option
    if argv[0] == "train":
        load_config(args.config or "quick", args.set)  # every --set key exists and takes that value


def test_every_test_the_failure_table_names_exists():
    """The "What happens when…" table says which test holds each behaviour: each named test must exist."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## What happens when"):text.index("## Library layout")]
    named = re.findall(r"`([\w/]+\.py)::(test_\w+)`", table)
    assert len(named) >= 24
    tests = Path(__file__).resolve().parent
    missing = [f"{f}::{name}" for f, name in named
               if not re.search(rf"^def {name}\(", (tests / f).read_text(encoding="utf-8"), re.M)]
    assert missing == []


# -- the README, run ------------------------------------------------------------------------------------------------

# What the run cannot do here, and why; every rule must still match a README line (a stale rule fails).
SKIPS = {
    r"^source \.venv/bin/activate": "the test already runs in the project's environment",
    r"^pip install": "installing would change the environment the tests run in",
    r"scripts/test\.sh": "the test suite itself",
    r"--device cuda|device=cuda": "needs a GPU",
    r"^CUDA_VISIBLE_DEVICES": "chooses among GPUs (on a CPU it would train the mnist preset in full)",
    r"^torchrun": "needs GPUs, 8 per machine",
    r"^hf download": "needs the network (the Hub)",
    r"^npm pack": "needs the network (npm)",
    r"^tar xzf runs/emoji-datasource": "unpacks what npm fetched (the test lays out that folder itself)",
    r"ddpm-cifar10-32": "needs google/ddpm-cifar10-32 from the Hub",
    r"runs/cifar10\b": "needs a CIFAR-10 run, and CIFAR-10 downloads",
}
# The substitutions that make the README's commands tiny: fewer steps, images, samples.
TRAIN_STEPS = 4  # every `train` without a step count; a run trained further ("train longer") gets 2 x this
TINY = [
    (r"train\.steps=\d+", f"train.steps={2 * TRAIN_STEPS}"),
    (r"--num-images \d+", "--num-images 6"),
    (r"--n \d+", "--n 16"),
    (r"--steps \d+", "--steps 3"),
    (r'"train\.steps=\d+"', f'"train.steps={TRAIN_STEPS}"'),
]


def readme_blocks() -> list[tuple[str, list[str]]]:
    """The fenced ``bash`` and ``python`` blocks in order: (language, commands), a bash block as its logical lines
    (continuations joined, comments and blank lines dropped), a python block as one program; consecutive python blocks
    join into one program, as a reader runs them in one interpreter."""
    blocks: list[tuple[str, list[str]]] = []
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S):
        if language == "bash":
            lines = [re.split(r"\s#\s|^#", line)[0].strip() for line in body.replace("\\\n", " ").splitlines()]
            blocks.append(("bash", [" ".join(line.split()) for line in lines if line.strip()]))
        elif language == "python":
            if blocks and blocks[-1][0] == "python":
                blocks[-1][1][0] += body
            else:
                blocks.append(("python", [body]))
    return blocks


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPS.items() if re.search(pattern, command)), None)


def tiny(command: str) -> str:
    """The command at tiny settings: ``TINY``'s substitutions; a ``train`` without a step count trains
    ``TRAIN_STEPS``, and its final grid samples in 3 steps; the quickstart script takes its defaults spelt out and
    the same step count."""
    for pattern, replacement in TINY:
        command = re.sub(pattern, replacement, command)
    if command.startswith("bash scripts/quickstart.sh"):
        args = command.split()[2:]
        args += ["runs/quick", "quick"][len(args):]
        command = " ".join(["bash scripts/quickstart.sh", *args, "--set", f"train.steps={TRAIN_STEPS}",
                            "--set", "train.fit_time_limit=false"])
    elif re.match(r"minidiffusion train\b", command) and "--dry-run" not in command:
        if "train.steps=" not in command:
            command += f" --set train.steps={TRAIN_STEPS}"
        command += " --set sample.steps=3"  # the final sample grid of a 1,000-step preset: minutes on a CPU
    return command


def test_every_readme_block_is_run_or_skipped_for_a_stated_reason():
    """The slow run below covers the README: each line runs (tiny) or is skipped by a rule that says why, and each
    rule still matches something (so a rule cannot quietly outlive its line)."""
    blocks = readme_blocks()
    lines = [line for language, body in blocks if language == "bash" for line in body]
    used = {pattern for pattern in SKIPS if any(re.search(pattern, line) for line in lines)}
    assert used == set(SKIPS)
    runnable = [line for line in lines if skip_reason(line) is None]
    assert len(runnable) >= 20 and any(language == "python" for language, _ in blocks)
    assert tiny("bash scripts/quickstart.sh") == ("bash scripts/quickstart.sh runs/quick quick --set "
                                                  f"train.steps={TRAIN_STEPS} --set train.fit_time_limit=false")
    assert tiny("minidiffusion train --config mnist --out x") == f"minidiffusion train --config mnist --out x " \
                                                                 f"--set train.steps={TRAIN_STEPS} --set sample.steps=3"


def checkout_copy(tmp_path: Path) -> Path:
    """A fresh-clone view of the checkout: its top-level entries linked (the venv too), ``runs/`` empty."""
    copy = tmp_path / "clone"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("runs", ".git", ".pytest_cache", ".ruff_cache"):
            (copy / entry.name).symlink_to(entry)
    venv = Path(sys.prefix)
    if not (copy / ".venv").exists():
        (copy / ".venv").symlink_to(venv)
    return copy


def reader_files(where: Path) -> None:
    """What the README tells readers to bring or fetch: a folder of their own colour pictures (path/to/images), one
    with a subfolder per class (pets/cat, pets/dog), the emoji folder npm unpacks, and a diffusers pipeline folder
    (path/to/pipeline)."""
    rng = np.random.default_rng(0)

    def pictures(folder: Path, n: int, colour: tuple[int, int, int]) -> None:
        folder.mkdir(parents=True)
        for k in range(n):
            img = np.zeros((16, 16, 3), np.uint8) + rng.integers(0, 60, 3, dtype=np.uint8)
            y, x = rng.integers(0, 10, 2)
            img[y:y + 6, x:x + 6] = colour
            Image.fromarray(img).save(folder / f"{k:02d}.png")

    pictures(where / "path/to/images", 24, (230, 120, 40))
    emoji = where / "runs/package/img/twitter/64"  # what `npm pack emoji-datasource-twitter` unpacks: RGBA, 64 px
    emoji.mkdir(parents=True)
    for k in range(16):
        img = np.zeros((64, 64, 4), np.uint8)
        y, x = rng.integers(0, 40, 2)
        img[y:y + 24, x:x + 24] = (*rng.integers(0, 255, 3), 255)
        Image.fromarray(img, "RGBA").save(emoji / f"{k:04x}.png")
    pictures(where / "pets/cat", 12, (200, 200, 60))
    pictures(where / "pets/dog", 12, (60, 90, 220))
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(128, 128), layers_per_block=1,
                       down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D",
                       "AttnUpBlock2D"), attention_head_dim=64, norm_eps=1e-6, downsample_padding=0,
                       flip_sin_to_cos=False, freq_shift=1)  # the layout of google/ddpm-cifar10-32, tiny
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(clip_sample=True)).save_pretrained(where / "path/to/pipeline")


def checkout_changes() -> str:
    """``git status`` of the checkout (tracked files changed, untracked ones not ignored); "" outside a git clone."""
    done = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(tmp_path):
    """Each block in order, in a fresh view of the checkout, so that later commands find what earlier ones made
    (the quickstart's runs/quick first): exit status 0 and no traceback, tiny settings substituted."""
    pytest.importorskip("diffusers")
    # scripts/venv.sh (which the quickstart sources) must find this environment installed from this checkout, or
    # it would reinstall the package from the temporary copy
    stamp = subprocess.run(["bash", "-c", "source scripts/venv.sh && cat \"$VENV/.minidiffusion-installed\""],
                           cwd=ROOT, env={**os.environ, "MINIDIFFUSION_VENV": sys.prefix}, capture_output=True,
                           text=True)
    assert stamp.returncode == 0 and str(ROOT / "src") in stamp.stdout, stamp.stdout + stamp.stderr
    clone = checkout_copy(tmp_path)
    reader_files(clone)
    brought = {p.name for p in clone.iterdir()}  # the checkout's entries and the reader's own folders
    checkout_before = checkout_changes()
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "MINIDIFFUSION_VENV": str(Path(sys.prefix)), "MINIDIFFUSION_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ran = []
    started = time.perf_counter()
    for language, body in readme_blocks():
        for command in body:
            if language == "bash" and skip_reason(command):
                continue
            command = tiny(command)
            argv = ["bash", "-c", command] if language == "bash" else [sys.executable, "-c", command]
            done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
            output = done.stdout + done.stderr
            assert done.returncode == 0 and "Traceback" not in output, f"{command}\n{output[-3000:]}"
            ran.append(command)
            print(f"{time.perf_counter() - started:6.1f} s  {command}")
            started = time.perf_counter()
    assert (clone / "runs/quick/samples.png").is_file() and (clone / "runs/mnist-cond/samples.png").is_file()
    assert (clone / "runs/quick_denoising.gif").is_file()
    assert any((clone / "runs/quick-workers/checkpoints").glob("*.json"))
    # nothing new beside runs/, and nothing written through the links into the checkout (docs/*.png, bench records)
    littered = sorted(p.name for p in clone.iterdir() if p.name not in brought)
    assert littered == [], f"README commands wrote outside runs/: {littered}"
    assert checkout_changes() == checkout_before, "README commands changed files of the checkout"
    assert len(ran) >= 20
