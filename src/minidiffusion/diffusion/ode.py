"""Samplers for the continuous objectives (``edm``, ``flow``): Euler and Heun on the probability-flow ODE, with the
optional churn of Karras et al. (2022, Algorithm 2) that makes them stochastic.

Both objectives become one ODE in a time τ that falls from τ_0 to 0, x_{τ_0} ≈ τ_0 · noise:

- edm: τ = σ, x = x0 + σ n, dx/dσ = (x - D(x; σ))/σ (Karras et al. eq. 3 with s = 1), x0 estimate D;
- flow: τ = t, x = (1-t) x0 + t n, dx/dt = v(x, t), x0 estimate x - t v.

A sampler is a pure function ``sampler(ode, noise, taus, *, generator=None, callback=None, progress=False,
**options) -> x0`` over a decreasing grid ``taus`` whose last entry is 0; ``ode`` has ``derivative(x, τ) ->
(dx/dτ, x0)`` and ``renoise(x, τ, τ_hat, z)``, the exact step up in noise from τ to τ_hat ≥ τ with fresh noise z.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .objectives import EDM, Flow, edm_sigmas
from .samplers import Callback, Generator, StepInfo, randn

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EDMODE:
    """dx/dσ = (x - D(x; σ))/σ for a network wrapped by the EDM preconditioning."""
    name = "edm"

    def __init__(self, objective: EDM, net: Net):
        self.objective, self.net = objective, net

    def derivative(self, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.objective.denoise(self.net, x, torch.full((x.shape[0],), sigma, device=x.device))
        return (x - d) / sigma, d

    def renoise(self, x: torch.Tensor, sigma: float, sigma_hat: float, z: torch.Tensor) -> torch.Tensor:
        return x + math.sqrt(sigma_hat**2 - sigma**2) * z

    max_tau = math.inf


class FlowODE:
    """dx/dt = v(x, t) on the straight path x_t = (1-t) x0 + t n."""
    name = "flow"

    def __init__(self, objective: Flow, net: Net):
        self.objective, self.net = objective, net

    def derivative(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.objective.velocity(self.net, x, torch.full((x.shape[0],), t, device=x.device))
        return v, x - t * v

    def renoise(self, x: torch.Tensor, t: float, t_hat: float, z: torch.Tensor) -> torch.Tensor:
        """x_t -> x_{t_hat}: scale the x0 part by (1-t_hat)/(1-t), then add the noise variance still missing."""
        a = (1 - t_hat) / (1 - t)
        return a * x + math.sqrt(max(t_hat**2 - (a * t) ** 2, 0.0)) * z

    max_tau = 1.0


class GuidedODE:
    """Autoguidance on the ODE: every output (derivative and x0 estimate) is guide + w (main - guide), the same as
    guiding D, v or ε, which are all affine in the network output at a given x and τ. With ``active`` (τ -> bool),
    levels where it is False take the main network alone, at one network call instead of two."""

    def __init__(self, main, guide, weight: float, active: Callable[[float], bool] | None = None):
        self.main, self.guide, self.weight, self.active = main, guide, weight, active
        self.name, self.max_tau = main.name, main.max_tau

    def derivative(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.active is not None and not self.active(tau):
            return self.main.derivative(x, tau)
        (d, x0), (dg, x0g) = self.main.derivative(x, tau), self.guide.derivative(x, tau)
        w = self.weight
        return dg + w * (d - dg), x0g + w * (x0 - x0g)

    def renoise(self, x, tau, tau_hat, z):
        return self.main.renoise(x, tau, tau_hat, z)


def edm_grid(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """``steps`` σ from σ_max to σ_min spaced by ρ (Karras et al. eq. 5), then 0 (float64, steps + 1)."""
    u = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    return torch.cat([edm_sigmas(u, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


def flow_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps`` + 1 times from 1 to 0, uniform, or with ``shift`` s > 1 denser near t = 1 (t' = s t / (1 + (s-1) t),
    Esser et al. 2024), float64."""
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


def _churn(ode, x, tau, steps, churn, s_noise, s_tmin, s_tmax, generator) -> tuple[torch.Tensor, float]:
    """Algorithm 2's lines 4-6: raise the noise level by a factor 1 + γ and add the matching fresh noise."""
    if churn <= 0 or not s_tmin <= tau <= (s_tmax or math.inf):
        return x, tau
    gamma = min(churn / steps, math.sqrt(2) - 1)
    tau_hat = min(tau * (1 + gamma), ode.max_tau)
    if tau_hat <= tau:
        return x, tau
    return ode.renoise(x, tau, tau_hat, s_noise * randn(x.shape, generator, x.device)), tau_hat


def _integrate(ode, noise: torch.Tensor, taus: torch.Tensor, second_order: bool, generator: Generator,
               callback: Callback, progress: bool, churn: float, s_noise: float, s_tmin: float, s_tmax: float,
               desc: str) -> torch.Tensor:
    taus_list = [float(s) for s in taus]
    if len(taus_list) < 2 or taus_list[-1] != 0 or any(b >= a for a, b in zip(taus_list, taus_list[1:])):
        raise ValueError(f"taus must decrease strictly to 0, got {taus_list[:4]}...")
    steps = len(taus_list) - 1
    x = taus_list[0] * noise.float()
    loop = range(steps)
    for i in tqdm(loop, desc=desc, leave=False, dynamic_ncols=True) if progress else loop:
        tau, tau_next = taus_list[i], taus_list[i + 1]
        x, tau = _churn(ode, x, tau, steps, churn, s_noise, s_tmin, s_tmax, generator)
        d, x0 = ode.derivative(x, tau)
        if callback is not None:
            callback(StepInfo(i, tau, x, x0))
        if tau_next == 0:  # the last step lands on the data: the x0 estimate itself (Euler to τ = 0)
            x = x0
            break
        x_next = x + (tau_next - tau) * d
        if second_order:  # Heun: average the slopes at both ends (Algorithm 1, lines 7-8)
            d_next, _ = ode.derivative(x_next, tau_next)
            x_next = x + (tau_next - tau) * 0.5 * (d + d_next)
        x = x_next
    return x


@torch.no_grad()
def euler(ode, noise: torch.Tensor, taus: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
          progress: bool = False, churn: float = 0.0, s_noise: float = 1.0, s_tmin: float = 0.0,
          s_tmax: float = 0.0) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (for flow, the usual flow-matching sampler; equal to DDIM); one
    network evaluation per step. ``churn`` > 0 adds noise before each step in [s_tmin, s_tmax] (0 = no upper bound)."""
    return _integrate(ode, noise, taus, False, generator, callback, progress, churn, s_noise, s_tmin, s_tmax, "euler")


@torch.no_grad()
def heun(ode, noise: torch.Tensor, taus: torch.Tensor, *, generator: Generator = None, callback: Callback = None,
         progress: bool = False, churn: float = 0.0, s_noise: float = 1.0, s_tmin: float = 0.0,
         s_tmax: float = 0.0) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1; with ``churn`` > 0, their stochastic
    Algorithm 2 with S_churn, S_noise, S_tmin, S_tmax): 2 N - 1 network evaluations for N steps (the last step,
    to τ = 0, is Euler)."""
    return _integrate(ode, noise, taus, True, generator, callback, progress, churn, s_noise, s_tmin, s_tmax, "heun")
