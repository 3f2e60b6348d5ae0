"""The diffusion process: schedules (float64, immutable), q_sample and the loss, the objectives (ddpm, edm, flow)
and their samplers, listed once in ``registry.SAMPLERS``."""

from .objectives import DDPM, EDM, OBJECTIVES, Flow, make_objective
from .process import diffusion_loss, eps_from_x0, eps_model, guided_eps_model, q_posterior, q_sample, x0_from_eps
from .registry import SAMPLERS, samplers_for
from .samplers import StepInfo, ddim, ddpm, ddpm_grid, dpmpp, image_generators, image_seeds, timesteps
from .schedule import Schedule, cosine_schedule, linear_schedule, make_schedule

__all__ = ["DDPM", "EDM", "OBJECTIVES", "SAMPLERS", "Flow", "Schedule", "StepInfo", "cosine_schedule", "ddim", "ddpm",
           "ddpm_grid",
           "diffusion_loss", "dpmpp", "eps_from_x0", "eps_model", "guided_eps_model", "image_generators",
           "image_seeds", "linear_schedule", "make_objective", "make_schedule", "q_posterior", "q_sample",
           "samplers_for", "timesteps", "x0_from_eps"]
