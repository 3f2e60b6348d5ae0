"""The one list of samplers: which objectives each serves, which ``[sample]`` keys it reads, what it costs.

Every sampler is ``fn(model, noise, levels, *, generator, callback, progress, **options)`` over a decreasing tensor
of levels (ddpm: 0-based timesteps; edm: σ; flow: t), built by ``sampling.sampling_grid`` from ``sample.steps`` and
the grid keys (``spacing`` for ddpm, ``rho`` for edm, ``shift`` for flow).

The config's ``sample.sampler`` choices, the command line's ``--sampler`` and ``sampling.generate`` all read this
table; a new sampler is its function plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import ode, samplers


@dataclass(frozen=True)
class Sampler:
    fn: Callable
    objectives: tuple[str, ...]  # the diffusion.objective values it samples
    options: tuple[str, ...]  # the [sample] keys passed to it as keywords
    evaluations: Callable[[int], int]  # network evaluations per image for sample.steps = N
    summary: str


_CHURN = ("churn", "s_noise", "s_tmin", "s_tmax")
SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(samplers.ddpm, ("ddpm",), ("variance",), lambda n: n, "ancestral, Ho et al. 2020"),
    "ddim": Sampler(samplers.ddim, ("ddpm",), ("eta",), lambda n: n, "Song et al. 2021"),
    "dpmpp": Sampler(samplers.dpmpp, ("ddpm",), (), lambda n: n, "DPM-Solver++(2M), Lu et al. 2022"),
    "euler": Sampler(ode.euler, ("edm", "flow"), _CHURN, lambda n: n, "Euler on the probability-flow ODE"),
    "heun": Sampler(ode.heun, ("edm", "flow"), _CHURN, lambda n: 2 * n - 1, "Heun, Karras et al. 2022 Alg. 1-2"),
}


def samplers_for(objective: str) -> list[str]:
    return [name for name, s in SAMPLERS.items() if objective in s.objectives]
