import pytest
import torch

from minidiffusion.diffusion import (
    SAMPLERS,
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

S = linear_schedule()


def oracle(x0):
    """An ε-model that knows the clean images: it returns the exact noise in x_t."""
    return lambda x_t, t: eps_from_x0(S, x_t, t, x0)


@pytest.fixture
def x0():
    return torch.rand(4, 1, 8, 8) * 2 - 1


@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ddim_with_oracle_recovers_x0(x0, steps):
    out = ddim(oracle(x0), torch.randn_like(x0), S, ddpm_grid(1000, steps), eta=0.0)
    assert (out - x0).abs().max() < 1e-5


def test_dpmpp_with_oracle_recovers_x0(x0):
    out = dpmpp(oracle(x0), torch.randn_like(x0), S, ddpm_grid(1000, 20))
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
    out = ddpm(oracle(x0), torch.randn_like(x0), S, ddpm_grid(1000, 100), callback=lambda s: seen.append(s.x_t.clone()))
    assert (out - x0).abs().max() < 1e-4  # last step has no noise and the oracle's mean is exact
    assert len(seen) == 100


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if "ddpm" in s.objectives])
def test_callback_fires_once_per_step_with_fields(x0, name):
    infos = []
    SAMPLERS[name].fn(oracle(x0), torch.randn_like(x0), S, ddpm_grid(1000, 12), callback=infos.append)
    assert [i.index for i in infos] == list(range(12))
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
        from minidiffusion.diffusion.samplers import randn
        x_T = randn((count, 1, 4, 4), gens, "cpu")
        return SAMPLERS[name].fn(model, x_T, S, ddpm_grid(1000, 20), generator=gens, **opts)

    whole = draw(0, 6)
    parts = torch.cat([draw(0, 2), draw(2, 3), draw(5, 1)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[0], whole[1])


def test_eta_zero_is_deterministic_eta_one_is_not(x0):
    model = lambda x_t, t: 0.5 * x_t
    x_T = torch.randn_like(x0)
    a = ddim(model, x_T, S, ddpm_grid(1000, 10), generator=torch.Generator().manual_seed(1))
    b = ddim(model, x_T, S, ddpm_grid(1000, 10), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = ddim(model, x_T, S, ddpm_grid(1000, 10), eta=1.0, generator=torch.Generator().manual_seed(1))
    d = ddim(model, x_T, S, ddpm_grid(1000, 10), eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, d)


def test_ddim_eta_one_full_steps_equals_ddpm_posterior_variance():
    """With all T steps, DDIM η=1 is ancestral sampling with the posterior ('small') variance."""
    model = lambda x_t, t: 0.3 * x_t
    x_T = torch.randn(2, 1, 4, 4)
    a = ddim(model, x_T, S, ddpm_grid(1000, 1000), eta=1.0, generator=torch.Generator().manual_seed(3))
    b = ddpm(model, x_T, S, ddpm_grid(1000, 1000), variance="small", generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if "ddpm" in s.objectives])
def test_one_step_sampling_returns_the_x0_estimate(x0, name):
    # One step from t = T-1 is the network's x0 estimate for every sampler (ddpm adds no noise at its last step);
    # float32 ε at sqrt(alpha_bar) = 0.0064 leaves ~1e-4 of error, a wrong formula would leave O(1).
    out = SAMPLERS[name].fn(oracle(x0), torch.randn_like(x0), S, ddpm_grid(1000, 1))
    assert (out - x0).abs().max() < 1e-3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' own numpy call
def test_ddpm_family_equals_diffusers_schedulers_step_for_step():
    """Each sampler over the timesteps diffusers' scheduler visits gives that scheduler's result: DDIM (η = 0), DDPM
    respaced to 50 steps with the posterior variance (the same noise draws from the same generator), and
    DPM-Solver++(2M)."""
    diffusers = pytest.importorskip("diffusers")

    def model(x_t, t):  # deterministic and t-dependent, so a wrong coefficient at any step shows
        return 0.2 * x_t + 1e-3 * t.float().view(-1, 1, 1, 1)

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def theirs(scheduler, steps, **step_kw):
        scheduler.set_timesteps(steps)
        x = x_T.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, torch.full((2,), int(t))), t, x, **step_kw).prev_sample
        return x, scheduler.timesteps

    common = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    want, ts = theirs(diffusers.DDIMScheduler(**common, clip_sample=False), 10)
    torch.testing.assert_close(ddim(model, x_T, S, ts), want, atol=1e-5, rtol=1e-5)
    want, ts = theirs(diffusers.DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small"), 50,
                      generator=torch.Generator().manual_seed(1))
    got = ddpm(model, x_T, S, ts, variance="small", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    want, ts = theirs(diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2), 20)
    torch.testing.assert_close(dpmpp(model, x_T, S, ts), want, atol=1e-5, rtol=1e-5)
