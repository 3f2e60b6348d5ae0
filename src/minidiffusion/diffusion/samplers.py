"""Every sampler, for every objective: pure functions of one denoiser over one decreasing grid of noise levels,

    sampler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, progress=False, **options) -> x0

the shape of k-diffusion's ``sampling.py`` and EDM's ``generate.py``. ``denoiser`` is a :class:`Denoiser`: D(x, σ,
cond) -> the estimate of x0, for states x = α(σ) x0 + σ n with α(σ) = 1 - slope·σ (slope 0: the variance-exploding
x0 + σ n of edm, and of ddpm in k-diffusion's scaled variable x_t/√ᾱ_t; slope 1: flow's straight path (1-t) x0 + t n
with σ = t). On each of these paths the probability-flow ODE is dx/dσ = (x - D)/σ (Karras et al. 2022, eq. 3), so
Euler and Heun need nothing else; DDIM, DPM-Solver++ and the ancestral step use α too. ``x`` is the state at
``sigmas[0]`` (see ``Objective.prior``), ``sigmas`` decrease strictly to 0, and one network evaluation is made per
level (Heun: two per step, but one on the last). ``generator`` is None, one ``torch.Generator``, or one per image: with
per-image generators image k depends only on its own generator, whatever the batch it is drawn in. ``callback
(StepInfo)`` sees each evaluation at a grid level: the index, σ, the state and the x0 estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

Generator = torch.Generator | Sequence[torch.Generator] | None


class StepInfo(NamedTuple):
    index: int  # 0 = first (noisiest) step of this run
    t: float  # the noise level: σ from a sampler; the objective's own level (timestep, σ, t) after Objective.step_info
    x_t: torch.Tensor  # the state the network sees at this step, (N, C, H, W)
    x0: torch.Tensor  # the network's estimate of the clean image, (N, C, H, W)


Callback = Callable[[StepInfo], None] | None


class Denoiser:
    """D(x, σ, cond) -> x̂0 (N, C, H, W), over states x = α(σ) x0 + σ n with α(σ) = 1 - ``slope``·σ.

    ``fn(x, sigma, cond)`` takes σ as a Python float; a sampler calls the denoiser, never ``fn``.
    """

    def __init__(self, fn: Callable[[torch.Tensor, float, Any], torch.Tensor], slope: float = 0.0):
        self.fn, self.slope = fn, slope

    def __call__(self, x: torch.Tensor, sigma: float, cond: Any = None) -> torch.Tensor:
        return self.fn(x, sigma, cond).float()

    def alpha(self, sigma: float) -> float:
        """The scale of x0 in the state at σ."""
        return 1.0 - self.slope * sigma

    @property
    def sigma_max(self) -> float:
        """The noisiest level the path has (α = 0 there): ∞ for slope 0, 1 for flow."""
        return 1 / self.slope if self.slope > 0 else math.inf

    def edm_sigma(self, sigma: float) -> float:
        """The noise-to-signal ratio σ/α of the level (Karras et al.'s σ): the one unit guidance intervals use."""
        alpha = self.alpha(sigma)
        return sigma / alpha if alpha > 0 else math.inf


def guided(main: Denoiser, weak: Denoiser, weight: float, interval: Sequence[float] = ()) -> Denoiser:
    """D_weak + w (D - D_weak) (autoguidance, Karras et al. 2024; classifier-free guidance when ``weak`` is the same
    network without its condition, see ``unconditional``, Ho & Salimans 2022), only at levels whose σ/α lies in
    ``interval`` = [lo, hi] (Kynkäänniemi et al. 2024; () = everywhere). Elsewhere ``main`` alone, and ``weak`` is
    not called; at w = 0, ``weak`` alone, and ``main`` is not called."""
    lo, hi = interval if interval else (0.0, math.inf)

    def fn(x: torch.Tensor, sigma: float, cond: Any) -> torch.Tensor:
        if not lo <= main.edm_sigma(sigma) <= hi:
            return main(x, sigma, cond)
        d_weak = weak(x, sigma, cond)
        if weight == 0:
            return d_weak
        return d_weak + weight * (main(x, sigma, cond) - d_weak)

    return Denoiser(fn, main.slope)


def unconditional(denoiser: Denoiser, no_class: int) -> Denoiser:
    """A class-conditional denoiser with every class replaced by "no class" (index ``no_class``): the weak denoiser
    of classifier-free guidance, the same network trained with its labels dropped now and then."""
    return Denoiser(lambda x, sigma, cond: denoiser(x, sigma, torch.full_like(cond, no_class)), denoiser.slope)


def clipped(denoiser: Denoiser, lo: float = -1.0, hi: float = 1.0) -> Denoiser:
    """The x0 estimate clipped to the data range, as DDPM and DDIM implementations do; every sampler then uses the
    noise estimate consistent with the clipped x0."""
    return Denoiser(lambda x, sigma, cond: denoiser(x, sigma, cond).clamp(lo, hi), denoiser.slope)


# -- randomness ------------------------------------------------------------------------------------------------------

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


# -- the loop every sampler shares -----------------------------------------------------------------------------------

def _levels(sigmas: torch.Tensor, denoiser: Denoiser) -> list[float]:
    levels = [float(s) for s in sigmas]
    if len(levels) < 2 or levels[-1] != 0 or any(b >= a for a, b in zip(levels, levels[1:])) \
            or levels[0] > denoiser.sigma_max:
        raise ValueError(f"sigmas must decrease strictly to 0 from at most {denoiser.sigma_max}, got {levels[:4]}...")
    return levels


def _steps(levels: list[float], progress: bool, desc: str):
    """(i, σ_i, σ_{i+1}) for every step, with a progress bar if asked."""
    steps = [(i, levels[i], levels[i + 1]) for i in range(len(levels) - 1)]
    return tqdm(steps, desc=desc, leave=False, dynamic_ncols=True) if progress else steps


def _denoise(denoiser: Denoiser, x: torch.Tensor, i: int, sigma: float, cond: Any, callback: Callback):
    x0 = denoiser(x, sigma, cond)
    if callback is not None:
        callback(StepInfo(i, sigma, x, x0))
    return x0


def _ancestral(denoiser: Denoiser, sigma: float, sigma_next: float) -> tuple[float, float, float, float]:
    """q(x_next | x, x0) on the path: (coefficient of x0, coefficient of x, posterior variance, and the variance of
    the forward step x_next -> x of the variance-preserving process through the same σ/α, DDPM's σ_t² = β_t).

    The forward step is x = a x_next + b z with a = α/α_next, b² = σ² - a² σ_next² (Ho et al. 2020, eq. 6-7 for
    any α, σ); at the pure-noise end (α = 0) the posterior mean is α_next x0.
    """
    alpha, alpha_n = denoiser.alpha(sigma), denoiser.alpha(sigma_next)
    a = alpha / alpha_n
    b2 = max(sigma**2 - (a * sigma_next) ** 2, 0.0)
    posterior = sigma_next**2 * b2 / sigma**2
    vp_step = (alpha_n**2 + sigma_next**2) * b2 / (alpha**2 + sigma**2)  # β of the VP process, in this path's scale
    return b2 / sigma**2 * alpha_n, sigma_next**2 * a / sigma**2, posterior, vp_step


# -- the samplers ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def ddpm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None, generator: Generator = None,
         callback: Callback = None, progress: bool = False, variance: str = "large") -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), over a subsequence of levels that of the respaced process
    (Nichol & Dhariwal 2021, section 4): each step draws from the posterior q(x_next | x, x̂0).

    variance "large" is DDPM's σ_t² = β_t (the paper's CIFAR-10 choice), "small" the posterior variance β̃_t.
    """
    if variance not in ("large", "small"):
        raise ValueError(f"unknown variance {variance!r} (large, small)")
    levels = _levels(sigmas, denoiser)
    x = x.float()
    for i, sigma, sigma_next in _steps(levels, progress, "ddpm"):
        x0 = _denoise(denoiser, x, i, sigma, cond, callback)
        coef_x0, coef_x, posterior, vp_step = _ancestral(denoiser, sigma, sigma_next)
        x = coef_x0 * x0 + coef_x * x
        if sigma_next > 0:
            x = x + math.sqrt(vp_step if variance == "large" else posterior) * randn(x.shape, generator, x.device)
    return x


@torch.no_grad()
def ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None, generator: Generator = None,
         callback: Callback = None, progress: bool = False, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_next = α_next x̂0 + √(σ_next² - s²) ε̂ + s z with ε̂ = (x - α x̂0)/σ and
    s = η √(posterior variance); η = 0 is deterministic (then, on these paths, Euler's step)."""
    levels = _levels(sigmas, denoiser)
    x = x.float()
    for i, sigma, sigma_next in _steps(levels, progress, "ddim"):
        x0 = _denoise(denoiser, x, i, sigma, cond, callback)
        eps = (x - denoiser.alpha(sigma) * x0) / sigma
        s = eta * math.sqrt(_ancestral(denoiser, sigma, sigma_next)[2])
        x = denoiser.alpha(sigma_next) * x0 + math.sqrt(max(sigma_next**2 - s**2, 0.0)) * eps
        if s > 0:
            x = x + s * randn(x.shape, generator, x.device)
    return x


@torch.no_grad()
def dpmpp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None, generator: Generator = None,
          callback: Callback = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep on the data prediction.

    With λ = log(α/σ), h = λ_next - λ:  x_next = (σ_next/σ) x - α_next (e^{-h} - 1) D, D = x̂0 on the first step,
    else (1 + 1/2r) x̂0 - (1/2r) x̂0_prev with r = h_prev / h. The last step goes to σ = 0, i.e. returns D. From the
    pure-noise end (α = 0, λ = -∞) the first step is exact and the next one first order. Deterministic:
    ``generator`` is accepted for the common signature and unused.
    """
    levels = _levels(sigmas, denoiser)

    def lam(sigma: float) -> float:
        alpha = denoiser.alpha(sigma)
        return math.log(alpha / sigma) if alpha > 0 else -math.inf

    x = x.float()
    x0_prev, h_prev = None, None
    for i, sigma, sigma_next in _steps(levels, progress, "dpm++"):
        x0 = _denoise(denoiser, x, i, sigma, cond, callback)
        if sigma_next == 0:  # to σ = 0 (λ = ∞, so r -> 0): the update is x̂0 itself
            x = x0
            break
        h = lam(sigma_next) - lam(sigma)
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (sigma_next / sigma) * x - denoiser.alpha(sigma_next) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def _churn(denoiser, x, sigma, steps, churn, s_noise, s_tmin, s_tmax, generator) -> tuple[torch.Tensor, float]:
    """Algorithm 2's lines 4-6: raise the noise level by a factor 1 + γ and add the matching fresh noise, the exact
    forward step from σ to σ_hat: x_hat = (α_hat/α) x + √(σ_hat² - (α_hat σ/α)²) z."""
    if churn <= 0 or not s_tmin <= sigma <= (s_tmax or math.inf):
        return x, sigma
    gamma = min(churn / steps, math.sqrt(2) - 1)
    sigma_hat = min(sigma * (1 + gamma), denoiser.sigma_max)
    if sigma_hat <= sigma:
        return x, sigma
    a = denoiser.alpha(sigma_hat) / denoiser.alpha(sigma)
    z = s_noise * randn(x.shape, generator, x.device)
    return a * x + math.sqrt(max(sigma_hat**2 - (a * sigma) ** 2, 0.0)) * z, sigma_hat


def _integrate(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, second_order: bool, cond: Any,
               generator: Generator, callback: Callback, progress: bool, churn: float, s_noise: float, s_tmin: float,
               s_tmax: float, desc: str) -> torch.Tensor:
    levels = _levels(sigmas, denoiser)
    steps = len(levels) - 1
    x = x.float()
    for i, sigma, sigma_next in _steps(levels, progress, desc):
        x, sigma = _churn(denoiser, x, sigma, steps, churn, s_noise, s_tmin, s_tmax, generator)
        x0 = _denoise(denoiser, x, i, sigma, cond, callback)
        if sigma_next == 0:  # the last step lands on the data: the x0 estimate itself (Euler to σ = 0)
            x = x0
            break
        d = (x - x0) / sigma
        x_next = x + (sigma_next - sigma) * d
        if second_order:  # Heun: average the slopes at both ends (Algorithm 1, lines 7-8)
            d_next = (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next
            x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
        x = x_next
    return x


@torch.no_grad()
def euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None, generator: Generator = None,
          callback: Callback = None, progress: bool = False, churn: float = 0.0, s_noise: float = 1.0,
          s_tmin: float = 0.0, s_tmax: float = 0.0) -> torch.Tensor:
    """Euler steps on the probability-flow ODE dx/dσ = (x - D)/σ (for flow, the usual flow-matching sampler; equal
    to DDIM); one network evaluation per step. ``churn`` > 0 adds noise before each step in [s_tmin, s_tmax]
    (0 = no upper bound)."""
    return _integrate(denoiser, x, sigmas, False, cond, generator, callback, progress, churn, s_noise, s_tmin, s_tmax,
                      "euler")


@torch.no_grad()
def heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond: Any = None, generator: Generator = None,
         callback: Callback = None, progress: bool = False, churn: float = 0.0, s_noise: float = 1.0,
         s_tmin: float = 0.0, s_tmax: float = 0.0) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1; with ``churn`` > 0, their stochastic
    Algorithm 2 with S_churn, S_noise, S_tmin, S_tmax): 2 N - 1 network evaluations for N steps (the last step,
    to σ = 0, is Euler)."""
    return _integrate(denoiser, x, sigmas, True, cond, generator, callback, progress, churn, s_noise, s_tmin, s_tmax,
                      "heun")
