"""The one list of objectives and the one list of samplers.

An objective is an ``objectives.Objective`` subclass and one line in ``OBJECTIVES``; ``config``'s
``diffusion.objective`` choices read this table when a config is checked, so one registered later (a test's) counts.

Every sampler is ``fn(denoiser, x, sigmas, *, cond, generator, callback, progress, **options)`` over the decreasing σ
grid an objective's ``sigmas`` builds from ``sample.steps`` and its grid keys (``spacing`` for ddpm, ``rho`` for edm,
``shift`` for flow), and serves every objective: each one's denoiser lives on a path x = α(σ) x0 + σ n the samplers
all take (see ``samplers.py``). A pair that cannot work says why in its sampler's ``refuses``. The config's
``sample.sampler`` choices, the command line's ``--sampler`` and ``sampling.generate`` all read this table; a new
sampler is its function plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import samplers
from .objectives import DDPM, EDM, Flow, Objective

OBJECTIVES: dict[str, type[Objective]] = {"ddpm": DDPM, "edm": EDM, "flow": Flow}


def make_objective(cfg) -> Objective:
    """The objective a :class:`~minidiffusion.config.DiffusionConfig` names."""
    return OBJECTIVES[cfg.objective](cfg)


@dataclass(frozen=True)
class Sampler:
    fn: Callable
    options: tuple[str, ...]  # the [sample] keys passed to it as keywords
    evaluations: Callable[[int], int]  # network evaluations per image for sample.steps = N
    summary: str
    refuses: Mapping[str, str] = field(default_factory=dict)  # objective -> why this sampler cannot serve it


_CHURN = ("churn", "s_noise", "s_tmin", "s_tmax")
SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(samplers.ddpm, ("variance",), lambda n: n, "ancestral, Ho et al. 2020"),
    "ddim": Sampler(samplers.ddim, ("eta",), lambda n: n, "Song et al. 2021"),
    "dpmpp": Sampler(samplers.dpmpp, (), lambda n: n, "DPM-Solver++(2M), Lu et al. 2022"),
    "euler": Sampler(samplers.euler, _CHURN, lambda n: n, "Euler on the probability-flow ODE"),
    "heun": Sampler(samplers.heun, _CHURN, lambda n: 2 * n - 1, "Heun, Karras et al. 2022 Alg. 1-2"),
}


def samplers_for(objective: str) -> list[str]:
    """The samplers that serve ``objective``: all of them, less any that refuses it."""
    return [name for name, s in SAMPLERS.items() if objective not in s.refuses]
