"""The samplers on the ddpm objective's denoiser (its ε-network through σ = √((1-ᾱ)/ᾱ)): oracles, callbacks, seeds,
and equality with diffusers' schedulers step for step, for ddpm and for flow."""

import pytest
import torch

from minidiffusion.config import DiffusionConfig
from minidiffusion.diffusion import (
    DDPM,
    SAMPLERS,
    Flow,
    ddim,
    ddpm,
    ddpm_grid,
    dpmpp,
    eps_from_x0,
    image_generators,
    image_seeds,
    linear_schedule,
    timesteps,
)
from minidiffusion.diffusion.samplers import randn

S = linear_schedule()
OBJECTIVE = DDPM(DiffusionConfig())  # the same linear schedule, T = 1000


def oracle(x0):
    """An ε-model that knows the clean images: it returns the exact noise in x_t."""
    return lambda x_t, t: eps_from_x0(S, x_t, t, x0)


def run(sampler, model, x_T, ts, **options):
    """``sampler`` on the ε-model ``model`` from x_T over the decreasing timesteps ``ts`` (then to σ = 0)."""
    sigmas = OBJECTIVE.sigmas_at(torch.as_tensor(ts))
    return sampler(OBJECTIVE.denoiser(model), OBJECTIVE.prior(x_T, float(sigmas[0])), sigmas, **options)


@pytest.fixture
def x0():
    return torch.rand(4, 1, 8, 8) * 2 - 1


@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ddim_with_oracle_recovers_x0(x0, steps):
    out = run(ddim, oracle(x0), torch.randn_like(x0), ddpm_grid(1000, steps), eta=0.0)
    assert (out - x0).abs().max() < 1e-5


def test_dpmpp_with_oracle_recovers_x0(x0):
    out = run(dpmpp, oracle(x0), torch.randn_like(x0), ddpm_grid(1000, 20))
    assert (out - x0).abs().max() < 1e-5


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_timesteps(spacing):
    for k in (1, 2, 7, 50, 999, 1000):
        ts = timesteps(1000, k, spacing)
        assert len(ts) == k and ts[-1] == 999 and bool((ts[1:] > ts[:-1]).all()) and ts[0] >= 0
    assert timesteps(1000, 1000).tolist() == list(range(1000))
    with pytest.raises(ValueError):
        timesteps(1000, 1001)


def test_ddpm_oracle_ends_at_x0_and_adds_noise_on_the_way(x0):
    seen = []
    out = run(ddpm, oracle(x0), torch.randn_like(x0), ddpm_grid(1000, 100), callback=lambda s: seen.append(s.x_t))
    assert (out - x0).abs().max() < 1e-4  # last step has no noise and the oracle's mean is exact
    assert len(seen) == 100


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_fires_once_per_level_with_fields(x0, name):
    infos = []
    run(SAMPLERS[name].fn, oracle(x0), torch.randn_like(x0), ddpm_grid(1000, 12), callback=infos.append)
    infos = [OBJECTIVE.step_info(i) for i in infos]  # as generate shows them: timesteps, x_t
    assert [i.index for i in infos if i.index >= 0] == sorted(i.index for i in infos)
    assert [i.t for i in infos] == list(reversed(timesteps(1000, 12).tolist()))
    assert all(i.x_t.shape == x0.shape and i.x0.shape == x0.shape for i in infos)
    assert torch.allclose(infos[-1].x0, x0, atol=1e-4)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_per_image_seeds_batch_size_invariant(name):
    model = lambda x_t, t: 0.1 * x_t  # any deterministic ε-model
    opts = {"eta": 1.0} if name == "ddim" else {}
    seeds = image_seeds(7, 0, 6)

    def draw(start, count):
        gens = image_generators(seeds[start:start + count])
        x_T = randn((count, 1, 4, 4), gens, "cpu")
        return run(SAMPLERS[name].fn, model, x_T, ddpm_grid(1000, 20), generator=gens, **opts)

    whole = draw(0, 6)
    parts = torch.cat([draw(0, 2), draw(2, 3), draw(5, 1)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[0], whole[1])


def test_eta_zero_is_deterministic_eta_one_is_not(x0):
    model = lambda x_t, t: 0.5 * x_t
    x_T = torch.randn_like(x0)
    a = run(ddim, model, x_T, ddpm_grid(1000, 10), generator=torch.Generator().manual_seed(1))
    b = run(ddim, model, x_T, ddpm_grid(1000, 10), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = run(ddim, model, x_T, ddpm_grid(1000, 10), eta=1.0, generator=torch.Generator().manual_seed(1))
    d = run(ddim, model, x_T, ddpm_grid(1000, 10), eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


def test_ddim_eta_one_full_steps_equals_ddpm_posterior_variance():
    """With all T steps, DDIM η=1 is ancestral sampling with the posterior ('small') variance."""
    model = lambda x_t, t: 0.3 * x_t
    x_T = torch.randn(2, 1, 4, 4)
    a = run(ddim, model, x_T, ddpm_grid(1000, 1000), eta=1.0, generator=torch.Generator().manual_seed(3))
    b = run(ddpm, model, x_T, ddpm_grid(1000, 1000), variance="small", generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_one_step_sampling_returns_the_x0_estimate(x0, name):
    # One step from t = T-1 is the network's x0 estimate for every sampler (ddpm adds no noise at its last step);
    # float32 ε at sqrt(alpha_bar) = 0.0064 leaves ~1e-4 of error, a wrong formula would leave O(1).
    out = run(SAMPLERS[name].fn, oracle(x0), torch.randn_like(x0), ddpm_grid(1000, 1))
    assert (out - x0).abs().max() < 1e-3


def _theirs(scheduler, model, x_T, steps, network_time=None, **step_kw):
    """diffusers' loop: the state before each step and the result, with the timesteps it visited. The model sees
    the scheduler's timestep, or ``network_time(i)`` at step i."""
    scheduler.set_timesteps(steps)
    x, states = x_T.clone(), []
    for i, t in enumerate(scheduler.timesteps):
        states.append(x)
        level = t if network_time is None else network_time(i)
        x = scheduler.step(model(x, torch.full((len(x),), level)), t, x, **step_kw).prev_sample
    return torch.stack(states), x, scheduler


def _ours(objective, sampler, model, x_T, sigmas, **options):
    """Our sampler over the same σ from the same x_T (as the objective's state): the states it denoised (as the
    objective's x_t) and the result."""
    states = []
    x = x_T / objective.view(torch.ones(()), float(sigmas[0]))  # x_t -> the sampler's state (ddpm: x_t/√ᾱ_t)
    out = sampler(objective.denoiser(model), x, sigmas,
                  callback=lambda info: states.append(objective.step_info(info).x_t), **options)
    return torch.stack(states), out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' own numpy call
def test_ddpm_family_equals_diffusers_schedulers_step_for_step():
    """Each sampler over the timesteps diffusers' scheduler visits gives that scheduler's state at every step and its
    result: DDIM (η = 0), DDPM respaced to 50 steps with the posterior variance (the same noise draws from the same
    generator), and DPM-Solver++(2M)."""
    diffusers = pytest.importorskip("diffusers")

    def model(x_t, t):  # deterministic and t-dependent, so a wrong coefficient at any step shows
        return 0.2 * x_t + 1e-3 * t.float().view(-1, 1, 1, 1)

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    common = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    cases = [(ddim, {}, diffusers.DDIMScheduler(**common, clip_sample=False), 10, {}),
             (ddpm, {"variance": "small", "generator": torch.Generator().manual_seed(1)},
              diffusers.DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small"), 50,
              {"generator": torch.Generator().manual_seed(1)}),
             (dpmpp, {}, diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++",
                                                                solver_order=2), 20, {})]
    for sampler, options, scheduler, steps, step_kw in cases:
        want_states, want, scheduler = _theirs(scheduler, model, x_T, steps, **step_kw)
        states, got = _ours(OBJECTIVE, sampler, model, x_T, OBJECTIVE.sigmas_at(scheduler.timesteps), **options)
        torch.testing.assert_close(states, want_states, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flow_dpmpp_equals_diffusers_flow_prediction_step_for_step():
    """DPM-Solver++(2M) on the flow objective's denoiser (σ = t, α = 1 - t, so λ = log((1-t)/t)) is diffusers'
    DPMSolverMultistepScheduler with prediction_type="flow_prediction", use_flow_sigmas=True on the same grid,
    unshifted and shifted, below and above its 15-step switch to a first-order last-but-one step."""
    diffusers = pytest.importorskip("diffusers")
    flow = Flow(DiffusionConfig(objective="flow", min_snr_gamma=0.0))

    def model(x, t1000):  # a velocity, t-dependent: the network sees 1000 t
        return 0.3 * x - 0.5 + 1e-3 * t1000.float().view(-1, 1, 1, 1)

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for steps, shift in ((20, 1.0), (20, 3.0), (8, 1.0)):
        scheduler = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
            algorithm_type="dpmsolver++", solver_order=2, lower_order_final=steps >= 15)
        # its timesteps are int(1000 t); the network sees 1000 t exactly, as ours does
        want_states, want, scheduler = _theirs(scheduler, model, x_T, steps,
                                               network_time=lambda i, s=scheduler: 1000 * s.sigmas[i])
        states, got = _ours(flow, dpmpp, model, x_T, scheduler.sigmas.double())
        torch.testing.assert_close(states, want_states, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
