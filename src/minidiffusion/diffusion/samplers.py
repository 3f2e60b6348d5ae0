"""Samplers of the ddpm objective: pure functions with the one signature every sampler has (see ``ode.py`` for the
continuous ones),

    sampler(model, x_T, schedule, ts, *, generator=None, callback=None, progress=False, **options) -> x0

``model(x_t, t) -> ε̂`` is an ε-model (see ``process.eps_model``), ``x_T`` the initial noise (N, C, H, W), ``ts`` the
0-based timesteps to visit, decreasing (``ddpm_grid``: all T, or a respaced subsequence). The x0 estimate and the
posterior are ``process.py``'s (``x0_from_eps``, ``q_posterior``), the functions training and the tests use.
``generator`` is None, one ``torch.Generator``, or one generator per image: with per-image generators image k
depends only on its own generator, whatever the batch it is drawn in. ``callback(StepInfo)`` is called once per
network evaluation with the state being denoised and the network's x0 estimate; samplers hold no state between calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .process import EpsModel, eps_from_x0, q_posterior, x0_from_eps
from .schedule import Schedule

Generator = torch.Generator | Sequence[torch.Generator] | None


class StepInfo(NamedTuple):
    index: int  # 0 = first (noisiest) step of this run
    t: int  # the timestep of x_t, 0-based
    x_t: torch.Tensor  # the state the network sees at this step, (N, C, H, W)
    x0: torch.Tensor  # the network's estimate of the clean image, (N, C, H, W)


Callback = Callable[[StepInfo], None] | None


def image_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per image, seeded with that image's own seed."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def image_seeds(seed: int, start: int, count: int) -> list[int]:
    """Seeds of images start .. start+count-1 of a run with this seed: the same whatever the batching."""
    return [(seed * 1_000_003 + k) % 2**63 for k in range(start, start + count)]


def randn(shape: Sequence[int], generator: Generator, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise; with a list of generators, row k comes from generator k."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device, dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generator]
    return torch.stack(rows).to(device, dtype)


def timesteps(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> torch.Tensor:
    """``num_steps`` distinct timesteps in increasing order, the last one T-1.

    uniform: rounded linspace(0, T-1); quadratic: denser near t = 0 (Song et al. 2021, DDIM's CIFAR-10 choice).
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_timesteps}, got {num_steps}")
    if num_steps == 1:
        return torch.tensor([num_timesteps - 1])
    if spacing == "uniform":
        ts = torch.linspace(0, num_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    elif spacing == "quadratic":
        ts = (torch.linspace(0, math.sqrt(num_timesteps - 1), num_steps, dtype=torch.float64) ** 2).round().long()
        for i in range(1, num_steps):  # rounding can repeat the first few; keep them distinct
            ts[i] = max(ts[i], ts[i - 1] + 1)
        ts = ts - (ts[-1] - (num_timesteps - 1)).clamp(min=0)
    else:
        raise ValueError(f"unknown spacing {spacing!r} (uniform, quadratic)")
    return ts


def ddpm_grid(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> torch.Tensor:
    """The decreasing timesteps a ddpm-family sampler visits: ``timesteps(...)`` from T-1 down."""
    return timesteps(num_timesteps, num_steps, spacing).flip(0)


def _check(ts: torch.Tensor, schedule: Schedule) -> list[int]:
    steps = [int(t) for t in ts]
    if not steps or any(b >= a for a, b in zip(steps, steps[1:])) or steps[-1] < 0 \
            or steps[0] >= schedule.num_timesteps:
        raise ValueError(f"ts must be distinct timesteps in 0..{schedule.num_timesteps - 1}, decreasing; "
                         f"got {steps[:4]}...")
    return steps


def _steps(steps: list[int], progress: bool, desc: str):
    pairs = list(enumerate(steps))
    return tqdm(pairs, desc=desc, leave=False, dynamic_ncols=True) if progress else pairs


def _full(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _predict(model: EpsModel, x: torch.Tensor, t: torch.Tensor, schedule: Schedule,
             clip_x0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ε̂ and x̂0 at timesteps t; with clip_x0, x̂0 is clipped to [-1, 1] and ε̂ made consistent with it."""
    eps = model(x, t).float()
    x0 = x0_from_eps(schedule, x, t, eps)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = eps_from_x0(schedule, x, t, x0)
    return eps, x0


@torch.no_grad()
def ddpm(model: EpsModel, x_T: torch.Tensor, schedule: Schedule, ts: torch.Tensor, *, variance: str = "large",
         clip_x0: bool = False, generator: Generator = None, callback: Callback = None,
         progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2); over a subsequence of the T steps, ancestral sampling of the
    respaced schedule (Nichol & Dhariwal 2021, section 4), whose posterior q(x_prev | x_t, x0) each step draws from.

    variance "large" is σ² = β (the paper's CIFAR-10 choice); "small" is the posterior variance β̃.
    """
    steps = _check(ts, schedule)
    sub = schedule.respaced(torch.tensor(steps[::-1]))  # index k of sub is the k-th smallest timestep
    x = x_T.float()
    for i, t in _steps(steps, progress, "ddpm"):
        k = _full(x, len(steps) - 1 - i)
        eps, x0 = _predict(model, x, _full(x, t), schedule, clip_x0)
        if callback is not None:
            callback(StepInfo(i, t, x, x0))
        mean, posterior_var = q_posterior(sub, x0, x, k)
        if i == len(steps) - 1:
            x = mean
        else:
            var = sub.at(sub.betas, k) if variance == "large" else posterior_var
            x = mean + var.sqrt() * randn(x.shape, generator, x.device)
    return x


@torch.no_grad()
def ddim(model: EpsModel, x_T: torch.Tensor, schedule: Schedule, ts: torch.Tensor, *, eta: float = 0.0,
         clip_x0: bool = False, generator: Generator = None, callback: Callback = None,
         progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_prev = √ᾱ_prev x̂0 + √(1-ᾱ_prev-σ²) ε̂ + σ z; η = 0 is deterministic."""
    steps = _check(ts, schedule)
    ab_all = schedule.alphas_cumprod.tolist()
    x = x_T.float()
    for i, t in _steps(steps, progress, "ddim"):
        ab, ab_prev = ab_all[t], ab_all[steps[i + 1]] if i + 1 < len(steps) else 1.0
        eps, x0 = _predict(model, x, _full(x, t), schedule, clip_x0)
        if callback is not None:
            callback(StepInfo(i, t, x, x0))
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, generator, x.device)
    return x


@torch.no_grad()
def dpmpp(model: EpsModel, x_T: torch.Tensor, schedule: Schedule, ts: torch.Tensor, *, clip_x0: bool = False,
          generator: Generator = None, callback: Callback = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep on the data prediction.

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ), h = λ_next - λ:  x_next = (σ_next/σ) x - α_next (e^{-h} - 1) D,
    D = x̂0 on the first step, else (1 + 1/2r) x̂0 - (1/2r) x̂0_prev with r = h_prev / h. The last step goes to
    σ = 0, i.e. returns D. Deterministic: ``generator`` is accepted for the common signature and unused.
    """
    steps = _check(ts, schedule)
    ab_all = schedule.alphas_cumprod.tolist()
    x = x_T.float()
    x0_prev, h_prev = None, None
    for i, t in _steps(steps, progress, "dpm++"):
        eps, x0 = _predict(model, x, _full(x, t), schedule, clip_x0)
        if callback is not None:
            callback(StepInfo(i, t, x, x0))
        if i == len(steps) - 1:  # to σ = 0 (λ = ∞, so r -> 0): the update is x̂0 itself
            x = x0
            break
        ab, ab_next = ab_all[t], ab_all[steps[i + 1]]
        alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
        alpha_n, sigma_n = math.sqrt(ab_next), math.sqrt(1 - ab_next)
        h = math.log(alpha_n / sigma_n) - math.log(alpha / sigma)
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma_n / sigma) * x - alpha_n * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x
