"""Every script bench/README.md and README.md name, run in a smoke mode on tiny settings: a stale import, a renamed
option or a variant that no longer exists fails here, not on the day a GPU is lent. The numbers they print are not
checked (bench/RESULTS.md holds the real ones); that each run produces its complete record is."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidiffusion.config import load_config
from minidiffusion.training import train

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import frontier  # noqa: E402  (bench/ is a folder of scripts, not a package)
import levers  # noqa: E402
import mnist200  # noqa: E402
import nfe  # noqa: E402
import profile_step  # noqa: E402
import quick_sweep  # noqa: E402
import quickstart_quality  # noqa: E402
import summary  # noqa: E402
import variant_ratio  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick preset trained for 4 steps, its guide after step 2."""
    run = tmp_path_factory.mktemp("bench") / "quick"
    cfg = load_config("quick", ["train.steps=4", "sample.guide_step=2", "train.checkpoint_every=0", "train.device=cpu",
                                "sample.n=4"])
    train(cfg, run, progress=False)
    return run


# The bench scripts' training smoke runs (~30 s together): slow, so .ci/run runs them after the default selection.
bench_smoke = pytest.mark.slow


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@bench_smoke
def test_profile_step_smoke(tmp_path):
    results = tmp_path / "r.jsonl"
    made = profile_step.main(["--preset", "mnist", "--smoke", "--legacy", "--results", str(results)])
    assert [r["legacy"] for r in made] == [False, True] and len(records(results)) == 2
    for r in made:
        assert r["ms_per_step"] > 0 and r["top"] and {"launches_per_step", "syncs_per_step", "sync_sources"} <= r.keys()


def test_variant_ratio_smoke():
    (ratio,) = variant_ratio.main(["--smoke"])
    assert ratio > 0


@bench_smoke
@pytest.mark.parametrize("who", ["ours", "diffusers"])
def test_mnist200_smoke(tmp_path, who):
    pytest.importorskip("diffusers") if who == "diffusers" else None
    samples, results = tmp_path / "s.npz", tmp_path / "r.jsonl"
    record = mnist200.main(["--who", who, "--smoke", "--seconds", "3", "--n", "12", "--samples", str(samples),
                            "--results", str(results)])
    images = np.load(samples)["images"]
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
    assert records(results)[0]["who"] == who and record["train_steps"] >= 1
    assert {"confident", "fid_classifier", "entropy_bits", "nfe", "img_per_s"} <= record.keys()


def test_nfe_and_quickstart_quality_smoke(quick_run, tmp_path):
    results = tmp_path / "r.jsonl"
    made = nfe.main(["--checkpoint", str(quick_run), "--samplers", "dpmpp,heun", "--steps", "2", "--n", "8",
                     "--samples", str(tmp_path), "--results", str(results)])
    assert len(made) == 2 and len(records(results)) == 2
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["nfe-dpmpp-2.npz", "nfe-heun-2.npz"]
    assert quickstart_quality.main([str(quick_run), "--n", "8", "--results", str(results)]) in (0, 1)
    assert len(records(results)) == 3


@bench_smoke
def test_frontier_smoke(tmp_path):
    results = tmp_path / "r.jsonl"
    frontier.main(["--recipes", "flow", "--budgets", "2", "--n", "8", "--scorings", "heun:2:1", "--out",
                   str(tmp_path / "runs"), "--results", str(results)])
    (record,) = records(results)
    assert (record["recipe"], record["train_steps"], record["n"]) == ("flow", 2, 8)


@bench_smoke
def test_frontier_anchor_smoke(tmp_path):
    """The anchor through diffusers' own loops and through ours; a second call reuses the trained networks."""
    pytest.importorskip("diffusers")
    results = tmp_path / "r.jsonl"
    argv = ["--recipes", "diffusers", "--budgets", "2", "--n", "4", "--scorings",
            "diffusers-ddim:2:1,diffusers-sde-dpmpp:2:1,ddpm:2:1", "--out", str(tmp_path / "runs"),
            "--results", str(results)]
    frontier.main(argv)
    assert (tmp_path / "runs/diffusers-2-s0/anchor.pt").is_file()
    frontier.main(argv)
    first, second = [r for r in records(results) if r["sampler"] == "diffusers-ddim"]
    assert first["fid_classifier"] == second["fid_classifier"]  # the same network, the same seeds


@bench_smoke
def test_quick_sweep_smoke(tmp_path):
    results = tmp_path / "r.jsonl"
    variant = next(iter(quick_sweep.VARIANTS))
    quick_sweep.main(["--variants", variant, "--n", "8", "--set", "train.steps=2", "train.warmup_steps=1",
                      "--out", str(tmp_path / "runs"), "--results", str(results)])
    assert records(results) and all(r["variant"] == variant for r in records(results))


def markdown_rows(out: str) -> list[dict]:
    """summary.py --markdown's table as one dict per row, keyed by its header."""
    header, _, *rows = out.strip().splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]
    return [dict(zip(cells(header), cells(row), strict=True)) for row in rows]


def test_summary_of_the_committed_results(capsys):
    """bench/summary.py on bench/results.jsonl as committed. The file also holds records without an anchor (quality
    runs, profiles); the script once stopped on them with KeyError: 'anchor'. Now they are left out of the table."""
    committed = records(BENCH / "results.jsonl")
    assert {"frontier", "profile mnist"} <= {r["name"] for r in committed if "anchor" not in r}
    summary.main(["--markdown"])
    rows = markdown_rows(capsys.readouterr().out)
    assert rows and all(row["anchor"] for row in rows)
    assert not {"frontier", "profile mnist"} & {row["name"] for row in rows}
    # the H100's cifar10 training step against lucid (2026-11-26: 2,764.2 / 1,392.2 img/s, ratio 1.99); the table
    # shows the newest record of its kind
    key = ("train cifar10", "NVIDIA H100 80GB HBM3", "lucid")
    *_, record = [r for r in committed if (r["name"], r["machine"], r.get("anchor")) == key]
    settings = f"ours {record['ours_settings']} vs {record['theirs_settings']}"
    (row,) = [row for row in rows if (row["name"], row["machine"], row["anchor"], row["settings"]) == (*key, settings)]
    assert (row["ours"], row["theirs"], row["unit"]) == (f"{record['ours']:,.1f}", f"{record['theirs']:,.1f}", "img/s")
    assert row["ratio"] == f"{record['ours'] / record['theirs']:.2f}" and row["date"] == record["date"][:10]


@pytest.mark.slow  # about 25 s on 2 cores
def test_cpu_script_smoke(tmp_path):
    """bench/cpu.sh --smoke: every step at tiny sizes, then its summary of this run's records (and only those)."""
    pytest.importorskip("diffusers")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_WAIT_POLICY": "PASSIVE", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(BENCH / "cpu.sh"), "--smoke"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    made = records(tmp_path / "cpu-smoke.jsonl")
    names = {"train quick", "sample quick"} | {f"lever {lever} quick" for lever in levers.CPU_LEVERS.split(",")}
    assert {r["name"] for r in made} == names
    layouts = {r["ours_settings"] for r in made if r["name"] == "train quick"}
    assert layouts == {"fp32 channels_last eager", "fp32 eager"}
    # the summary is the last thing printed: this run's newest record of each kind, the spinning threads lever too
    table = done.stdout.rsplit("\n\n", 1)[1].rstrip()
    assert table == summary.table(summary.newest(made), markdown=False).rstrip()
    spinning = next(r for r in made if r["omp_wait_policy"] is None)
    (line,) = [line for line in table.splitlines() if "OMP_WAIT_POLICY=None" in line]
    assert line.startswith("lever threads quick") and f" {spinning['ratio']:.2f} " in line


def run_gpu_smoke(tmp_path, *steps):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_WAIT_POLICY": "PASSIVE", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--smoke", *steps], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "!!" not in done.stdout, done.stdout[-3000:]  # a step that failed or timed out says so with "!!"
    return done.stdout


@pytest.mark.slow  # 25 s; .ci/run runs it after the default selection
def test_gpu_script_smoke_train_and_sample(tmp_path):
    """The GPU script's cifar10 steps on the CPU (compile by the eager backend): every option it passes exists."""
    pytest.importorskip("diffusers")
    out = run_gpu_smoke(tmp_path, "train", "sample")
    assert "train cifar10" in out and "sample cifar10" in out


@pytest.mark.slow
def test_gpu_script_smoke_everything(tmp_path):
    pytest.importorskip("diffusers")
    out = run_gpu_smoke(tmp_path)
    assert "profile mnist" in out and "mnist 6s ours" in out and "mnist 6s diffusers" in out
    assert (tmp_path / "best-mnist.json").is_file() and (tmp_path / "gpu-200s-ours.npz").is_file()


def test_no_extra_pulls_torchvision_into_the_project_environment():
    """torchvision pins its own torch: in an extra it would replace the pinned CPU torch of .venv (and break the
    interop tests). lucid's package needs it, so lucid lives in bench/anchor-venv.sh's environment."""
    import tomllib

    extras = tomllib.loads((BENCH.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    bound = ("torchvision", "denoising-diffusion-pytorch", "ema-pytorch")
    assert not [req for reqs in extras.values() for req in reqs if req.split(">")[0].split("=")[0].strip() in bound]
    assert "denoising-diffusion-pytorch" in (BENCH / "anchor-venv.sh").read_text()


def test_retraining_the_classifier_never_overwrites_the_shipped_one_unless_asked(capsys):
    """Every evaluate scores with the shipped classifier: a retrained one goes to runs/ by default."""
    sys.path.insert(0, str(BENCH.parent / "scripts"))
    import train_classifier

    from minidiffusion.features.classifier import weights_path

    assert train_classifier.destination("mnist", None, False) == Path("runs/classifier/mnist_classifier.safetensors")
    assert train_classifier.destination("mnist", "x.safetensors", False) == Path("x.safetensors")
    assert train_classifier.destination("mnist", None, True) == weights_path("mnist")
    assert train_classifier.main(["--out", "x", "--replace-shipped"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
