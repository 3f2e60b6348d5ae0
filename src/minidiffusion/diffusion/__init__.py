"""The diffusion process: schedules (float64, immutable), q_sample and the loss, the objectives (ddpm, edm, flow),
each turning a network into one denoiser, and the samplers that take any denoiser, listed in ``registry``."""

from .objectives import DDPM, EDM, Flow, Objective, ddpm_grid, edm_grid, flow_grid, timesteps
from .process import diffusion_loss, eps_from_x0, q_posterior, q_sample, x0_from_eps
from .registry import OBJECTIVES, SAMPLERS, make_objective, samplers_for
from .samplers import (
    Denoiser,
    StepInfo,
    clipped,
    ddim,
    ddpm,
    dpmpp,
    euler,
    guided,
    heun,
    image_generators,
    image_seeds,
    unconditional,
)
from .schedule import Schedule, cosine_schedule, linear_schedule, make_schedule

__all__ = ["DDPM", "EDM", "OBJECTIVES", "SAMPLERS", "Denoiser", "Flow", "Objective", "Schedule", "StepInfo", "clipped",
           "cosine_schedule", "ddim", "ddpm", "ddpm_grid", "diffusion_loss", "dpmpp", "edm_grid", "eps_from_x0",
           "euler", "flow_grid", "guided", "heun", "image_generators", "image_seeds", "linear_schedule",
           "make_objective", "make_schedule", "q_posterior", "q_sample", "samplers_for", "timesteps", "unconditional",
           "x0_from_eps"]
