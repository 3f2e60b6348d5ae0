"""Drawing images from a trained network: per-image seeds, batches, the sampler the config names."""

from __future__ import annotations

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
from .diffusion.samplers import Callback, randn
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


@torch.no_grad()
def generate(net: nn.Module, cfg: Config, n: int, *, seed: int, channels: int, image_size: int, device: str = "cpu",
             sampler: str | None = None, steps: int | None = None, batch_size: int | None = None, start: int = 0,
             callback: Callback = None, progress: bool = False, output: str = "uint8", precision: str = "fp32",
             channels_last: bool = False, cuda_graph: bool = False, guide: nn.Module | None = None) -> torch.Tensor:
    """``n`` images as uint8 (n, C, H, W) on the CPU: images start .. start+n-1 of the run with ``seed``.

    With ``cfg.sample.guidance`` w > 1 every step evaluates ``guide`` too (see ``load_guide``) and uses
    ε_guide + w (ε - ε_guide); w = 1 ignores it.

    ``precision`` ("fp32", "bf16", "fp16": autocast), ``channels_last`` and ``cuda_graph`` (one CUDA graph per
    batch shape, replayed every step) are the GPU speed options; see ``diffusion.process.FastEpsModel``.

    ``output="float"`` returns the sampler's float32 result in [-1, 1] instead, unquantized.

    Image k depends only on (seed, k), never on the batch size or on how many images are drawn.
    Sampler options (eta, spacing, variance) come from ``cfg.sample``; ``sampler``/``steps``/``batch_size``
    override it. ``callback`` sees every step of every batch.
    """
    sc = cfg.sample
    sampler = sampler or sc.sampler
    steps = steps or sc.steps
    batch_size = batch_size or sc.batch_size
    objective = make_objective(cfg.diffusion)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    spec = SAMPLERS[sampler]
    if objective.name not in spec.objectives:
        raise UserError(f"sampler {sampler!r} does not sample the {objective.name} objective this model was trained "
                        f"with (choose {', '.join(samplers_for(objective.name))})")
    if objective.name == "ddpm" and not 1 <= steps <= objective.schedule.num_timesteps:
        raise UserError(f"--steps {steps}: must be between 1 and T={objective.schedule.num_timesteps}")
    if output not in ("uint8", "float"):
        raise UserError(f"output={output!r}: choose 'uint8' (pixels) or 'float' (model range [-1, 1])")
    options = {key: getattr(sc, key) for key in spec.options}
    was_training = net.training
    net.eval()
    if precision not in AUTOCAST:
        raise UserError(f"precision={precision!r}: choose from {', '.join(AUTOCAST)}")
    fast = {"dtype": AUTOCAST[precision], "channels_last": channels_last, "cuda_graph": cuda_graph}
    if sc.guidance != 1:
        if guide is None:
            raise UserError(f"sample.guidance={sc.guidance:g} needs a guide network, and there is none: train with "
                            f"sample.guide_step or guide_at > 0, pass --guide CHECKPOINT, or set sample.guidance=1")
        guide.eval()
    draw = _drawer(objective, net, guide if sc.guidance != 1 else None, cfg, spec, steps, options, fast)
    out = []
    with tqdm(total=n, desc="sampling", unit="img", leave=False, disable=not progress or n <= batch_size,
              dynamic_ncols=True) as bar:
        for b in range(start, start + n, batch_size):
            count = min(batch_size, start + n - b)
            gens = image_generators(image_seeds(seed, b, count))
            x_T = randn((count, channels, image_size, image_size), gens, device)
            x0 = draw(x_T, gens, callback, progress)
            out.append((to_pixels(x0) if output == "uint8" else x0.float().clamp(-1, 1)).cpu())
            bar.update(count)
    net.train(was_training)
    dtype = torch.uint8 if output == "uint8" else torch.float32
    return torch.cat(out) if out else torch.empty((0, channels, image_size, image_size), dtype=dtype)


def _drawer(objective, net: nn.Module, guide: nn.Module | None, cfg: Config, spec, steps: int, options: dict,
            fast: dict):
    """``draw(x_T, generators, callback, progress) -> x0`` for one batch, by the sampler ``spec`` names."""
    active = guided_levels(objective, cfg.sample.guide_interval)
    if objective.name == "ddpm":
        schedule, prediction = objective.schedule, cfg.diffusion.prediction
        model = eps_model(net, schedule, prediction, **fast)
        if guide is not None:
            model = guided_eps_model(model, eps_model(guide, schedule, prediction, **fast), cfg.sample.guidance,
                                     active)
        return lambda x_T, gens, callback, progress: spec.fn(
            model, x_T, schedule, steps, clip_x0=True, generator=gens, callback=callback, progress=progress, **options)

    def ode_of(module: nn.Module):
        return (EDMODE if objective.name == "edm" else FlowODE)(objective, fast_network(module, **fast))

    ode = ode_of(net)
    if guide is not None:
        ode = GuidedODE(ode, ode_of(guide), cfg.sample.guidance, active)
    taus = sampling_grid(objective, cfg.sample, steps)
    return lambda x_T, gens, callback, progress: spec.fn(ode, x_T, taus, generator=gens, callback=callback,
                                                         progress=progress, **options)


def guided_levels(objective, interval: tuple[float, ...]):
    """level -> whether guidance applies there: σ(level) in [lo, hi] (sample.guide_interval); None = everywhere."""
    if not interval:
        return None
    lo, hi = interval
    return lambda level: lo <= objective.sigma(level) <= hi


def sampling_grid(objective, sc, steps: int) -> torch.Tensor:
    """The decreasing levels a continuous sampler visits, ending at 0: σ (edm) or t (flow)."""
    if objective.name == "edm":
        return edm_grid(steps, objective.sigma_min, objective.sigma_max, sc.rho)
    return flow_grid(steps, sc.shift)


def generate_sharded(net: nn.Module, cfg: Config, n: int, *, seed: int, channels: int, image_size: int,
                     device: str = "cpu", world: World | None = None, start: int = 0, progress: bool = False,
                     **kw) -> torch.Tensor:
    """``generate`` split across the ranks of ``world`` (a collective under torchrun: call it on every rank).

    Rank r draws its contiguous share ``distributed.shard(n, world)`` of the image indices and every rank returns
    all ``n`` images, (n, C, H, W) on the CPU in index order: exactly what ``generate(net, cfg, n, seed=seed, ...)``
    returns in one process (uint8 unless ``output="float"``), since image k depends only on (seed, k). A rank whose
    share is empty (n < world size) still takes part. Other keyword arguments go to ``generate`` on every rank.
    """
    world = world or World()
    mine = distributed.shard(n, world)
    try:
        images = generate(net, cfg, len(mine), seed=seed, channels=channels, image_size=image_size, device=device,
                          start=start + mine.start, progress=progress and world.is_main, **kw)
    except UserError as e:  # bad options fail alike on every rank: one of them says so
        raise distributed.EveryRankError(str(e), quiet=not world.is_main) from None
    return distributed.gather_rows(images, world)
