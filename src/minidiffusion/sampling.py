"""Drawing images from a trained network: per-image seeds, batches, the sampler the config names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import Checkpoint, load_checkpoint
from .config import Config
from .devices import AUTOCAST
from .diffusion import eps_model, guided_eps_model, image_generators, image_seeds
from .diffusion.objectives import make_objective
from .diffusion.ode import EDMODE, FlowODE, GuidedODE, edm_grid, flow_grid
from .diffusion.process import fast_network
from .diffusion.registry import SAMPLERS, samplers_for
from .diffusion.samplers import Callback, ddpm_grid, randn
from .distributed import World
from .errors import UserError
from .images import to_pixels


def load_model(path: str | Path, *, ema: bool = True, device: str = "cpu") -> tuple[nn.Module, Checkpoint]:
    """The network of a checkpoint (EMA weights unless ``ema=False``), in eval mode on ``device``."""
    ckpt = load_checkpoint(path)
    return ckpt.network("ema" if ema and ckpt.has("ema") else "model", device), ckpt


def load_guide(ckpt: Checkpoint, path: str | Path | None = None, *, device: str = "cpu") -> nn.Module | None:
    """The autoguidance guide for ``ckpt``'s network: the EMA weights of the checkpoint at ``path`` (a run
    directory or file: any network trained on the same images with the same diffusion), else the guide ``ckpt``
    carries (kept during training, see sample.guide_step and guide_at), else None."""
    if path is None:
        return ckpt.network("guide", device) if ckpt.has("guide") else None
    net, guide = load_model(path, device=device)
    if guide.data != ckpt.data:
        raise UserError(f"--guide {path}: trained on other images ({guide.data}) than {ckpt.path} ({ckpt.data})")
    differ = [k for k, v in vars(ckpt.config.diffusion).items()
              if k != "min_snr_gamma" and getattr(guide.config.diffusion, k) != v]  # the loss weight may differ
    if differ:
        raise UserError(f"--guide {path}: its diffusion differs from {ckpt.path}'s in {', '.join(differ)}")
    return net


def with_guidance(cfg: Config, weight: float | None) -> Config:
    """``cfg`` with sample.guidance = ``weight`` (validated as the config key is); unchanged for None."""
    return cfg if weight is None else cfg.replace(sample={"guidance": weight})


def guide_for(cfg: Config, ckpt: Checkpoint, path: str | Path | None, device: str) -> nn.Module | None:
    """The guide network that ``--guide``/``cfg`` ask for: None when guidance is off."""
    if cfg.sample.guidance == 1:
        if path is not None:
            raise UserError(f"--guide {path}: guidance is off (sample.guidance = 1); add --guidance W, e.g. 2")
        return None
    return load_guide(ckpt, path, device=device)


def unguided_until(cfg: Config, guide: nn.Module | None) -> Config:
    """``cfg``, with guidance off while there is no guide yet (the grids drawn during training before guide_at)."""
    return cfg if guide is not None or cfg.sample.guidance == 1 else cfg.replace(sample={"guidance": 1.0})


def with_sampler(cfg: Config, sampler: str | None = None, steps: int | None = None,
                 batch_size: int | None = None) -> Config:
    """``cfg`` with the [sample] sampler, steps and batch size given (None: as the config has them), validated as
    config keys are (a sampler that does not fit the objective is refused here)."""
    changes = {k: v for k, v in (("sampler", sampler), ("steps", steps), ("batch_size", batch_size)) if v is not None}
    return cfg.replace(sample=changes) if changes else cfg


@dataclass(frozen=True)
class Options:
    """How ``generate`` runs, where the config says what it draws.

    ``precision`` ("fp32", "bf16", "fp16": autocast), ``channels_last`` and ``cuda_graph`` (one CUDA graph per batch
    shape, replayed every step; see ``diffusion.process.FastEpsModel``) are the speed options. ``output="float"``
    returns the sampler's float32 result in [-1, 1], unquantized, instead of uint8 pixels. ``callback`` sees every
    step of every batch; ``progress`` shows bars.
    """
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graph: bool = False
    output: str = "uint8"
    progress: bool = False
    callback: Callback = None

    def __post_init__(self):
        if self.precision not in AUTOCAST:
            raise UserError(f"precision={self.precision!r}: choose from {', '.join(AUTOCAST)}")
        if self.output not in ("uint8", "float"):
            raise UserError(f"output={self.output!r}: choose 'uint8' (pixels) or 'float' (model range [-1, 1])")


@torch.no_grad()
def generate(net: nn.Module, cfg: Config, n: int, *, seed: int, shape: tuple[int, int, int], device: str = "cpu",
             start: int = 0, guide: nn.Module | None = None, options: Options = Options()) -> torch.Tensor:
    """``n`` images of ``shape`` (C, H, W), uint8 (n, C, H, W) on the CPU: images start .. start+n-1 of ``seed``.

    What is drawn comes from ``cfg.sample``: the sampler, its steps and options, the batch size, and the guidance:
    with w = sample.guidance > 1 every step evaluates ``guide`` too (see ``load_guide``) and uses ε_guide + w (ε -
    ε_guide). How it runs comes from ``options``. Image k depends only on (seed, k), never on the batch size or on
    how many images are drawn.
    """
    sc = cfg.sample
    objective = make_objective(cfg.diffusion)
    spec = SAMPLERS[sc.sampler]
    if objective.name not in spec.objectives:
        raise UserError(f"sampler {sc.sampler!r} does not sample the {objective.name} objective this model was "
                        f"trained with (choose {', '.join(samplers_for(objective.name))})")
    if objective.name == "ddpm" and not 1 <= sc.steps <= objective.schedule.num_timesteps:
        raise UserError(f"--steps {sc.steps}: must be between 1 and T={objective.schedule.num_timesteps}")
    if sc.guidance != 1:
        if guide is None:
            raise UserError(f"sample.guidance={sc.guidance:g} needs a guide network, and there is none: train with "
                            f"sample.guide_step or guide_at > 0, pass --guide CHECKPOINT, or set sample.guidance=1")
        guide.eval()
    was_training = net.training
    net.eval()
    fast = {"dtype": AUTOCAST[options.precision], "channels_last": options.channels_last,
            "cuda_graph": options.cuda_graph}
    draw = _drawer(objective, net, guide if sc.guidance != 1 else None, cfg, spec, fast)
    out = []
    with tqdm(total=n, desc="sampling", unit="img", leave=False, disable=not options.progress or n <= sc.batch_size,
              dynamic_ncols=True) as bar:
        for b in range(start, start + n, sc.batch_size):
            count = min(sc.batch_size, start + n - b)
            gens = image_generators(image_seeds(seed, b, count))
            x0 = draw(randn((count, *shape), gens, device), gens, options.callback, options.progress)
            out.append((to_pixels(x0) if options.output == "uint8" else x0.float().clamp(-1, 1)).cpu())
            bar.update(count)
    net.train(was_training)
    dtype = torch.uint8 if options.output == "uint8" else torch.float32
    return torch.cat(out) if out else torch.empty((0, *shape), dtype=dtype)


def _drawer(objective, net: nn.Module, guide: nn.Module | None, cfg: Config, spec, fast: dict):
    """``draw(x_T, generators, callback, progress) -> x0`` for one batch, by the sampler ``spec`` names."""
    active = guided_levels(objective, cfg.sample.guide_interval)
    levels = sampling_grid(objective, cfg.sample, cfg.sample.steps)
    options = {key: getattr(cfg.sample, key) for key in spec.options}
    if objective.name == "ddpm":
        schedule, prediction = objective.schedule, cfg.diffusion.prediction
        model = eps_model(net, schedule, prediction, **fast)
        if guide is not None:
            model = guided_eps_model(model, eps_model(guide, schedule, prediction, **fast), cfg.sample.guidance,
                                     active)
        return lambda x_T, gens, callback, progress: spec.fn(
            model, x_T, schedule, levels, clip_x0=True, generator=gens, callback=callback, progress=progress,
            **options)

    def ode_of(module: nn.Module):
        return (EDMODE if objective.name == "edm" else FlowODE)(objective, fast_network(module, **fast))

    ode = ode_of(net)
    if guide is not None:
        ode = GuidedODE(ode, ode_of(guide), cfg.sample.guidance, active)
    return lambda x_T, gens, callback, progress: spec.fn(ode, x_T, levels, generator=gens, callback=callback,
                                                         progress=progress, **options)


def guided_levels(objective, interval: tuple[float, ...]):
    """level -> whether guidance applies there: σ(level) in [lo, hi] (sample.guide_interval); None = everywhere."""
    if not interval:
        return None
    lo, hi = interval
    return lambda level: lo <= objective.sigma(level) <= hi


def sampling_grid(objective, sc, steps: int) -> torch.Tensor:
    """The decreasing levels a sampler visits: timesteps down to 0 (ddpm, ``sample.spacing``), σ down to 0 (edm,
    ``sample.rho``) or t down to 0 (flow, ``sample.shift``)."""
    if objective.name == "ddpm":
        return ddpm_grid(objective.schedule.num_timesteps, steps, sc.spacing)
    if objective.name == "edm":
        return edm_grid(steps, objective.sigma_min, objective.sigma_max, sc.rho)
    return flow_grid(steps, sc.shift)


def generate_sharded(net: nn.Module, cfg: Config, n: int, *, seed: int, shape: tuple[int, int, int],
                     device: str = "cpu", world: World | None = None, start: int = 0, guide: nn.Module | None = None,
                     options: Options = Options()) -> torch.Tensor:
    """``generate`` split across the ranks of ``world`` (a collective under torchrun: call it on every rank).

    Rank r draws its contiguous share ``distributed.shard(n, world)`` of the image indices and every rank returns
    all ``n`` images, (n, C, H, W) on the CPU in index order: exactly what ``generate(net, cfg, n, seed=seed, ...)``
    returns in one process (uint8 unless ``options.output="float"``), since image k depends only on (seed, k). A rank
    whose share is empty (n < world size) still takes part; only rank 0 shows progress.
    """
    world = world or World()
    mine = distributed.shard(n, world)
    if not world.is_main:
        options = dataclasses.replace(options, progress=False)
    try:
        images = generate(net, cfg, len(mine), seed=seed, shape=shape, device=device, start=start + mine.start,
                          guide=guide, options=options)
    except UserError as e:  # bad options fail alike on every rank: one of them says so
        raise distributed.EveryRankError(str(e), quiet=not world.is_main) from None
    return distributed.gather_rows(images, world)
