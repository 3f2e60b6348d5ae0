"""Drawing images from a trained network: per-image seeds, batches, the sampler the [sample] section names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import Checkpoint, load_checkpoint
from .config import SampleConfig
from .devices import AUTOCAST
from .diffusion import Objective, clipped, guided, image_generators, image_seeds
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


def guide_for(sample: SampleConfig, ckpt: Checkpoint, path: str | Path | None, device: str) -> nn.Module | None:
    """The guide network that ``--guide`` and ``sample.guidance`` ask for: None when guidance is off."""
    if sample.guidance == 1:
        if path is not None:
            raise UserError(f"--guide {path}: guidance is off (sample.guidance = 1); add --guidance W, e.g. 2")
        return None
    return load_guide(ckpt, path, device=device)


def unguided_until(sample: SampleConfig, guide: nn.Module | None) -> SampleConfig:
    """``sample``, with guidance off while there is no guide yet (the grids drawn during training before guide_at)."""
    return sample if guide is not None or sample.guidance == 1 else dataclasses.replace(sample, guidance=1.0)


@dataclass(frozen=True)
class Options:
    """How ``generate`` runs, where the [sample] section says what it draws.

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
def generate(net: nn.Module, objective: Objective, sample: SampleConfig, n: int, *, seed: int,
             shape: tuple[int, int, int], device: str = "cpu", start: int = 0, guide: nn.Module | None = None,
             options: Options = Options()) -> torch.Tensor:
    """``n`` images of ``shape`` (C, H, W), uint8 (n, C, H, W) on the CPU: images start .. start+n-1 of ``seed``.

    ``objective`` (``diffusion.make_objective(config.diffusion)``) turns the network into its denoiser and builds
    the grid; ``sample`` (the [sample] section) says what is drawn: the sampler, its steps, grid keys and options,
    the batch size, and the guidance: with w = sample.guidance > 1 every step inside sample.guide_interval evaluates
    ``guide`` too (see ``load_guide``) and uses D_guide + w (D - D_guide). How it runs comes from ``options``.
    Image k depends only on (seed, k), never on the batch size or on how many images are drawn.
    """
    spec = SAMPLERS[sample.sampler]
    if objective.name in spec.refuses:
        raise UserError(f"sampler {sample.sampler!r} does not sample the {objective.name} objective: "
                        f"{spec.refuses[objective.name]} (choose {', '.join(samplers_for(objective.name))}, e.g. "
                        f"{objective.default_sampler})")
    sigmas = objective.sigmas(sample.steps, sample)
    if sample.guidance != 1:
        if guide is None:
            raise UserError(f"sample.guidance={sample.guidance:g} needs a guide network, and there is none: train "
                            f"with sample.guide_step or guide_at > 0, pass --guide CHECKPOINT, or set "
                            f"sample.guidance=1")
        guide.eval()
    was_training = net.training
    net.eval()
    fast = {"dtype": AUTOCAST[options.precision], "channels_last": options.channels_last,
            "cuda_graph": options.cuda_graph}
    denoiser = objective.denoiser(fast_network(net, **fast))
    if sample.guidance != 1:
        weak = objective.denoiser(fast_network(guide, **fast))
        denoiser = guided(denoiser, weak, sample.guidance, sample.guide_interval)
    if objective.clip_x0:
        denoiser = clipped(denoiser)
    keywords = {key: getattr(sample, key) for key in spec.options}
    callback = options.callback
    seen = (lambda info: callback(objective.step_info(info))) if callback is not None else None
    out = []
    with tqdm(total=n, desc="sampling", unit="img", leave=False, disable=not options.progress or n <= sample.batch_size,
              dynamic_ncols=True) as bar:
        for b in range(start, start + n, sample.batch_size):
            count = min(sample.batch_size, start + n - b)
            gens = image_generators(image_seeds(seed, b, count))
            x = objective.prior(randn((count, *shape), gens, device), float(sigmas[0]))
            x0 = spec.fn(denoiser, x, sigmas, generator=gens, callback=seen, progress=options.progress, **keywords)
            out.append((to_pixels(x0) if options.output == "uint8" else x0.float().clamp(-1, 1)).cpu())
            bar.update(count)
    net.train(was_training)
    dtype = torch.uint8 if options.output == "uint8" else torch.float32
    return torch.cat(out) if out else torch.empty((0, *shape), dtype=dtype)


def generate_sharded(net: nn.Module, objective: Objective, sample: SampleConfig, n: int, *, seed: int,
                     shape: tuple[int, int, int], device: str = "cpu", world: World | None = None, start: int = 0,
                     guide: nn.Module | None = None, options: Options = Options()) -> torch.Tensor:
    """``generate`` split across the ranks of ``world`` (a collective under torchrun: call it on every rank).

    Rank r draws its contiguous share ``distributed.shard(n, world)`` of the image indices and every rank returns
    all ``n`` images, (n, C, H, W) on the CPU in index order: exactly what ``generate(net, objective, sample, n, ...)``
    returns in one process (uint8 unless ``options.output="float"``), since image k depends only on (seed, k). A rank
    whose share is empty (n < world size) still takes part; only rank 0 shows progress.
    """
    world = world or World()
    mine = distributed.shard(n, world)
    if not world.is_main:
        options = dataclasses.replace(options, progress=False)
    try:
        images = generate(net, objective, sample, len(mine), seed=seed, shape=shape, device=device,
                          start=start + mine.start, guide=guide, options=options)
    except UserError as e:  # bad options fail alike on every rank: one of them says so
        raise distributed.EveryRankError(str(e), quiet=not world.is_main) from None
    return distributed.gather_rows(images, world)
