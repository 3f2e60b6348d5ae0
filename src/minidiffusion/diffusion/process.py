"""The forward process q(x_t | x0), conversions between x0, ε and v, the posterior, and the training loss.

Every coefficient is computed in float64 and only then cast (1 - ᾱ_t is ~1e-4 near t = 0).
Notation (Ho et al. 2020): x_t = √ᾱ_t · x0 + √(1-ᾱ_t) · ε, t 0-based. v-prediction (Salimans & Ho 2022):
v = √ᾱ_t · ε - √(1-ᾱ_t) · x0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import Schedule


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) with the given ε.  x0, noise (N, C, H, W); t (N,) -> (N, C, H, W)."""
    ab = schedule.alphas_cumprod
    return schedule.at(ab.sqrt(), t) * x0 + schedule.at((1 - ab).sqrt(), t) * noise


def x0_from_eps(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return schedule.at(ab.rsqrt(), t) * x_t - schedule.at((1 / ab - 1).sqrt(), t) * eps


def eps_from_x0(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return schedule.at((1 - ab).rsqrt(), t) * x_t - schedule.at((ab / (1 - ab)).sqrt(), t) * x0


def v_target(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return schedule.at(ab.sqrt(), t) * eps - schedule.at((1 - ab).sqrt(), t) * x0


def eps_from_v(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ε = √(1-ᾱ) · x_t + √ᾱ · v."""
    ab = schedule.alphas_cumprod
    return schedule.at((1 - ab).sqrt(), t) * x_t + schedule.at(ab.sqrt(), t) * v


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7). Variance shaped (N, 1, 1, 1)."""
    ab, ab_prev, beta = schedule.alphas_cumprod, schedule.alphas_cumprod_prev, schedule.betas
    coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
    coef_xt = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    mean = schedule.at(coef_x0, t) * x0 + schedule.at(coef_xt, t) * x_t
    return mean, schedule.at(schedule.posterior_variance, t)


EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eps_model(net: torch.nn.Module, schedule: Schedule, prediction: str = "eps") -> EpsModel:
    """Wrap a network into the ε-model every sampler takes: ``model(x_t, t) -> ε̂``."""
    if prediction == "eps":
        return net
    if prediction == "v":
        return lambda x_t, t: eps_from_v(schedule, x_t, t, net(x_t, t).float())
    raise ValueError(f"unknown prediction {prediction!r}")


def diffusion_loss(net: torch.nn.Module, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   prediction: str = "eps") -> torch.Tensor:
    """Mean squared error of the network's ε (or v) prediction at q_sample(x0, t, noise), per example (N,)."""
    x_t = q_sample(schedule, x0, t, noise)
    target = noise if prediction == "eps" else v_target(schedule, x0, t, noise)
    return (net(x_t, t).float() - target).square().mean(dim=(1, 2, 3))
