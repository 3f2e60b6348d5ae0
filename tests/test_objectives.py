"""The edm and flow objectives and their samplers: known values, exact denoisers of known data, convergence orders,
resume, and every sampler through the one registry."""

import math

import pytest
import torch

from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.config import DiffusionConfig, SampleConfig, load_config
from minidiffusion.diffusion import SAMPLERS, edm_grid, euler, flow_grid, guided, heun, make_objective, samplers_for
from minidiffusion.diffusion.objectives import DDPM, EDM, Flow, Levels, edm_sigmas, sigma_of_u, u_of_sigma
from minidiffusion.errors import UserError
from tests.helpers import full_and_resumed, make_folder, tiny_config

EDM_CFG = DiffusionConfig(objective="edm", min_snr_gamma=0.0)
FLOW_CFG = DiffusionConfig(objective="flow", min_snr_gamma=0.0)


# -- known values --------------------------------------------------------------------------------------------------

def test_edm_preconditioning_at_chosen_sigmas():
    edm = EDM(EDM_CFG)  # σ_data = 0.5
    c_skip, c_out, c_in, c_noise = (c.tolist() for c in edm.precondition(torch.tensor([0.5, 1.0, 2.0])))
    # σ = 0.5: c_skip = .25/.5, c_out = .25/√.5, c_in = 1/√.5; σ = 1: .25/1.25, .5/√1.25, 1/√1.25; σ = 2: .25/4.25 ...
    assert c_skip == pytest.approx([0.5, 0.2, 0.25 / 4.25], abs=1e-12)
    assert c_out == pytest.approx([0.3535533905932738, 0.4472135954999579, 1.0 / math.sqrt(4.25)], abs=1e-12)
    assert c_in == pytest.approx([1.4142135623730951, 0.8944271909999159, 0.48507125007266594], abs=1e-12)
    assert c_noise == pytest.approx([250 * math.log(0.5), 0.0, 250 * math.log(2.0)], abs=1e-9)
    # c_skip² σ_data² ... the unit-variance conditions of Karras et al. App. B.6: c_in² (σ² + σ_d²) = 1 and
    # c_skip + c_out² / σ_d² = 1 (for these choices)
    for s in (0.01, 0.3, 7.0):
        cs, co, ci, _ = (float(c) for c in edm.precondition(torch.tensor(s)))
        assert ci**2 * (s**2 + 0.25) == pytest.approx(1.0)
        assert cs + co**2 / 0.25 == pytest.approx(1.0)


def test_sigma_and_time_maps():
    assert float(u_of_sigma(torch.tensor(1.0))) == 0.5
    assert float(sigma_of_u(torch.tensor(0.75))) == pytest.approx(3.0)
    assert float(edm_sigmas(torch.tensor(0.0), 0.002, 80.0)) == pytest.approx(80.0)
    assert float(edm_sigmas(torch.tensor(1.0), 0.002, 80.0)) == pytest.approx(0.002)
    assert float(edm_sigmas(torch.tensor(0.5), 1.0, 3.0, rho=1.0)) == pytest.approx(2.0)  # ρ = 1: linear
    # ρ = 7 midpoint by hand: ((80^(1/7) + 0.002^(1/7)) / 2)^7
    assert float(edm_sigmas(torch.tensor(0.5, dtype=torch.float64), 0.002, 80.0)) == pytest.approx(
        ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7, rel=1e-12)
    grid = edm_grid(18, 0.002, 80.0, 7.0)
    assert len(grid) == 19 and grid[0] == pytest.approx(80.0) and grid[-2] == pytest.approx(0.002) and grid[-1] == 0
    assert flow_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert flow_grid(2, shift=3.0).tolist() == pytest.approx([1.0, 0.75, 0.0])  # 3·0.5/(1 + 2·0.5)


def test_ddpm_timestep_of_sigma():
    ddpm = DDPM(DiffusionConfig())
    ab = ddpm.schedule.alphas_cumprod
    sigmas = ((1 - ab) / ab).sqrt()
    # σ_0 = √(β_0/(1-β_0)) = √(1e-4/0.9999) by hand
    assert float(sigmas[0]) == pytest.approx(math.sqrt(1e-4 / 0.9999), rel=1e-12)
    ks = torch.tensor([0, 1, 17, 250, 500, 998, 999])
    assert ddpm.timestep_of_sigma(sigmas[ks]).tolist() == ks.tolist()
    assert ddpm.timestep_of_sigma(torch.tensor([1e-9, 1e9])).tolist() == [0, 999]  # clamped to the schedule's ends
    # between two timesteps: the nearer one in log σ
    mid = (sigmas[100].log() * 0.4 + sigmas[101].log() * 0.6).exp()
    assert ddpm.timestep_of_sigma(mid[None]).tolist() == [101]


def test_flow_interpolation_and_velocity_target():
    x0, noise = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 2, 2), -1.0)
    t = torch.tensor([0.25, 1.0])
    x_t = Flow.interpolate(x0, t, noise)
    assert x_t[0].flatten().tolist() == [0.75 * 0.5 - 0.25] * 4 and x_t[1].flatten().tolist() == [-1.0] * 4
    assert Flow.velocity_target(x0, noise).flatten().tolist() == [-1.5] * 8
    # the target is d x_t / dt along the path
    dt = 1e-3
    slope = (Flow.interpolate(x0, t + dt, noise) - x_t) / dt
    assert torch.allclose(slope, Flow.velocity_target(x0, noise), atol=1e-3)


@pytest.mark.parametrize("kind", ["uniform", "lognormal", "logit_normal"])
def test_noise_level_densities(kind):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    edm = EDM(DiffusionConfig(objective="edm", min_snr_gamma=0, t_sampling=kind, p_mean=-1.0, p_std=0.5))
    flow = Flow(DiffusionConfig(objective="flow", min_snr_gamma=0, t_sampling=kind, logit_mean=0.5, logit_std=0.8))
    ddpm = DDPM(DiffusionConfig(t_sampling=kind, p_mean=-1.0, p_std=0.5, logit_mean=0.5, logit_std=0.8))
    s, t, k = edm.draw(n, g, "cpu"), flow.draw(n, g, "cpu"), ddpm.draw(n, g, "cpu")
    assert k.dtype == torch.int64 and 0 <= int(k.min()) and int(k.max()) <= 999
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    if kind == "lognormal":
        assert float(s.log().mean()) == pytest.approx(-1.0, abs=0.01)
        assert float(s.log().std()) == pytest.approx(0.5, abs=0.01)
        sig = ddpm._sigmas[k]  # the nearest discrete σ: its median is e^-1
        assert float(sig.median()) == pytest.approx(math.exp(-1.0), rel=0.02)
    if kind == "logit_normal":
        logit = (t / (1 - t)).log()
        assert float(logit.mean()) == pytest.approx(0.5, abs=0.01)
        assert float(logit.std()) == pytest.approx(0.8, abs=0.01)
    if kind == "uniform":
        assert float(t.mean()) == pytest.approx(0.5, abs=0.01)
        assert float(k.double().mean()) == pytest.approx(499.5, abs=3)
        assert float(edm.position(s).mean()) == pytest.approx(0.5, abs=0.01)  # uniform over the ρ grid


def test_uniform_mix_replaces_that_fraction():
    levels = Levels("lognormal", p_mean=-30.0, p_std=1e-3, uniform_mix=0.25)  # σ ≈ e^-30: t = 0 unless mixed in
    ddpm = DDPM(DiffusionConfig())
    g = torch.Generator().manual_seed(1)
    t = levels.draw(100_000, g, "cpu", lambda sigma=None, u=None: ddpm.timestep_of_sigma(sigma),
                    lambda k: torch.randint(0, 1000, (k,), generator=g))
    mixed = (t > 0).double().mean()
    assert float(mixed) == pytest.approx(0.25 * 999 / 1000, abs=0.005)


def test_ddpm_uniform_draws_are_the_loops_old_draws():
    """Runs of the ddpm objective with uniform t draw exactly what they drew before objectives existed."""
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(DDPM(DiffusionConfig()).draw(64, g1, "cpu"), torch.randint(0, 1000, (64,), generator=g2))


# -- oracles: exact denoisers of known data ------------------------------------------------------------------------

MU, S = 0.3, 0.6  # per-pixel Gaussian data N(MU, S²)


def edm_oracle_net(edm: EDM, denoiser):
    """The network F whose preconditioned output D = c_skip x + c_out F(c_in x, c_noise) is ``denoiser(x, σ)``."""
    def net(y, c_noise):
        sigma = (c_noise.double() / 250).exp()
        c_skip, c_out, c_in, _ = (c.float().view(-1, 1, 1, 1) for c in edm.precondition(sigma))
        x = y / c_in
        return (denoiser(x, sigma.float().view(-1, 1, 1, 1)) - c_skip * x) / c_out
    return net


def gaussian_denoiser(x, sigma):
    return (S**2 * x + sigma**2 * MU) / (S**2 + sigma**2)


def two_point_denoiser(x, sigma):  # x0 = ±1 with equal odds: E[x0 | x0 + σn = x] = tanh(x/σ²)
    return torch.tanh(x / sigma**2)


def flow_oracle_net(expect_x0_and_noise):
    def net(x, t1000):
        t = (t1000 / 1000).view(-1, 1, 1, 1)
        x0, n = expect_x0_and_noise(x, t)
        return n - x0
    return net


def gaussian_flow(x, t):
    var = (1 - t) ** 2 * S**2 + t**2
    r = x - (1 - t) * MU
    return MU + (1 - t) * S**2 / var * r, t / var * r


def two_point_flow(x, t):
    t = t.clamp(min=1e-6)
    x0 = torch.tanh(x * (1 - t) / t**2)
    return x0, (x - (1 - t) * x0) / t


def draw(objective, net, sampler, sigmas, n=20_000, **options):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, 1, 1, 1, generator=g)
    x = objective.prior(noise, float(sigmas[0]))
    return sampler(objective.denoiser(net), x, sigmas, generator=g, **options).flatten()


@pytest.mark.parametrize("sampler,steps,options,tol", [
    (heun, 40, {}, 0.015), (euler, 200, {}, 0.015),
    (heun, 80, {"churn": 40.0, "s_tmin": 0.01, "s_tmax": 50.0}, 0.02)])
def test_edm_samplers_reproduce_gaussian_data(sampler, steps, options, tol):
    """Mean and standard deviation of 20,000 samples within ``tol`` of the data's (their own sampling error is
    ~0.004); churn's extra noise steps cost accuracy, so it gets more steps."""
    edm = EDM(EDM_CFG)
    x = draw(edm, edm_oracle_net(edm, gaussian_denoiser), sampler, edm_grid(steps, 0.002, 80.0, 7.0), **options)
    assert float(x.mean()) == pytest.approx(MU, abs=tol)
    assert float(x.std()) == pytest.approx(S, abs=tol)


@pytest.mark.parametrize("sampler,options", [(heun, {}), (euler, {}), (heun, {"churn": 10.0})])
def test_flow_samplers_reproduce_gaussian_data(sampler, options):
    x = draw(Flow(FLOW_CFG), flow_oracle_net(gaussian_flow), sampler, flow_grid(25 if sampler is heun else 50),
             **options)
    assert float(x.mean()) == pytest.approx(MU, abs=0.015)
    assert float(x.std()) == pytest.approx(S, abs=0.015 if sampler is heun else 0.03)


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_samplers_reproduce_a_two_point_dataset(objective):
    if objective == "edm":
        obj = EDM(EDM_CFG)
        net, sigmas = edm_oracle_net(obj, two_point_denoiser), edm_grid(32, 0.002, 80.0, 7.0)
    else:
        obj, net, sigmas = Flow(FLOW_CFG), flow_oracle_net(two_point_flow), flow_grid(64, shift=1.0)
    x = draw(obj, net, heun, sigmas, n=4000)
    assert float((x.abs() - 1).abs().max()) < 0.02  # every sample lands on a data point
    assert float((x > 0).double().mean()) == pytest.approx(0.5, abs=0.03)  # in equal shares


def test_heun_error_falls_4x_and_euler_2x_when_steps_double():
    """Gaussian data: the probability-flow ODE keeps (x - μ)/√(S² + σ²) fixed, so x(0) is known exactly."""
    edm = EDM(EDM_CFG)
    denoiser = edm.denoiser(edm_oracle_net(edm, gaussian_denoiser))
    x_T = torch.linspace(-2, 2, 9).view(-1, 1, 1, 1).double()
    sigma_max, sigma_min = 10.0, 1e-4
    exact = MU + S * (sigma_max * x_T - MU) / math.sqrt(S**2 + sigma_max**2)

    def error(sampler, steps):
        out = sampler(denoiser, sigma_max * x_T.float(), edm_grid(steps, sigma_min, sigma_max, 7.0))
        return float((out.double() - exact).abs().max())

    euler_ratio = error(euler, 64) / error(euler, 128)
    heun_ratio = error(heun, 32) / error(heun, 64)
    assert 1.7 < euler_ratio < 2.4, euler_ratio
    assert 3.3 < heun_ratio < 4.8, heun_ratio


def test_guidance_of_flow_is_guide_plus_w_times_the_difference():
    """v = 1 and v = 0 at t = 0.5, x = 0: x0 estimates -0.5 and 0, guided with w = 3: 0 + 3 (-0.5 - 0) = -1.5."""
    flow = Flow(FLOW_CFG)
    main = flow.denoiser(lambda x, t: torch.ones_like(x))
    weak = flow.denoiser(lambda x, t: torch.zeros_like(x))
    x0 = guided(main, weak, 3.0)(torch.zeros(2, 1, 2, 2), 0.5)
    assert torch.equal(x0, torch.full_like(x0, -1.5))


# -- the registry, the config, training and resume -----------------------------------------------------------------

def test_every_sampler_is_in_the_one_registry_and_config():
    assert set(SAMPLERS) == set(dict(SampleConfig.__dataclass_fields__)["sampler"].metadata["choices"])
    every = ["ddpm", "ddim", "dpmpp", "euler", "heun"]
    assert samplers_for("ddpm") == samplers_for("edm") == samplers_for("flow") == every
    assert SAMPLERS["heun"].evaluations(18) == 35 and SAMPLERS["euler"].evaluations(18) == 18


@pytest.mark.parametrize("overrides,message", [
    (["diffusion.min_snr_gamma=5"], "min_snr_gamma is a ddpm loss weight"),
    (["diffusion.objective=edm", "diffusion.prediction=v"], "prediction=v is for the ddpm objective"),
    (["diffusion.objective=edm", "diffusion.sigma_min=100"], "sigma_min=100 must be below sigma_max=80"),
])
def test_config_refuses_combinations_that_do_not_fit(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config("quick", overrides)  # flow, heun


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("objective,sampler", [("edm", "heun"), ("flow", "euler")])
def test_resume_is_exact_for_each_objective(folder, tmp_path, objective, sampler):
    cfg = tiny_config(folder, diffusion={"objective": objective}, sample={"sampler": sampler, "steps": 3})
    full, cut = full_and_resumed(cfg, tmp_path)
    a, b = load_checkpoint(full), load_checkpoint(cut)
    assert a.config.diffusion.objective == objective
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_training_lowers_the_loss_of_each_objective(folder, tmp_path, objective):
    """A real signal: a few hundred steps on one fixed batch lower the objective's loss well below its start."""
    torch.manual_seed(0)
    from minidiffusion.models.unet import build_model

    cfg = tiny_config(folder, diffusion={"objective": objective}, sample={"sampler": "heun"})
    obj = make_objective(cfg.diffusion)
    net = build_model(cfg.model, 1, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(16, 1, 8, 8) - 1
    x0[:, :, 2:5, 2:5] = 1
    levels, noise = obj.draw(16, g, "cpu"), torch.randn(16, 1, 8, 8, generator=g)
    first = float(obj.loss(net, x0, levels, noise).mean().detach())
    for _ in range(150):
        loss = obj.loss(net, x0, levels, noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first


def test_sampling_grid_follows_the_config():
    edm = make_objective(EDM_CFG)
    assert torch.equal(edm.sigmas(5, SampleConfig(sampler="heun", rho=3.0)), edm_grid(5, 0.002, 80.0, 3.0))
    assert torch.equal(make_objective(FLOW_CFG).sigmas(4, SampleConfig(shift=2.0)), flow_grid(4, 2.0))
    ddpm = make_objective(DiffusionConfig())
    sigmas = ddpm.sigmas(3, SampleConfig(spacing="uniform"))  # timesteps 999, 500, 0, then σ = 0
    assert sigmas.tolist() == [ddpm.sigma(999), ddpm.sigma(500), ddpm.sigma(0), 0.0]
    with pytest.raises(UserError, match="--steps 1001: must be between 1 and T=1000"):
        ddpm.sigmas(1001, SampleConfig())


def test_a_sampler_that_refuses_an_objective_says_why(monkeypatch):
    """No pair is refused today; when one is, the config and generate name the reason and what fits."""
    import dataclasses

    refusing = dataclasses.replace(SAMPLERS["dpmpp"], refuses={"edm": "a reason in one line"})
    monkeypatch.setitem(SAMPLERS, "dpmpp", refusing)
    assert "dpmpp" not in samplers_for("edm") and "dpmpp" in samplers_for("flow")
    with pytest.raises(UserError, match=r"sample.sampler=dpmpp does not sample diffusion.objective=edm: a reason in "
                                        r"one line \(choose ddpm, ddim, euler, heun, e.g. --set sample.sampler=heun\)"):
        load_config("quick", ["diffusion.objective=edm", "sample.sampler=dpmpp"])
    from minidiffusion.sampling import generate

    with pytest.raises(UserError, match="sampler 'dpmpp' does not sample the edm objective: a reason in one line"):
        generate(torch.nn.Identity(), make_objective(EDM_CFG), SampleConfig(sampler="dpmpp"), 1, seed=0,
                 shape=(1, 2, 2))
