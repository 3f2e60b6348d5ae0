"""Noise schedules: an immutable value holding β_t and everything derived from it, in float64.

Timesteps are 0-based: t = 0 .. T-1, with ᾱ_t = ∏_{s ≤ t} (1 - β_s). Indexing helpers return float32
tensors shaped for broadcasting against an image batch (N, 1, 1, 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from ..errors import UserError


@dataclass(frozen=True, eq=False)
class Schedule:
    betas: torch.Tensor  # (T,) float64

    def __post_init__(self):
        b = self.betas
        if b.dtype != torch.float64 or b.ndim != 1 or len(b) < 1:
            raise ValueError("betas must be a non-empty 1-D float64 tensor")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        b.requires_grad_(False)
        object.__setattr__(self, "_tables", {})  # (name, device) -> float32 table; see coefficient()

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t (T,)."""
        return torch.cumprod(self.alphas, 0)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """ᾱ_{t-1} with ᾱ_{-1} = 1 (T,)."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        """Var q(x_{t-1} | x_t, x0) = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)  (T,); 0 at t = 0."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    def respaced(self, timesteps: torch.Tensor) -> Schedule:
        """The schedule over a subsequence of timesteps (increasing), with the same ᾱ at those steps.

        β'_i = 1 - ᾱ_{t_i} / ᾱ_{t_{i-1}} (Nichol & Dhariwal 2021, section 4): ancestral sampling in fewer steps.
        """
        ab = self.alphas_cumprod[timesteps]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return Schedule(1.0 - ab / prev)

    def at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """values[t] as float32 on t's device, shaped (N, 1, 1, 1) to broadcast against images."""
        return values.to(t.device)[t].float().view(-1, 1, 1, 1)

    def coefficient(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """``at(COEFFICIENTS[name](self), t)``, the same numbers, from a table kept on t's device."""
        return self.cached(name, lambda: COEFFICIENTS[name](self), t)

    def cached(self, key: Hashable, compute: Callable[[], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """``at(compute(), t)``, the same numbers, from a table kept on t's device under ``key``.

        The (T,) float64 table ``compute()`` returns is computed once and cast once; ``at`` would copy a float64
        table from the host on every call, and on a GPU a blocking host-to-device copy makes the training step
        wait for the device.
        """
        table = self._tables.get((key, t.device))
        if table is None:
            table = self._tables[(key, t.device)] = compute().float().to(t.device)
        return table[t].view(-1, 1, 1, 1)


# The per-timestep coefficients the training loss indexes every step (float64 formulas; tables cached per device).
COEFFICIENTS = {
    "sqrt_alphas_cumprod": lambda s: s.alphas_cumprod.sqrt(),  # √ᾱ_t
    "sqrt_one_minus_alphas_cumprod": lambda s: (1 - s.alphas_cumprod).sqrt(),  # √(1-ᾱ_t)
}


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Ho et al. (2020): β linear from beta_start to beta_end (their T = 1000 values are the defaults)."""
    return Schedule(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64))


def cosine_schedule(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal (2021): ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), β clipped at max_beta."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1.0 - f[1:] / f[:-1]
    return Schedule(betas.clamp(max=max_beta))


def make_schedule(cfg) -> Schedule:
    """The schedule a :class:`~minidiffusion.config.DiffusionConfig` names."""
    if cfg.schedule == "cosine":
        return cosine_schedule(cfg.num_timesteps)
    if not 0 < cfg.beta_start <= cfg.beta_end < 1:
        raise UserError(f"diffusion: need 0 < beta_start <= beta_end < 1, got {cfg.beta_start} and {cfg.beta_end}")
    return linear_schedule(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
