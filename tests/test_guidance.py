"""Autoguidance: the guided ε, the guide network a run keeps (sample.guide_at), and how sampling finds it."""

import math
import sys
from pathlib import Path

import pytest
import torch

import minidiffusion
from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.cli import main
from minidiffusion.config import replace_sample
from minidiffusion.diffusion import Denoiser, Flow, guided, make_objective
from minidiffusion.errors import UserError
from minidiffusion.sampling import Options, generate, load_model
from minidiffusion.training import train
from tests.helpers import full_and_resumed, make_folder, tiny_config

GUIDED = {"guide_at": 0.5, "guidance": 2.0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    """8 steps, checkpoints every 2, the guide taken at step 4; grids at every checkpoint, guided from step 4."""
    cfg = tiny_config(folder, train={"steps": 8, "checkpoint_every": 2, "keep_checkpoints": 10, "sample_every": 2},
                      sample=GUIDED)
    out = tmp_path_factory.mktemp("run")
    train(cfg, out, progress=False)
    return out


def ckpt(run, step):
    return load_checkpoint(run / "checkpoints" / f"ckpt_{step:08d}.json")


def test_the_guided_denoiser_is_guide_plus_w_times_the_difference():
    x = torch.randn(3, 1, 4, 4)
    good = Denoiser(lambda x, sigma, cond: 2 * x + sigma)
    weak = Denoiser(lambda x, sigma, cond: x)
    for w, sigma in ((1.0, 0.5), (1.5, 2.0), (3.0, 9.0)):
        assert torch.allclose(guided(good, weak, w)(x, sigma), x + w * (x + sigma))


def test_the_run_keeps_the_ema_at_guide_at_as_its_guide(run):
    assert not ckpt(run, 2).has("guide")
    at_4, at_8 = ckpt(run, 4), ckpt(run, 8)
    assert at_4.state_dict("guide").keys() == at_4.state_dict("ema").keys()
    for key, value in at_4.state_dict("ema").items():
        assert torch.equal(at_4.tensors[f"guide.{key}"], value), key  # the EMA at step 4 ...
        assert torch.equal(at_8.tensors[f"guide.{key}"], value), key  # ... kept to the end
    assert not all(torch.equal(at_8.tensors[f"guide.{k}"], v) for k, v in at_8.state_dict("ema").items())
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step_{s:08d}.png" for s in (2, 4, 6, 8)]


@pytest.mark.parametrize("guide_at", [0.5, 0.75])  # the guide taken before the cut (step 3), and after it (step 4)
def test_resume_restores_or_takes_the_guide_as_the_uninterrupted_run(folder, tmp_path, guide_at):
    cfg = tiny_config(folder, sample={"guide_at": guide_at, "guidance": 2.0})
    a, b = (load_checkpoint(run) for run in full_and_resumed(cfg, tmp_path))
    assert a.has("guide") and a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


def test_the_model_as_its_own_guide_changes_nothing(run):
    net, c = load_model(run)
    kw = {"seed": 3, "shape": (1, 8, 8), "options": Options(output="float")}
    objective, sample = make_objective(c.config.diffusion), c.config.sample
    plain = generate(net, objective, replace_sample(sample, {"guidance": 1.0}), 4, **kw)
    assert torch.equal(generate(net, objective, sample, 4, guide=net, **kw), plain)  # D_g + w (D - D_g) = D, g = net
    assert not torch.allclose(generate(net, objective, sample, 4, guide=load_model(ckpt(run, 2).path)[0], **kw), plain)
    with pytest.raises(UserError, match="needs a guide network"):
        generate(net, objective, sample, 4, **kw)


def test_load_finds_the_guide_and_sample_applies_the_weight(run):
    model = minidiffusion.load(run)
    assert model.guide is not None
    plain, guided = model.sample(4, sampler="ddim", steps=3, guidance=1.0), model.sample(4, sampler="ddim", steps=3)
    assert not torch.equal(plain, guided) and torch.equal(guided, model.sample(4, sampler="ddim", steps=3))
    other = minidiffusion.load(run, guide=ckpt(run, 2).path)  # an explicit guide replaces the carried one
    assert not torch.equal(other.sample(4, sampler="ddim", steps=3), guided)
    assert minidiffusion.load(ckpt(run, 2).path).guide is None


def test_cli_guidance_options(run, folder, tmp_path, capsys):
    early = str(ckpt(run, 2).path)
    assert main(["sample", "--checkpoint", str(run), "--n", "4", "--out", str(tmp_path / "a.npz"),
                 "--no-progress"]) == 0
    assert main(["sample", "--checkpoint", early, "--guidance", "3", "--guide", str(run), "--n", "4",
                 "--out", str(tmp_path / "b.npz"), "--no-progress"]) == 0
    other = tmp_path / "other"  # 16 px images: no guide for an 8 px model
    train(tiny_config(make_folder(tmp_path / "big", size=16), data={"image_size": 16}, train={"steps": 1}), other,
          progress=False)
    cases = [(["--checkpoint", early], "needs a guide network"),
             (["--checkpoint", str(run), "--guidance", "1", "--guide", early], "guidance is off"),
             (["--checkpoint", str(run), "--guide", str(other)], "trained on other images"),
             (["--checkpoint", str(run), "--guidance", "0.5"], "below the minimum")]
    for args, message in cases:
        capsys.readouterr()
        assert main(["sample", *args, "--n", "4", "--out", str(tmp_path / "c.npz"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_resuming_past_guide_at_without_a_guide_says_so(folder, tmp_path, caplog):
    train(tiny_config(folder), tmp_path / "r", progress=False)  # 6 steps, no guide
    caplog.set_level("WARNING", logger="minidiffusion")
    later = tiny_config(folder, train={"steps": 8}, sample={"guide_at": 0.25})  # the guide step, 2, is long past
    train(later, tmp_path / "r", resume=True, progress=False)
    assert "the guide's step 2 (sample.guide_at/guide_step) is behind the resumed step 6" in caplog.text
    assert not load_checkpoint(tmp_path / "r").has("guide")


def test_evaluate_refuses_guidance_for_samples_from_a_file(tmp_path, capsys):
    assert main(["evaluate", "--samples", str(tmp_path / "x.npz"), "--dataset", "mnist", "--guidance", "2"]) == 2
    assert "apply to samples drawn from --checkpoint" in capsys.readouterr().err


def test_a_run_cut_by_the_time_limit_still_takes_its_guide(folder, tmp_path):
    """sample.guide_at is a fraction of the steps and, with train.time_limit, of the time too, whichever comes
    first: a run the limit stops before guide_at x steps still carries the EMA of its first guide_at x limit."""
    cfg = tiny_config(folder, train={"steps": 1000, "time_limit": 1e-6, "checkpoint_every": 0},
                      sample={"guide_at": 0.5, "guidance": 2.0})
    ckpt = load_checkpoint(train(cfg, tmp_path / "r", progress=False))
    assert ckpt.step == 1 and ckpt.has("guide")  # guide_at x steps is step 500; the clock came first
    model = minidiffusion.load(tmp_path / "r")
    assert model.guide is not None and model.sample(2, seed=0).shape == (2, 1, 8, 8)


def test_guide_step_keeps_the_ema_after_that_many_steps_whatever_the_length(folder, tmp_path):
    """sample.guide_step: the guide is the EMA after step k, the same network for a 4- and a 6-step run of one seed
    (the warmup, and so the weights up to k, do not depend on train.steps)."""
    from minidiffusion.training import guide_step_of

    cfg = tiny_config(folder, train={"warmup_steps": 6}, sample={"guide_step": 2, "guidance": 2.0})
    a = load_checkpoint(train(cfg, tmp_path / "a", progress=False))
    b = load_checkpoint(train(cfg.replace(train={"steps": 4}), tmp_path / "b", progress=False))
    assert a.has("guide") and b.has("guide")
    for key, value in a.state_dict("guide").items():
        assert torch.equal(value, b.state_dict("guide")[key]), key
    assert guide_step_of(cfg, 6) == 2 and guide_step_of(cfg.replace(sample={"guide_step": 9}), 6) == 6
    assert guide_step_of(cfg.replace(sample={"guide_step": 0, "guide_at": 0.5}), 6) == 3
    with pytest.raises(UserError, match="both choose the guide"):
        cfg.replace(sample={"guide_at": 0.5})


class Counting(torch.nn.Module):
    """A network that records the timesteps it is called at."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x, t):
        self.calls.append(float(t[0]))
        return self.net(x, t)


def test_the_guide_interval_guides_only_the_levels_inside_it(run):
    """sample.guide_interval (Kynkäänniemi et al. 2024): σ in [lo, hi] guided, elsewhere the model alone, and the
    guide is not even called there. Timesteps 999 / 666 / 333 of DDIM 3 have σ ≈ 157, 3.0, 0.78 here."""
    net, c = load_model(run)
    guide = load_model(ckpt(run, 2).path)[0]
    objective = make_objective(c.config.diffusion)
    kw = {"seed": 3, "shape": (1, 8, 8), "options": Options(output="float")}

    def draw(interval, weight=2.0):
        main, weak = Counting(net), Counting(guide)
        sample = replace_sample(c.config.sample, {"guidance": weight, "guide_interval": interval})
        return generate(main, objective, sample, 4, guide=weak, **kw), main.calls, weak.calls

    everywhere, calls, guide_calls = draw([])
    assert torch.equal(draw([0, 1e6])[0], everywhere) and guide_calls == calls  # an interval holding every level
    unguided, _, none = draw([], weight=1.0)
    assert torch.equal(draw([1e5, 1e6])[0], unguided) and draw([1e5, 1e6])[2] == []  # one holding none
    middle, calls, guide_calls = draw([1.0, 10.0])
    sigmas = [objective.sigma(int(t)) for t in calls]
    assert len(calls) == 3 and sum(1.0 <= s <= 10.0 for s in sigmas) == 1  # only the middle step is inside
    assert guide_calls == [t for t, s in zip(calls, sigmas) if 1.0 <= s <= 10.0]
    assert not torch.equal(middle, everywhere) and not torch.equal(middle, unguided)
    with pytest.raises(UserError, match=r"guide_interval=\[2.0, 1.0\] must be two noise levels \[lo, hi\]"):
        c.config.replace(sample={"guide_interval": [2.0, 1.0]})


def test_the_guide_interval_on_flow_is_in_edm_sigma_and_calls_the_guide_only_inside():
    """On flow's path (σ = t, α = 1 - t) the interval [0.2, 1] of t/(1-t) is t in [1/6, 1/2]."""
    def constant(k, calls):  # x0 estimate k: enough to tell main, guide and their mix apart
        return Denoiser(lambda x, t, cond: calls.append(t) or torch.full_like(x, k), slope=1.0)

    main_calls, guide_calls = [], []
    denoiser = guided(constant(3.0, main_calls), constant(1.0, guide_calls), 2.0, (0.2, 1.0))
    x = torch.ones(2)
    for t in (0.9, 0.5, 0.3, 0.1):
        k = 1.0 + 2.0 * (3.0 - 1.0) if 1 / 6 <= t <= 0.5 else 3.0
        assert torch.equal(denoiser(x, t), torch.full_like(x, k)), t
    assert main_calls == [0.9, 0.5, 0.3, 0.1] and guide_calls == [0.5, 0.3]


def test_noise_levels_as_edm_sigma_known_values():
    assert Flow.sigma(0.2) == pytest.approx(0.25) and Flow.sigma(0.5) == 1.0 and Flow.sigma(1.0) == math.inf
    cfg = minidiffusion.load_config("mnist").diffusion
    ddpm, ab = make_objective(cfg), make_objective(cfg).schedule.alphas_cumprod
    for t in (0, 499, 999):
        assert ddpm.sigma(t) == pytest.approx(math.sqrt((1 - float(ab[t])) / float(ab[t])), rel=1e-12)
    assert ddpm.sigma(0) == pytest.approx(0.01, rel=1e-3)  # β_1 = 1e-4: σ = √(β_1/(1-β_1))
    assert make_objective(cfg.__class__(objective="edm")).sigma(2.5) == 2.5


def test_the_frontier_counts_the_network_calls_it_makes(run):
    """bench/frontier.py reports network evaluations per image as made: DDIM 3 guided everywhere is 6 calls, with
    an interval holding one of its three levels 4."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import frontier

    model = minidiffusion.load(run)
    for interval, expected in (([], 6.0), ([1.0, 10.0], 4.0)):
        images, nfe = frontier.counted_sample(model, 5, sampler="ddim", steps=3, guidance=2.0, guide_interval=interval)
        assert nfe == expected and images.shape == (5, 1, 8, 8)
        assert torch.equal(images, model.sample(5, sampler="ddim", steps=3, seed=frontier.SAMPLE_SEED, guidance=2.0,
                                                guide_interval=interval))
