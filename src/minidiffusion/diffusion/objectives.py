"""Three ways to train the same UNets: what noise levels training draws, what the network is asked to predict, and
the ODE the continuous samplers integrate.

- ``ddpm`` (Ho et al. 2020): the discrete variance-preserving process of ``process.py``, x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε
  at integer t, the network predicting ε (or v), optionally Min-SNR weighted.
- ``edm`` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"): x = x0 + σ n,
  the network F wrapped by the preconditioning of their Table 1, D(x; σ) = c_skip x + c_out F(c_in x, c_noise),
  trained with λ(σ) = 1/c_out² so that every σ has a unit-variance target.
- ``flow`` (Lipman et al. 2023, flow matching; Liu et al. 2023, rectified flow): the straight path
  x_t = (1 - t) x0 + t n for t in [0, 1], the network predicting the velocity dx_t/dt = n - x0.

Noise levels. Each objective has its own time (ddpm: integer t; edm: σ; flow: t in [0, 1]) and every
``diffusion.t_sampling`` density is defined once, on a quantity all three share, then mapped to that time:
``lognormal`` puts ln σ ~ N(p_mean, p_std²) on σ = √((1-ᾱ)/ᾱ), the noise-to-signal
ratio (EDM's choice); ``logit_normal`` puts logit(u) ~ N(logit_mean, logit_std²) on the flow time u = σ/(1 + σ)
(Esser et al. 2024); ``uniform`` is uniform over the objective's own time (for edm: over the position on the
ρ = 7 sampling grid). ``uniform_mix`` replaces that fraction of the draws by uniform ones, so that no level goes
unlearned.

The networks see a timestep-like number: ddpm its t, flow 1000 t, edm 250 ln σ (EDM's c_noise = ln(σ)/4 at the
1000x scale the sinusoidal embedding was built for: DDPM's t in 0..999).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .process import diffusion_loss, q_sample
from .schedule import make_schedule

OBJECTIVES = ("ddpm", "edm", "flow")
NATURAL_T_SAMPLING = {"ddpm": "uniform", "edm": "lognormal", "flow": "logit_normal"}


# -- noise-level densities, on σ (the noise-to-signal ratio) or u (the flow time) ---------------------------------

def lognormal_sigma(n: int, p_mean: float, p_std: float, g: torch.Generator, device) -> torch.Tensor:
    """σ with ln σ ~ N(p_mean, p_std²), float64 (n,)."""
    return (p_mean + p_std * torch.randn(n, generator=g, device=device, dtype=torch.float64)).exp()


def logit_normal_u(n: int, mean: float, std: float, g: torch.Generator, device) -> torch.Tensor:
    """u in (0, 1) with logit(u) ~ N(mean, std²), float64 (n,)."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=g, device=device, dtype=torch.float64))


def sigma_of_u(u: torch.Tensor) -> torch.Tensor:
    """The flow time u = σ/(1+σ) as σ = u/(1-u): x_u/(1-u) = x0 + σ n."""
    return u / (1 - u)


def u_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    return sigma / (1 + sigma)


def edm_sigmas(u: torch.Tensor, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. eq. 5 at positions u in [0, 1]: σ_max at u = 0, σ_min at u = 1, spaced by ρ."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + u * (lo - hi)) ** rho


@dataclass(frozen=True)
class Levels:
    """A diffusion.t_sampling density with its uniform mix-in, drawn as σ or u and mapped by the objective."""
    kind: str  # uniform | lognormal | logit_normal
    p_mean: float = -1.2
    p_std: float = 1.2
    logit_mean: float = 0.0
    logit_std: float = 1.0
    uniform_mix: float = 0.0

    def draw(self, n: int, g: torch.Generator, device, to_time, uniform_time) -> torch.Tensor:
        """``n`` levels in the objective's own time: ``to_time(sigma=..)`` / ``to_time(u=..)`` map a draw of the
        density, ``uniform_time(n)`` draws uniformly (both with ``g``). One fixed sequence of draws from ``g``."""
        if self.kind == "uniform":
            return uniform_time(n)
        if self.kind == "lognormal":
            levels = to_time(sigma=lognormal_sigma(n, self.p_mean, self.p_std, g, device))
        elif self.kind == "logit_normal":
            levels = to_time(u=logit_normal_u(n, self.logit_mean, self.logit_std, g, device))
        else:
            raise ValueError(f"unknown t_sampling {self.kind!r}")
        if self.uniform_mix > 0:
            mixed = torch.rand(n, generator=g, device=device) < self.uniform_mix
            levels = torch.where(mixed, uniform_time(n).to(levels.dtype), levels)
        return levels


def levels_of(cfg) -> Levels:
    kind = cfg.t_sampling if cfg.t_sampling != "auto" else NATURAL_T_SAMPLING[cfg.objective]
    return Levels(kind, cfg.p_mean, cfg.p_std, cfg.logit_mean, cfg.logit_std, cfg.uniform_mix)


# -- the three objectives ---------------------------------------------------------------------------------------

class DDPM:
    """The discrete VP process at integer t (``process.py``); levels are timesteps 0 .. T-1 (int64)."""
    name = "ddpm"

    def __init__(self, cfg):
        self.cfg, self.schedule, self.levels = cfg, make_schedule(cfg), levels_of(cfg)
        ab = self.schedule.alphas_cumprod
        self._sigmas = ((1 - ab) / ab).sqrt()  # increasing in t

    def draw(self, n: int, g: torch.Generator, device) -> torch.Tensor:
        T = self.schedule.num_timesteps

        def uniform(k: int) -> torch.Tensor:
            return torch.randint(0, T, (k,), generator=g, device=device)

        def to_time(sigma=None, u=None) -> torch.Tensor:
            sigma = sigma if sigma is not None else sigma_of_u(u)
            return self.timestep_of_sigma(sigma)

        return self.levels.draw(n, g, device, to_time, uniform)

    def timestep_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep whose σ_t = √((1-ᾱ_t)/ᾱ_t) is nearest to ``sigma`` in log space (int64, on sigma's device)."""
        log_s = self._sigmas.log().to(sigma.device)
        x = sigma.double().clamp(min=1e-30).log()
        hi = torch.searchsorted(log_s, x).clamp(1, len(log_s) - 1)
        lo = hi - 1
        return torch.where((x - log_s[lo]).abs() <= (log_s[hi] - x).abs(), lo, hi)

    def sigma(self, t: int) -> float:
        """The EDM σ of timestep t: x_t/√ᾱ_t = x0 + σ n."""
        return float(self._sigmas[int(t)])

    def loss(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return diffusion_loss(net, self.schedule, x0, t, noise, self.cfg.prediction, self.cfg.min_snr_gamma)

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return q_sample(self.schedule, x0, t, noise)

    def position(self, t: torch.Tensor) -> torch.Tensor:
        """Where a level lies between clean (0) and pure noise (1): t/T."""
        return t.double() / self.schedule.num_timesteps


class EDM:
    """Karras et al. (2022): preconditioned denoiser D(x; σ) over x = x0 + σ n; levels are σ (float32)."""
    name = "edm"

    def __init__(self, cfg):
        self.cfg, self.levels = cfg, levels_of(cfg)
        self.sigma_data, self.sigma_min, self.sigma_max = cfg.sigma_data, cfg.sigma_min, cfg.sigma_max

    def precondition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in, c_noise) of Table 1, computed in float64 from σ (any shape)."""
        s, sd = sigma.double(), self.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = 250 * s.log()  # ln(σ)/4, at the 1000x scale of the networks' timestep embedding
        return c_skip, c_out, c_in, c_noise

    def draw(self, n: int, g: torch.Generator, device) -> torch.Tensor:
        def uniform(k: int) -> torch.Tensor:
            return edm_sigmas(torch.rand(k, generator=g, device=device, dtype=torch.float64),
                              self.sigma_min, self.sigma_max)

        def to_time(sigma=None, u=None) -> torch.Tensor:
            return sigma if sigma is not None else sigma_of_u(u.clamp(max=1 - 1e-7))

        return self.levels.draw(n, g, device, to_time, uniform).float()

    def denoise(self, net, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; σ) = c_skip x + c_out F(c_in x, c_noise); σ (N,)."""
        c_skip, c_out, c_in, c_noise = (c.float().view(-1, 1, 1, 1) for c in self.precondition(sigma))
        return c_skip * x + c_out * net(c_in * x, c_noise.view(-1)).float()

    def loss(self, net: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """λ(σ) |D(x0 + σn; σ) - x0|² = |F - (x0 - c_skip x)/c_out|², λ = 1/c_out² (per example, (N,))."""
        c_skip, c_out, c_in, c_noise = (c.float().view(-1, 1, 1, 1) for c in self.precondition(sigma))
        x = x0 + sigma.float().view(-1, 1, 1, 1) * noise
        target = (x0 - c_skip * x) / c_out
        return (net(c_in * x, c_noise.view(-1)).float() - target).square().mean(dim=(1, 2, 3))

    def forward(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 + sigma.float().view(-1, 1, 1, 1) * noise

    @staticmethod
    def sigma(sigma: float) -> float:
        return float(sigma)

    def position(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 - the position on the ρ = 7 grid: 0 at σ_min, 1 at σ_max."""
        hi, lo = self.sigma_max ** (1 / 7), self.sigma_min ** (1 / 7)
        return ((sigma.double() ** (1 / 7) - lo) / (hi - lo)).clamp(0, 1)


class Flow:
    """Flow matching on the straight path x_t = (1-t) x0 + t n; levels are t in [0, 1] (float32)."""
    name = "flow"

    def __init__(self, cfg):
        self.cfg, self.levels = cfg, levels_of(cfg)

    def draw(self, n: int, g: torch.Generator, device) -> torch.Tensor:
        def uniform(k: int) -> torch.Tensor:
            return torch.rand(k, generator=g, device=device, dtype=torch.float64)

        def to_time(sigma=None, u=None) -> torch.Tensor:
            return u if u is not None else u_of_sigma(sigma)

        return self.levels.draw(n, g, device, to_time, uniform).float()

    @staticmethod
    def interpolate(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        t = t.float().view(-1, 1, 1, 1)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def velocity(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x, 1000 * t.float()).float()

    def loss(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x_t = self.interpolate(x0, t, noise)
        return (self.velocity(net, x_t, t) - self.velocity_target(x0, noise)).square().mean(dim=(1, 2, 3))

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.interpolate(x0, t, noise)

    @staticmethod
    def sigma(t: float) -> float:
        """The EDM σ of time t (x_t/(1-t) = x0 + σ n): t/(1-t), infinite at t = 1."""
        return math.inf if t >= 1 else sigma_of_u(t)

    def position(self, t: torch.Tensor) -> torch.Tensor:
        return t.double()


def make_objective(cfg) -> DDPM | EDM | Flow:
    """The objective a :class:`~minidiffusion.config.DiffusionConfig` names."""
    return {"ddpm": DDPM, "edm": EDM, "flow": Flow}[cfg.objective](cfg)


def level_label(objective: str, level: float) -> str:
    """How a figure names a noise level: t=999, σ=2.5, t=0.75."""
    if objective == "ddpm":
        return f"t={int(level)}"
    if objective == "edm":
        return f"σ={level:.3g}"
    return f"t={level:.2f}"
