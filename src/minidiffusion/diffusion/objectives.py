"""Three ways to train the same UNets, each an :class:`Objective`: what noise levels training draws, what the network
is asked to predict, the denoiser D(x, σ, cond) it makes of the network for every sampler, its sampling grid, and
how its levels are named in figures.

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

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from .process import call_network as _call
from .process import diffusion_loss, q_sample
from .samplers import Denoiser, StepInfo
from .schedule import Schedule, make_schedule

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


def levels_of(cfg, natural: str) -> Levels:
    """The config's training-level density; ``t_sampling = "auto"`` is the objective's ``natural`` one."""
    kind = cfg.t_sampling if cfg.t_sampling != "auto" else natural
    return Levels(kind, cfg.p_mean, cfg.p_std, cfg.logit_mean, cfg.logit_std, cfg.uniform_mix)


# -- sampling grids: decreasing σ of each objective's sampling path, ending at 0 ------------------------------------

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
    """The decreasing timesteps a ddpm-objective sampler visits: ``timesteps(...)`` from T-1 down."""
    return timesteps(num_timesteps, num_steps, spacing).flip(0)


def edm_grid(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """``steps`` σ from σ_max to σ_min spaced by ρ (Karras et al. eq. 5), then 0 (float64, steps + 1)."""
    u = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    return torch.cat([edm_sigmas(u, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


def flow_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps`` + 1 times from 1 to 0, uniform, or with ``shift`` s > 1 denser near t = 1 (t' = s t / (1 + (s-1) t),
    Esser et al. 2024), float64."""
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


# -- naming and parsing levels, for figures ------------------------------------------------------------------------

def parse_timesteps(text: str, num_timesteps: int) -> list[int]:
    """``"0,499,749,999"`` -> ``[0, 499, 749, 999]``; each a distinct integer in 0 .. T-1 (t is 0-based)."""
    return _parse_list(text, int, lambda t: 0 <= t < num_timesteps, "timestep", "an integer",
                       f"valid timesteps: 0..{num_timesteps - 1}, comma-separated")


def parse_noise_levels(text: str, highest: float, valid: str) -> list[float]:
    """``"1,0.5,0"`` -> ``[1.0, 0.5, 0.0]``; distinct numbers in [0, highest] (``valid`` says so in errors)."""
    return _parse_list(text, float, lambda v: 0 <= v <= highest and not math.isinf(v), "noise level", "a number",
                       valid)


def _parse_list(text: str, convert, fits, noun: str, kind: str, valid: str) -> list:
    """Comma-separated values, each ``convert``ed, fitting and new; else a UserError naming the first that is not."""
    values: list = []
    for item in (item.strip() for item in str(text).split(",")):
        try:
            value = convert(item)
        except ValueError:
            raise UserError(f"{noun} {item!r} is not {kind} ({valid})") from None
        if not fits(value):
            raise UserError(f"{noun} {item} is out of range ({valid})")
        if value in values:
            raise UserError(f"{noun} {item} is listed twice ({valid})")
        values.append(value)
    return values


# -- the objectives ----------------------------------------------------------------------------------------------

class Objective:
    """What a way of training owns: its training levels and loss, its forward process, the denoiser it makes of a
    network, its sampling path and grid, and how its levels are named and parsed. Code outside ``diffusion/`` asks
    it and never tests which one it is; a new objective is a subclass and one line of ``registry.OBJECTIVES``.

    Levels are the objective's own time (what ``draw`` returns and ``forward``, ``loss``, ``position`` take). Sampling
    runs on states x = α(σ) x0 + σ n with α = 1 - ``slope``·σ (see ``samplers.Denoiser``); ``sigmas`` gives the
    grid, ``prior`` the first state, ``step_info`` the levels and states figures show.
    """
    name: str = ""
    slope: float = 0.0  # α(σ) = 1 - slope·σ on the sampling path: 0 variance-exploding, 1 flow's straight path
    natural_t_sampling: str = "uniform"  # diffusion.t_sampling = "auto"
    default_sampler: str = "heun"  # what a refusal suggests: the sampler measured best for it
    clip_x0: bool = False  # sampling clips the x0 estimate to the data range [-1, 1]
    default_levels: str = ""  # the columns of a forward figure when none are given
    log_levels: bool = False  # snapshots pick the recorded level nearest in log (σ spans decades)
    path: str = ""  # the forward process, for figure titles
    schedule: Schedule | None = None  # the discrete β schedule, for the objectives that have one

    def __init__(self, cfg):
        self.cfg, self.levels = cfg, levels_of(cfg, self.natural_t_sampling)

    @classmethod
    def check(cls, cfg, where: str) -> None:
        """Refuse [diffusion] keys this objective cannot honour (UserError naming the key)."""
        if cfg.min_snr_gamma:
            raise UserError(f"{where}: diffusion.min_snr_gamma is a ddpm loss weight; {cls.name} weights its "
                            f"loss itself (set diffusion.min_snr_gamma=0)")
        if cfg.prediction != "eps":
            raise UserError(f"{where}: diffusion.prediction={cfg.prediction} is for the ddpm objective; {cls.name} "
                            f"fixes what the network predicts")

    # training
    def draw(self, n: int, g: torch.Generator, device) -> torch.Tensor:
        """``n`` training levels drawn with ``g``."""
        raise NotImplementedError

    def loss(self, net: nn.Module, x0: torch.Tensor, level: torch.Tensor, noise: torch.Tensor,
             cond=None) -> torch.Tensor:
        """Per-example loss (N,) of ``net`` at ``forward(x0, level, noise)``, given classes ``cond`` (N,) when the
        network is conditional."""
        raise NotImplementedError

    def forward(self, x0: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t: the images at these levels with this noise."""
        raise NotImplementedError

    def position(self, level: torch.Tensor) -> torch.Tensor:
        """Where a level lies between clean (0) and pure noise (1), for the per-quartile loss."""
        raise NotImplementedError

    def sigma(self, level: float) -> float:
        """Karras et al.'s σ (noise-to-signal ratio) of a level."""
        raise NotImplementedError

    # sampling
    def denoiser(self, net) -> Denoiser:
        """D(x, σ, cond) of the network ``net(x, level[, cond])`` on the sampling path."""
        raise NotImplementedError

    def sigmas(self, steps: int, sample) -> torch.Tensor:
        """The decreasing σ a sampler visits for ``sample.steps`` = ``steps`` and the [sample] grid keys, then 0."""
        raise NotImplementedError

    def prior(self, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """The first state, at the grid's first σ, from unit noise."""
        return sigma * noise

    def level_of(self, sigma: float):
        """The level (own time) of a sampling σ."""
        return sigma

    def view(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The state as this objective's x_t (what its forward process makes), for figures."""
        return x

    def step_info(self, info: StepInfo) -> StepInfo:
        """A sampler's step, as figures name it: the level in the objective's own time, the state as its x_t."""
        return StepInfo(info.index, self.level_of(info.t), self.view(info.x_t, info.t), info.x0)

    # figures
    def label(self, level) -> str:
        """How a figure names a level: t=999, σ=2.5, t=0.75."""
        raise NotImplementedError

    def parse_levels(self, text: str) -> list:
        """``--snapshots`` / ``--timesteps``: levels in the objective's own time, distinct, 0 the clean end."""
        raise NotImplementedError

    def quartile_label(self, q: int) -> str:
        """The range of ``position`` quartile q, for the training-curves legend."""
        return f"t {q / 4:.2f}..{(q + 1) / 4:.2f}"

    def forward_variants(self, schedule: str) -> dict:
        """The forward processes a forward figure shows, by name (objectives, or β schedules to ``q_sample``)."""
        return {f"{self.name}: x = {self.path}": self}

    def forward_title(self, dataset: str) -> str:
        return f"forward process of the {self.name} objective on {dataset}"


class DDPM(Objective):
    """The discrete VP process at integer t (``process.py``); levels are timesteps 0 .. T-1 (int64).

    Sampling runs in k-diffusion's scaled variable x = x_t/√ᾱ_t = x0 + σ n, σ = √((1-ᾱ_t)/ᾱ_t): exact at every
    timestep of the schedule; between two (Heun's churn), the network sees the fractional t interpolated in log σ.
    """
    name, slope, natural_t_sampling, default_sampler, clip_x0 = "ddpm", 0.0, "uniform", "ddim", True
    default_levels, path = "0,10,50,100,150,200,250,300,400,600,800,999", "√ᾱ_t x0 + √(1-ᾱ_t) n"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.schedule = make_schedule(cfg)
        ab = self.schedule.alphas_cumprod
        self._sigmas = ((1 - ab) / ab).sqrt()  # increasing in t

    @classmethod
    def check(cls, cfg, where: str) -> None:
        pass  # every [diffusion] key is the ddpm objective's

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

    def network_time(self, sigma: float) -> int | float:
        """The t the network sees at σ: the timestep when σ is one of the schedule's (to 1e-9 in log), else the
        fractional t interpolated in log σ (k-diffusion's ``sigma_to_t``), clamped to [0, T-1]."""
        t = int(self.timestep_of_sigma(torch.tensor([sigma], dtype=torch.float64)))
        log_s, x = self._sigmas.log(), math.log(max(sigma, 1e-30))
        if abs(float(log_s[t]) - x) <= 1e-9:
            return t
        hi = int(torch.searchsorted(log_s, torch.tensor(x, dtype=torch.float64)).clamp(1, len(log_s) - 1))
        w = (x - float(log_s[hi - 1])) / float(log_s[hi] - log_s[hi - 1])
        return hi - 1 + min(max(w, 0.0), 1.0)

    def sigma(self, t: int) -> float:
        """The EDM σ of timestep t: x_t/√ᾱ_t = x0 + σ n."""
        return float(self._sigmas[int(t)])

    def loss(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond=None) -> torch.Tensor:
        return diffusion_loss(net, self.schedule, x0, t, noise, self.cfg.prediction, self.cfg.min_snr_gamma, cond)

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return q_sample(self.schedule, x0, t.long(), noise)

    def position(self, t: torch.Tensor) -> torch.Tensor:
        """Where a level lies between clean (0) and pure noise (1): t/T."""
        return t.double() / self.schedule.num_timesteps

    def denoiser(self, net) -> Denoiser:
        """x̂0 = x - σ ε̂ at x_t = x/√(1+σ²); a v-network's ε̂ = √(1-ᾱ) x_t + √ᾱ v (Salimans & Ho 2022)."""
        v_prediction = self.cfg.prediction == "v"

        def fn(x: torch.Tensor, sigma: float, cond) -> torch.Tensor:
            t = self.network_time(sigma)
            level = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long if isinstance(t, int) else None)
            alpha = 1 / math.sqrt(1 + sigma**2)  # √ᾱ_t
            x_t = alpha * x
            out = _call(net, x_t, level, cond)
            eps = sigma * alpha * x_t + alpha * out if v_prediction else out
            return x - sigma * eps

        return Denoiser(fn, self.slope)

    def sigmas(self, steps: int, sample) -> torch.Tensor:
        """σ at the timesteps of ``ddpm_grid`` (``sample.spacing``), then 0."""
        T = self.schedule.num_timesteps
        if not 1 <= steps <= T:
            raise UserError(f"--steps {steps}: must be between 1 and T={T}")
        return self.sigmas_at(ddpm_grid(T, steps, sample.spacing))

    def sigmas_at(self, ts: torch.Tensor) -> torch.Tensor:
        """σ at decreasing timesteps ``ts``, then 0 (float64)."""
        return torch.cat([self._sigmas[ts.long()], torch.zeros(1, dtype=torch.float64)])

    def prior(self, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """x_T ~ N(0, I) (Ho et al.), in the scaled variable: x_T/√ᾱ_T."""
        return math.sqrt(1 + sigma**2) * noise

    def level_of(self, sigma: float) -> int:
        return int(self.timestep_of_sigma(torch.tensor([sigma], dtype=torch.float64)))

    def view(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x / math.sqrt(1 + sigma**2)

    def label(self, level) -> str:
        return f"t={int(level)}"

    def parse_levels(self, text: str) -> list[int]:
        return parse_timesteps(text, self.schedule.num_timesteps)

    def quartile_label(self, q: int) -> str:
        T = self.schedule.num_timesteps
        return f"t {q * T // 4}..{(q + 1) * T // 4 - 1}"

    def forward_variants(self, schedule: str) -> dict:
        """One β schedule, or ``"both"``: linear above cosine (linear with diffusion.beta_start/beta_end)."""
        names = ("linear", "cosine") if schedule == "both" else (schedule,)
        return {f"{name} schedule": make_schedule(dataclasses.replace(self.cfg, schedule=name)) for name in names}

    def forward_title(self, dataset: str) -> str:
        return f"forward diffusion q(x_t | x_0) on {dataset}, T={self.schedule.num_timesteps}"


class EDM(Objective):
    """Karras et al. (2022): preconditioned denoiser D(x; σ) over x = x0 + σ n; levels are σ (float32)."""
    name, slope, natural_t_sampling, default_sampler = "edm", 0.0, "lognormal", "heun"
    default_levels, log_levels, path = "0,0.05,0.1,0.2,0.5,1,2,5,10,80", True, "x0 + σ n"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sigma_data, self.sigma_min, self.sigma_max = cfg.sigma_data, cfg.sigma_min, cfg.sigma_max

    @classmethod
    def check(cls, cfg, where: str) -> None:
        super().check(cfg, where)
        if not cfg.sigma_min < cfg.sigma_max:
            raise UserError(f"{where}: diffusion.sigma_min={cfg.sigma_min:g} must be below "
                            f"sigma_max={cfg.sigma_max:g}")

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

    def denoise(self, net, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        """D(x; σ) = c_skip x + c_out F(c_in x, c_noise); σ (N,)."""
        c_skip, c_out, c_in, c_noise = (c.float().view(-1, 1, 1, 1) for c in self.precondition(sigma))
        return c_skip * x + c_out * _call(net, c_in * x, c_noise.view(-1), cond)

    def loss(self, net: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             cond=None) -> torch.Tensor:
        """λ(σ) |D(x0 + σn; σ) - x0|² = |F - (x0 - c_skip x)/c_out|², λ = 1/c_out² (per example, (N,))."""
        c_skip, c_out, c_in, c_noise = (c.float().view(-1, 1, 1, 1) for c in self.precondition(sigma))
        x = x0 + sigma.float().view(-1, 1, 1, 1) * noise
        target = (x0 - c_skip * x) / c_out
        return (_call(net, c_in * x, c_noise.view(-1), cond) - target).square().mean(dim=(1, 2, 3))

    def forward(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x0 + sigma.float().view(-1, 1, 1, 1) * noise

    @staticmethod
    def sigma(sigma: float) -> float:
        return float(sigma)

    def position(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 - the position on the ρ = 7 grid: 0 at σ_min, 1 at σ_max."""
        hi, lo = self.sigma_max ** (1 / 7), self.sigma_min ** (1 / 7)
        return ((sigma.double() ** (1 / 7) - lo) / (hi - lo)).clamp(0, 1)

    def denoiser(self, net) -> Denoiser:
        def fn(x: torch.Tensor, sigma: float, cond) -> torch.Tensor:
            return self.denoise(net, x, torch.full((x.shape[0],), sigma, device=x.device), cond)

        return Denoiser(fn, self.slope)

    def sigmas(self, steps: int, sample) -> torch.Tensor:
        """``edm_grid`` from σ_max to σ_min spaced by ``sample.rho``."""
        return edm_grid(steps, self.sigma_min, self.sigma_max, sample.rho)

    def label(self, level) -> str:
        return f"σ={level:.3g}"

    def parse_levels(self, text: str) -> list[float]:
        return parse_noise_levels(text, math.inf, "valid: σ >= 0, comma-separated")

    def quartile_label(self, q: int) -> str:
        return f"ρ-grid quartile {q}"  # σ between σ_min and σ_max, spaced as the sampler spaces them


class Flow(Objective):
    """Flow matching on the straight path x_t = (1-t) x0 + t n; levels are t in [0, 1] (float32).

    Sampling runs on that path itself, σ = t and α = 1 - t (slope 1), where the probability-flow ODE dx/dt = v is
    dx/dσ = (x - D)/σ with D = x - t v: Euler and Heun step in t, as flow matching does, and DPM-Solver++ uses
    λ = log((1-t)/t), as diffusers' flow_prediction does.
    """
    name, slope, natural_t_sampling, default_sampler = "flow", 1.0, "logit_normal", "dpmpp"  # bench/RESULTS.md
    default_levels, path = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", "(1 - t) x0 + t n"

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

    def velocity(self, net, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return _call(net, x, 1000 * t.float(), cond)

    def loss(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond=None) -> torch.Tensor:
        x_t = self.interpolate(x0, t, noise)
        return (self.velocity(net, x_t, t, cond) - self.velocity_target(x0, noise)).square().mean(dim=(1, 2, 3))

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.interpolate(x0, t, noise)

    @staticmethod
    def sigma(t: float) -> float:
        """The EDM σ of time t (x_t/(1-t) = x0 + σ n): t/(1-t), infinite at t = 1."""
        return math.inf if t >= 1 else sigma_of_u(t)

    def position(self, t: torch.Tensor) -> torch.Tensor:
        return t.double()

    def denoiser(self, net) -> Denoiser:
        def fn(x: torch.Tensor, t: float, cond) -> torch.Tensor:
            return x - t * self.velocity(net, x, torch.full((x.shape[0],), t, device=x.device), cond)

        return Denoiser(fn, self.slope)

    def sigmas(self, steps: int, sample) -> torch.Tensor:
        """``flow_grid``: t from 1 to 0, shifted by ``sample.shift``."""
        return flow_grid(steps, sample.shift)

    def label(self, level) -> str:
        return f"t={level:.2f}"

    def parse_levels(self, text: str) -> list[float]:
        return parse_noise_levels(text, 1.0, "valid: t in [0, 1], comma-separated")
