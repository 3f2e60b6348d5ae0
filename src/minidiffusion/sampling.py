"""Drawing images from a trained network: per-image seeds, batches, the sampler the [sample] section names, and
for a class-conditional network the class of each image."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import Checkpoint, load_checkpoint
from .config import SampleConfig
from .devices import AUTOCAST
from .diffusion import Objective, clipped, guided, image_generators, image_seeds, unconditional
from .diffusion.process import fast_network
from .diffusion.registry import SAMPLERS, samplers_for
from .diffusion.samplers import Callback, Denoiser, randn
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
    if guide.classes != ckpt.classes:
        have = lambda c: f"the classes {', '.join(c.classes)}" if c.classes else "no classes"  # noqa: E731
        raise UserError(f"--guide {path}: it knows {have(guide)} and {ckpt.path} {have(ckpt)}: a guide is called "
                        f"with the same classes as the model it guides")
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


def num_classes(net) -> int:
    """The classes a network draws (0: an unconditional network); its index ``num_classes`` is "no class"."""
    return getattr(net, "num_classes", 0)


def parse_classes(spec: str | int | Sequence[str | int], names: Sequence[str], where: str = "--class") -> list[int]:
    """Classes as ``sample --class`` and ``Model.sample(classes=...)`` take them -> their indices: one class or a
    comma-separated list (``"7"``, ``"0,3,7"``, ``"cat,dog"``), or a sequence; each a name of ``names`` or an index
    into it. A name wins over an index (a folder's class "3" is the subfolder 3, whatever its position)."""
    if not names:
        raise UserError(f"{where}: this network is unconditional (trained without data.conditional): it draws no "
                        f"particular class")
    items = [x.strip() for x in spec.split(",")] if isinstance(spec, str) else (
        [spec] if isinstance(spec, int) else list(spec))
    listed = ", ".join(names) if len(names) <= 20 else f"{', '.join(names[:20])}, ..."
    if not items or "" in items:
        raise UserError(f"{where}: {spec!r}: name the classes, e.g. 7 or 0,3,7 (its classes: {listed})")
    found = []
    for item in items:
        if isinstance(item, str) and item in names:
            found.append(names.index(item))
            continue
        try:
            k = int(item)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {item!r} is not a class of this network (its classes: {listed})") from None
        if not 0 <= k < len(names) or isinstance(item, bool) or (isinstance(item, float) and item != k):
            raise UserError(f"{where}: class {item} is out of range: this network has {len(names)} classes, 0.."
                            f"{len(names) - 1} ({listed})")
        found.append(k)
    return found


def class_labels(n: int, classes: Sequence[int]) -> torch.Tensor:
    """The class of each of ``n`` images: len(classes) consecutive runs, as equal as n allows, run i of class
    classes[i] (so a grid of them has one row per class; n = len(classes) gives each image its own), int64 (n,)."""
    if len(classes) > n:
        raise UserError(f"{len(classes)} classes for {n} images: draw at least one image per class")
    return torch.tensor(list(classes), dtype=torch.long)[torch.arange(n) * len(classes) // n]


def _checked_labels(net, sample: SampleConfig, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The classes of the ``n`` images ``generate`` draws: ``labels`` checked, or for a conditional network without
    them every class in turn (``class_labels``); None for an unconditional network."""
    classes = num_classes(net)
    if not classes:
        if labels is not None:
            raise UserError("classes were asked for, and this network is unconditional (trained without "
                            "data.conditional): it draws no particular class")
        if sample.cfg_weight != 1:
            raise UserError(f"sample.cfg_weight={sample.cfg_weight:g}: classifier-free guidance needs a "
                            f"class-conditional network, and this one is unconditional (set it to 1)")
        return None
    if labels is None:
        return class_labels(n, range(classes))
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.dtype != torch.long:
        raise UserError(f"classes: expected int64 class indices, one per image ({n}), got {labels.dtype} "
                        f"{tuple(labels.shape)}")
    if n and not 0 <= int(labels.min()) <= int(labels.max()) <= classes:
        raise UserError(f"classes: indices must lie in 0..{classes} ({classes}: 'no class'), got "
                        f"{int(labels.min())}..{int(labels.max())}")
    return labels


def denoiser_of(net: nn.Module, objective: Objective, sample: SampleConfig, guide: nn.Module | None = None,
                **fast) -> Denoiser:
    """The denoiser sampling follows: the network's D(x, σ, class), guided as ``sample`` says, each guidance through
    the one ``guided`` wrapper and only when its weight is not 1 (so w = 1 is the plain denoiser, bit for bit):

    - autoguidance (w_a = sample.guidance, in sample.guide_interval; Karras et al. 2024): the guide network, given
      the same class, D_a = D_guide(c) + w_a (D(c) - D_guide(c));
    - then classifier-free guidance (w = sample.cfg_weight, in sample.cfg_interval; Ho & Salimans 2022) on top:
      D(no class) + w (D_a - D(no class)), the model's own "no class" (w = 0: that model alone).

    With both, a conditional model guided by a weaker conditional one (Karras et al.'s conditional autoguidance),
    then pushed away from the unconditional model. ``fast``: ``fast_network``'s options. The ddpm objective clips x̂0.
    """
    base = objective.denoiser(fast_network(net, **fast))
    denoiser = base
    if sample.guidance != 1:
        denoiser = guided(base, objective.denoiser(fast_network(guide, **fast)), sample.guidance,
                          sample.guide_interval)
    if sample.cfg_weight != 1:
        denoiser = guided(denoiser, unconditional(base, num_classes(net)), sample.cfg_weight, sample.cfg_interval)
    return clipped(denoiser) if objective.clip_x0 else denoiser


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
             labels: torch.Tensor | None = None, options: Options = Options()) -> torch.Tensor:
    """``n`` images of ``shape`` (C, H, W), uint8 (n, C, H, W) on the CPU: images start .. start+n-1 of ``seed``.

    ``objective`` (``diffusion.make_objective(config.diffusion)``) turns the network into its denoiser and builds
    the grid; ``sample`` (the [sample] section) says what is drawn: the sampler, its steps, grid keys and options,
    the batch size, and the guidance (``denoiser_of``): with w = sample.guidance > 1 every step inside
    sample.guide_interval evaluates ``guide`` too (see ``load_guide``) and uses D_guide + w (D - D_guide);
    sample.cfg_weight is classifier-free guidance. A class-conditional network draws image k of class ``labels[k]``
    (int64 (n,); default: every class in turn, ``class_labels``). How it runs comes from ``options``.
    Image k depends only on (seed, k) and its class, never on the batch size or on how many images are drawn.
    """
    spec = SAMPLERS[sample.sampler]
    if objective.name in spec.refuses:
        raise UserError(f"sampler {sample.sampler!r} does not sample the {objective.name} objective: "
                        f"{spec.refuses[objective.name]} (choose {', '.join(samplers_for(objective.name))}, e.g. "
                        f"{objective.default_sampler})")
    sigmas = objective.sigmas(sample.steps, sample)
    labels = _checked_labels(net, sample, labels, n)
    if sample.guidance != 1:
        if guide is None:
            raise UserError(f"sample.guidance={sample.guidance:g} needs a guide network, and there is none: train "
                            f"with sample.guide_step or guide_at > 0, pass --guide CHECKPOINT, or set "
                            f"sample.guidance=1")
        guide.eval()
    was_training = net.training
    net.eval()
    denoiser = denoiser_of(net, objective, sample, guide, dtype=AUTOCAST[options.precision],
                           channels_last=options.channels_last, cuda_graph=options.cuda_graph)
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
            cond = None if labels is None else labels[b - start:b - start + count].to(device)
            x0 = spec.fn(denoiser, x, sigmas, cond=cond, generator=gens, callback=seen, progress=options.progress,
                         **keywords)
            out.append((to_pixels(x0) if options.output == "uint8" else x0.float().clamp(-1, 1)).cpu())
            bar.update(count)
    net.train(was_training)
    dtype = torch.uint8 if options.output == "uint8" else torch.float32
    return torch.cat(out) if out else torch.empty((0, *shape), dtype=dtype)


def generate_sharded(net: nn.Module, objective: Objective, sample: SampleConfig, n: int, *, seed: int,
                     shape: tuple[int, int, int], device: str = "cpu", world: World | None = None, start: int = 0,
                     guide: nn.Module | None = None, labels: torch.Tensor | None = None,
                     options: Options = Options()) -> torch.Tensor:
    """``generate`` split across the ranks of ``world`` (a collective under torchrun: call it on every rank).

    Rank r draws its contiguous share ``distributed.shard(n, world)`` of the image indices and every rank returns
    all ``n`` images, (n, C, H, W) on the CPU in index order: exactly what ``generate(net, objective, sample, n, ...)``
    returns in one process (uint8 unless ``options.output="float"``), since image k depends only on (seed, k). A rank
    whose share is empty (n < world size) still takes part; only rank 0 shows progress. ``labels``: the classes of
    all ``n`` images, each rank drawing its share.
    """
    world = world or World()
    mine = distributed.shard(n, world)
    if not world.is_main:
        options = dataclasses.replace(options, progress=False)
    try:
        labels = _checked_labels(net, sample, labels, n)
        images = generate(net, objective, sample, len(mine), seed=seed, shape=shape, device=device,
                          start=start + mine.start, guide=guide,
                          labels=None if labels is None else labels[mine.start:mine.stop], options=options)
    except UserError as e:  # bad options fail alike on every rank: one of them says so
        raise distributed.EveryRankError(str(e), quiet=not world.is_main) from None
    return distributed.gather_rows(images, world)
