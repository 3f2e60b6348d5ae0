import dataclasses
import math

import pytest
import torch

from minidiffusion.diffusion import cosine_schedule, linear_schedule, q_posterior, q_sample, x0_from_eps
from minidiffusion.diffusion.process import eps_from_v, eps_from_x0, v_target
from minidiffusion.diffusion.schedule import Schedule


def test_linear_known_values():
    s = linear_schedule()
    assert s.num_timesteps == 1000 and s.betas.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[999].item() == pytest.approx(4.0358e-5, rel=1e-3)
    # diffusers' DDPMScheduler posterior variance at t = 487 ("fixed_small")
    assert s.posterior_variance[487].item() == pytest.approx(0.00979, rel=1e-3)
    assert s.posterior_variance[0].item() == 0.0


@pytest.mark.parametrize("make", [linear_schedule, cosine_schedule])
def test_schedule_invariants(make):
    s = make(1000)
    ab = s.alphas_cumprod
    assert bool((s.betas > 0).all()) and bool((s.betas < 1).all())
    assert bool((ab[1:] < ab[:-1]).all()), "ᾱ strictly decreases"
    assert ab[0].item() < 1 and ab[-1].item() < 1e-3
    assert torch.allclose(s.alphas_cumprod_prev[1:], ab[:-1])
    assert bool((s.posterior_variance <= s.betas + 1e-12).all()), "β̃_t <= β_t"


def test_cosine_matches_formula():
    s = cosine_schedule(1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 10, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_schedule_is_immutable_value():
    s = linear_schedule(10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.betas = torch.zeros(10)
    with pytest.raises(ValueError):
        Schedule(torch.linspace(0, 0.5, 10, dtype=torch.float64))  # β = 0 is not a noise step
    with pytest.raises(ValueError):
        Schedule(torch.linspace(0.1, 0.5, 10))  # float32


def test_forward_process_and_conversions_round_trip():
    s = linear_schedule()
    x0, eps = torch.rand(8, 3, 4, 4) * 2 - 1, torch.randn(8, 3, 4, 4)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 900, 999])
    x_t = q_sample(s, x0, t, eps)
    ab = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(x_t.double(), ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double(), atol=1e-6)
    assert torch.allclose(x0_from_eps(s, x_t, t, eps), x0, atol=2e-3)
    assert torch.allclose(eps_from_x0(s, x_t, t, x0), eps, atol=1e-4 / 0.01)
    assert torch.allclose(eps_from_v(s, x_t, t, v_target(s, x0, t, eps)), eps, atol=1e-5)


def test_posterior_matches_ho_et_al():
    s = linear_schedule()
    x0, x_t = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    t = torch.tensor([5, 600])
    mean, var = q_posterior(s, x0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        ab, abp, b = s.alphas_cumprod[ti].item(), s.alphas_cumprod[ti - 1].item(), s.betas[ti].item()
        expected = math.sqrt(abp) * b / (1 - ab) * x0[i] + math.sqrt(1 - b) * (1 - abp) / (1 - ab) * x_t[i]
        assert torch.allclose(mean[i], expected, atol=1e-5)
        assert var[i].item() == pytest.approx(b * (1 - abp) / (1 - ab), rel=1e-6)


def test_respaced_keeps_alpha_bar():
    s = linear_schedule()
    ts = torch.tensor([0, 99, 499, 999])
    r = s.respaced(ts)
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[ts])


def test_matches_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    s = linear_schedule()
    assert torch.allclose(s.alphas_cumprod.float(), sched.alphas_cumprod.float(), rtol=1e-5)
    theirs = torch.stack([sched._get_variance(t) for t in range(1, 1000)])
    # diffusers computes in float32 (up to 4e-4 relative off near t = 1); ours is float64
    assert torch.allclose(s.posterior_variance[1:].float(), theirs.float(), rtol=1e-3)
    cos = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    assert torch.allclose(cosine_schedule().alphas_cumprod.float(), cos.alphas_cumprod.float(), rtol=1e-4)


def test_min_snr_weighting_known_values():
    from minidiffusion.diffusion import diffusion_loss

    s = linear_schedule()
    net = lambda x_t, t: torch.zeros_like(x_t)  # loss = mean(ε²) for ε-prediction
    x0, eps = torch.zeros(4, 1, 4, 4), torch.ones(4, 1, 4, 4)
    t = torch.tensor([0, 100, 150, 999])  # SNR 1e4, 8.54, 3.67, 4e-5: γ = 5 falls between t = 100 and 150
    plain = diffusion_loss(net, s, x0, t, eps)
    weighted = diffusion_loss(net, s, x0, t, eps, min_snr_gamma=5.0)
    snr = (s.alphas_cumprod / (1 - s.alphas_cumprod))[t]
    assert snr[1] == pytest.approx(8.5367, rel=1e-4) and snr[2] == pytest.approx(3.6704, rel=1e-4)
    assert torch.allclose(plain, torch.ones(4))
    assert weighted[0].item() == pytest.approx(5.0 / snr[0].item(), rel=1e-5)  # nearly clean: down-weighted
    assert weighted[1].item() == pytest.approx(5.0 / 8.53667, rel=1e-5)  # just above γ: 0.586
    assert weighted[2].item() == pytest.approx(1.0) and weighted[3].item() == pytest.approx(1.0)  # SNR < γ
