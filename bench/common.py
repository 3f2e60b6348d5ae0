"""What the benchmarks share: the preset's image shape, our model and the anchors sized against it, one train
step and one sampling call for any of them, interleaved timing, MFU, and the results log.

Every benchmark runs our model and the anchors in the same process, interleaved round by round (A B C A B C …),
and reports the median round: the machines these run on are shared, and a neighbour's burst then lands on all
contenders alike instead of on whichever ran at that moment.

Anchors (imported lazily; a missing one is skipped with a message):
- ``diffusers``: ``diffusers.UNet2DModel``. For a ``ddpm``-variant preset it is built in the layout of
  ``google/ddpm-cifar10-32`` at our width (for ``cifar10.toml`` exactly that model: same 35.75M parameters);
  for a ``simple`` preset it mirrors our levels (one ResNet per level down, attention only in the middle) and
  its width is searched so that its parameter count is within 10% of ours.
- ``lucid``: ``denoising_diffusion_pytorch.Unet`` (lucidrains). Its block layout is fixed; with ``width`` sizing
  it gets ``dim = base_channels`` and our ``channel_mults`` (for ``cifar10.toml``: dim 128, (1, 2, 2, 2), 28.5M),
  with ``matched`` sizing its ``dim`` is searched like diffusers' width.
All three run the preset's dropout, so that each does the same kind of work per step.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from minidiffusion import data, training
from minidiffusion.config import Config, load_config
from minidiffusion.devices import AUTOCAST
from minidiffusion.diffusion import make_schedule
from minidiffusion.diffusion.process import FastEpsModel
from minidiffusion.models.unet import build_model, count_parameters, group_norm

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.jsonl"
MATCH_TOLERANCE = 0.10  # anchors sized by search must be within ±10% of our parameter count


# -- the preset -----------------------------------------------------------------------------------------------------

def image_shape(cfg: Config) -> tuple[int, int]:
    """(channels, side) of the preset's images, from the dataset table (CIFAR-10 need not be on disk)."""
    return data.image_shape(cfg.data)


def load_preset(name: str, overrides: list[str] = ()) -> Config:
    return load_config(name, list(overrides))


# -- the models -----------------------------------------------------------------------------------------------------

@dataclass
class Model:
    """A network behind the one interface every sampler and the loss use: ``net(x_t, t) -> ε̂``."""
    label: str  # "ours", "diffusers", "lucid"
    net: nn.Module
    description: str
    anchor: str | None = None  # None for ours

    @property
    def params(self) -> int:
        return count_parameters(self.net)


class DiffusersEps(nn.Module):
    """diffusers' UNet2DModel returns an output object; the loss and the samplers want the tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


def diffusers_kwargs(cfg: Config, channels: int, side: int, width: int) -> dict:
    """UNet2DModel arguments mirroring our preset's levels at base width ``width``.

    ddpm variant: the layout of google/ddpm-cifar10-32 (its config.json: no head split, eps 1e-6, 'VALID' padded
    downsampling, sin-then-cos embedding shifted by 1), attention at the preset's resolutions. simple variant: one
    ResNet per level (diffusers' up path has one more per level, as for every UNet2DModel), attention in the middle.
    """
    m = cfg.model
    levels = len(m.channel_mults)
    # the preset's model.norm_groups where it divides the width (a matched width may not), else our automatic groups
    groups = m.norm_groups if m.norm_groups and width % m.norm_groups == 0 else group_norm(width).num_groups
    if m.variant == "simple":
        layers, attn_levels = 1, set()
    else:
        layers = m.num_res_blocks
        attn_levels = {i for i in range(levels) if side // 2**i in m.attention_resolutions}
    down = tuple("AttnDownBlock2D" if i in attn_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn_levels else "UpBlock2D" for i in reversed(range(levels)))
    return dict(sample_size=side, in_channels=channels, out_channels=channels,
                block_out_channels=tuple(width * k for k in m.channel_mults), layers_per_block=layers,
                down_block_types=down, up_block_types=up, norm_num_groups=groups, norm_eps=1e-6,
                attention_head_dim=None if m.num_heads == 1 else width // m.num_heads, downsample_padding=0,
                flip_sin_to_cos=False, freq_shift=1, dropout=m.dropout)


def _diffusers_unet(kwargs: dict) -> nn.Module:
    from diffusers import UNet2DModel
    return DiffusersEps(UNet2DModel(**kwargs))


def lucid_kwargs(cfg: Config, channels: int, dim: int) -> dict:
    return dict(dim=dim, dim_mults=tuple(cfg.model.channel_mults), channels=channels, dropout=cfg.model.dropout)


def _lucid_unet(kwargs: dict) -> nn.Module:
    from denoising_diffusion_pytorch import Unet
    return Unet(**kwargs)


def _count_on_meta(build: Callable[[int], nn.Module], width: int) -> int:
    with torch.device("meta"):  # parameter counts without allocating or initialising anything
        return count_parameters(build(width))


def match_width(build: Callable[[int], nn.Module], target: int, widths: range) -> tuple[int, int]:
    """The width whose model's parameter count is nearest ``target`` (relative error): (width, parameters).

    The count grows with the width, so a bisection finds the first width at or above the target; the nearest is
    that one or the one before.
    """
    lo, hi = 0, len(widths) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _count_on_meta(build, widths[mid]) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [(w, _count_on_meta(build, w)) for w in widths[max(lo - 1, 0):lo + 1]]
    return min(candidates, key=lambda wn: abs(wn[1] / target - 1))


def build_models(cfg: Config, anchors: list[str], sizing: str = "auto",
                 seed: int | None = None) -> tuple[list[Model], list[str]]:
    """Our model from the preset and the anchors named (those that import), plus messages about skipped ones.
    With ``seed``, each network's initial weights come from ``torch.manual_seed(seed)`` taken just before it is
    built, so that they do not depend on what ran before in the process.

    sizing: "matched" searches each anchor's width for our parameter count (±10%); "width" gives each anchor our
    base width and channel multipliers; "auto" is "width" for the ddpm variant (where diffusers' model is ours,
    layer for layer) and "matched" for the simple one.
    """
    channels, side = image_shape(cfg)
    if seed is not None:
        torch.manual_seed(seed)
    ours = build_model(cfg.model, channels, side)
    n_ours = count_parameters(ours)
    m = cfg.model
    models = [Model("ours", ours, f"minidiffusion {m.variant} UNet, base {m.base_channels}, mults "
                                  f"{tuple(m.channel_mults)}")]
    if sizing == "auto":
        sizing = "width" if m.variant == "ddpm" else "matched"
    notes = []
    top = 8 * m.base_channels
    for anchor in anchors:
        try:
            if anchor == "diffusers":
                if sizing == "matched":
                    # even widths: GroupNorm takes the most groups that divide them, as ours does
                    w, _ = match_width(lambda w: _diffusers_unet(diffusers_kwargs(cfg, channels, side, w)), n_ours,
                                       range(8, top + 1, 2))
                else:
                    w = m.base_channels
                kwargs = diffusers_kwargs(cfg, channels, side, w)
                if seed is not None:
                    torch.manual_seed(seed)
                net = _diffusers_unet(kwargs)
                desc = (f"diffusers UNet2DModel, block_out_channels {kwargs['block_out_channels']}, "
                        f"layers_per_block {kwargs['layers_per_block']}, {kwargs['down_block_types']}")
            elif anchor == "lucid":
                if sizing == "matched":
                    # steps of 8: lucid's ResNet blocks use GroupNorm(8)
                    w, _ = match_width(lambda w: _lucid_unet(lucid_kwargs(cfg, channels, w)), n_ours,
                                       range(8, top + 1, 8))
                else:
                    w = m.base_channels
                if seed is not None:
                    torch.manual_seed(seed)
                net = _lucid_unet(lucid_kwargs(cfg, channels, w))
                desc = f"denoising_diffusion_pytorch Unet, dim {w}, dim_mults {tuple(m.channel_mults)}"
            else:
                raise ValueError(f"unknown anchor {anchor!r} (diffusers, lucid)")
        except ImportError as e:
            notes.append(f"skipped {anchor}: {e} (see bench/README.md for the setup)")
            continue
        model = Model(anchor, net, desc, anchor=anchor)
        if sizing == "matched" and abs(model.params / n_ours - 1) > MATCH_TOLERANCE:
            notes.append(f"{anchor}: nearest width has {model.params:,} parameters, outside ±10% of ours")
        models.append(model)
    return models, notes


# -- the work being timed -------------------------------------------------------------------------------------------

AMP = AUTOCAST  # the library's own precision -> dtype map


@dataclass
class Settings:
    device: str = "cpu"
    precision: str = "fp32"  # autocast dtype
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False  # sampling only
    compile_mode: str = "default"  # torch.compile's mode ("reduce-overhead": its own CUDA graphs)

    def describe(self) -> str:
        compiled = "compile" + ("" if self.compile_mode == "default" else f" {self.compile_mode}")
        parts = [self.precision, "channels_last" if self.channels_last else None,
                 compiled if self.compile else "eager", "CUDA graph" if self.cuda_graph else None]
        return " ".join(p for p in parts if p)


VARIANTS = ("eager-cl", "eager-contiguous", "compile-cl", "compile-contiguous", "ro-cl", "ro-contiguous")


def variant(ours: Settings, name: str) -> Settings:
    """``ours`` in one of VARIANTS: eager / compiled / compiled with mode reduce-overhead (CUDA graphs), in the
    channels_last or contiguous layout."""
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
    mode, layout = name.split("-")
    return replace(ours, channels_last=layout == "cl", compile=mode != "eager",
                   compile_mode="reduce-overhead" if mode == "ro" else "default")


def write_best(path: Path, contenders: list[Contender]) -> None:
    """The fastest of ``contenders`` as the train.* overrides that make a run take that path, with its img/s."""
    best = max(contenders, key=lambda c: c.median)
    s = best.settings
    path.write_text(json.dumps({"overrides": [f"train.channels_last={str(s.channels_last).lower()}",
                                              f"train.compile={str(s.compile).lower()}",
                                              f"train.compile_mode={s.compile_mode}"],
                                "img_per_s": round(best.median, 1), "settings": s.describe()}) + "\n")
    print(f"fastest of ours: {s.describe()} at {best.median:,.1f} img/s -> {path}")


def anchor_settings(anchor: str, ours: Settings, compile: bool) -> list[Settings]:
    """How an anchor runs: as its users run it (eager), plus diffusers compiled (with --compile) or in our
    channels_last layout when ours uses it, so the comparison is also like for like."""
    rows = [Settings(device=ours.device, precision=ours.precision)]
    if compile and anchor == "diffusers":
        rows.append(Settings(device=ours.device, precision=ours.precision, channels_last=True, compile=True))
    elif ours.channels_last and anchor == "diffusers":
        rows.append(Settings(device=ours.device, precision=ours.precision, channels_last=True))
    return rows


def random_batch(batch: int, channels: int, side: int, device: str, seed: int = 0, channels_last: bool = False,
                 objective=None):
    """A fixed training batch (x0 in [-1, 1], noise levels, noise): the data pipeline is not what is measured. The
    levels are ``objective``'s training draws (timesteps, σ or t), or timesteps 0..999 without one."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, channels, side, side, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (batch,), generator=g) if objective is None else objective.draw(batch, g, "cpu")
    noise = torch.randn(batch, channels, side, side, generator=g)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (x0.to(device).contiguous(memory_format=fmt), t.to(device),
            noise.to(device).contiguous(memory_format=fmt))


class TrainStep(training.TrainStep):
    """The library's own optimizer step (``minidiffusion.training.TrainStep``: autocast forward through the loss,
    backward, clipping, fused AdamW, EMA, the skip decided on the device) for a copy of any ε-network under a
    benchmark's settings, with the preset objective's own loss, or an ε-loss ``loss_fn(net, schedule, x0, t, noise,
    prediction, ...)``. With ``sync`` each step also reads its skip flag back, as the loop did before 2026-12-04 (a
    wait for the GPU)."""

    def __init__(self, net: nn.Module, cfg: Config, settings: Settings, loss_fn: Callable | None = None,
                 sync: bool = False):
        fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
        model = copy.deepcopy(net).to(settings.device, memory_format=fmt).train()
        loss = None
        if loss_fn is not None:
            schedule, prediction = make_schedule(cfg.diffusion), cfg.diffusion.prediction
            gamma = getattr(cfg.diffusion, "min_snr_gamma", 0.0)  # the preset's loss weighting, where it has one
            options = {"min_snr_gamma": gamma} if gamma else {}

            def loss(n, x0, t, noise):
                return loss_fn(n, schedule, x0, t, noise, prediction, **options)
        super().__init__(model, cfg.replace(train={"precision": settings.precision}), settings.device,
                         net=compile_module(model, settings.compile_mode) if settings.compile else None, loss=loss)
        self.step, self.sync = 0, sync

    def __call__(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, step: int | None = None,
                 lr: float | None = None) -> tuple[torch.Tensor, bool]:
        result = super().__call__(x0, t, noise, self.step if step is None else step, lr)
        self.step += 1
        if self.sync:
            bool(result[1])
        return result


def sampling_model(net: nn.Module, settings: Settings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The ε-model a sampler calls, wrapped as ``minidiffusion.sampling.generate`` wraps ours (FastEpsModel)."""
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    net = copy.deepcopy(net).to(settings.device, memory_format=fmt).eval().requires_grad_(False)
    if settings.compile:
        net = compile_module(net)
    return FastEpsModel(net, dtype=AMP[settings.precision], channels_last=settings.channels_last,
                        cuda_graph=settings.cuda_graph)


# -- timing ---------------------------------------------------------------------------------------------------------

def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Contender:
    """One row of a benchmark: a model under some settings, and the unit of work to time."""
    model: Model
    settings: Settings
    run: Callable[[], None]  # one unit of work
    images: int  # images (or image·NFE) per unit
    first_call_s: float = 0.0  # the first unit, timed alone: includes torch.compile / graph capture
    calls: int = 1  # units per turn in a round
    rates: list[float] = field(default_factory=list)  # per round, images per second
    flops_per_image: float | None = None

    @property
    def label(self) -> str:
        return f"{self.model.label} ({self.settings.describe()})"

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def warm_up(contenders: list[Contender], device: str, calls: int) -> list[Contender]:
    """Run each contender's first call (timed: compile, capture, allocator growth) and a few more, untimed.

    Returns the contenders that ran: one that fails (a compiler error on an unfamiliar machine, say) is reported
    and dropped, so that one broken row does not cost the others' measurements.
    """
    ok = []
    for c in contenders:
        try:
            synchronize(device)
            start = time.perf_counter()
            c.run()
            synchronize(device)
            c.first_call_s = time.perf_counter() - start
            for _ in range(calls - 1):
                c.run()
            synchronize(device)
        except Exception as e:  # noqa: BLE001  (any failure of one row)
            print(f"  !! {c.label} failed and is left out: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        ok.append(c)
    return ok


def flops_per_image(fn: Callable[[], None], images: int) -> float:
    """FLOPs of one unit of work by ``torch.utils.flop_counter`` (matmuls, convolutions, attention), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / images


def matmul_peak(device: str, dtype: torch.dtype, n: int | None = None, reps: int = 10) -> float:
    """Measured FLOP/s of a big square matmul in ``dtype``: the denominator of MFU, taken in the same run."""
    n = n or (8192 if device.startswith("cuda") else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


# -- the record -----------------------------------------------------------------------------------------------------

def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu {os.cpu_count()}-core"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], BENCH_DIR.parent)]
                                + sys.argv[1:])


def append_result(record: dict, path: Path = RESULTS) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def comparisons(name: str, contenders: list[Contender], device: str, unit: str, extra: dict) -> list[dict]:
    """One record per anchor row: our fastest row against it (ratio = ours / theirs, higher is better)."""
    ours = max((c for c in contenders if c.model.anchor is None), key=lambda c: c.median)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    records = []
    for c in contenders:
        if c.model.anchor is None:
            continue
        records.append({
            "name": name, "machine": machine(device), "anchor": c.model.anchor,
            "ours": round(ours.median, 2), "theirs": round(c.median, 2), "unit": unit,
            "ratio": round(ours.median / c.median, 3), "ratio_paired": round(paired_ratio(ours, c), 3),
            "date": now, "torch": torch.__version__,
            "command": command_line(),
            "ours_settings": ours.settings.describe(), "theirs_settings": c.settings.describe(),
            "ours_params": ours.model.params, "theirs_params": c.model.params,
            "ours_model": ours.model.description, "theirs_model": c.model.description,
            "cpu": cpu_model() if not device.startswith("cuda") else None,
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), **extra})
    return records


def paired_ratio(ours: Contender, theirs: Contender) -> float:
    """Median over rounds of ours / theirs within the round: the two turns of a round are seconds apart, so a
    change of the machine's load between rounds cancels out (the ratio of medians does not see that pairing)."""
    return statistics.median(o / t for o, t in zip(ours.rates, theirs.rates))


def print_table(title: str, contenders: list[Contender], unit: str, peak: float | None = None) -> None:
    ours = max((c for c in contenders if c.model.anchor is None), key=lambda c: c.median)
    print(f"\n{title}; ours/this: ratio of medians, paired: median of the per-round ratios")
    header = (f"{'model':<58} {'params':>11} {unit + ' (median)':>18} {'min..max':>17} {'ours/this':>9} "
              f"{'paired':>7} {'first call':>10}")
    if peak:
        header += f" {'MFU':>6}"
    print(header)
    print("-" * len(header))
    for c in contenders:
        row = (f"{c.label:<58} {c.model.params:>11,} {c.median:>18,.1f} "
               f"{min(c.rates):>8,.0f}..{max(c.rates):<8,.0f} {ours.median / c.median:>9.2f} "
               f"{paired_ratio(ours, c):>7.2f} {c.first_call_s:>9.1f}s")
        if peak and c.flops_per_image:
            row += f" {c.flops_per_image * c.median / peak:>6.1%}"
        print(row)


def configure_cpu(threads: int | None, flush_denormal: bool) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)


# -- the command line both benchmarks share -------------------------------------------------------------------------

def arguments(description: str, default_batch: dict[str, int | None]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default="quick", help="a preset name or TOML file (read now: its model, data, batch)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", choices=tuple(AMP), help="autocast dtype; default: fp32 on cpu, the preset's on cuda")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="our model in channels_last; default: the preset's train.channels_last")
    p.add_argument("--compile", action="store_true", help="add torch.compile'd rows: ours, and diffusers with "
                                                          "channels_last (the strongest diffusers setting)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager' for smoke runs)")
    p.add_argument("--anchors", default="diffusers,lucid", help="comma-separated: diffusers, lucid ('' for none)")
    p.add_argument("--sizing", default="auto", choices=("auto", "matched", "width"),
                   help="anchor widths: matched = same parameter count ±10%%, width = our base width and "
                        "multipliers, auto = width for the ddpm variant, matched for simple")
    p.add_argument("--batch", type=int, help=f"batch size; default: {default_batch['help']}")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is reported")
    p.add_argument("--round-seconds", type=float, help="target length of one contender's turn in a round "
                                                        "(default 1.0 on cpu, 0.3 on cuda)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before the rounds (the first is timed alone)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.set_flush_denormal on the CPU")
    p.add_argument("--mfu", action=argparse.BooleanOptionalAction, default=None,
                   help="count FLOPs and time a big matmul for MFU (default: on for cuda)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where to append the JSON records")
    p.add_argument("--no-record", action="store_true", help="print only; append nothing")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one short round: checks the code paths, records "
                                                         "nothing unless --results is given")
    return p


SMOKE_OVERRIDES = ["model.base_channels=8", "model.channel_mults=1,2", "model.norm_groups=0"]  # 0: automatic groups


def resolve(args: argparse.Namespace, cfg: Config) -> Settings:
    """Our settings: the preset's, with the command line's overrides, fp32 on the CPU unless asked."""
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to PyTorch")
    precision = args.precision or (cfg.train.precision if cuda else "fp32")
    channels_last = cfg.train.channels_last if args.channels_last is None else args.channels_last
    return Settings(device=args.device, precision=precision, channels_last=channels_last)


def setup(args: argparse.Namespace) -> Config:
    if args.smoke:
        args.set = SMOKE_OVERRIDES + args.set
        args.rounds, args.warmup, args.round_seconds = 2, 1, 0.0
        if args.results == RESULTS:
            args.no_record = True
    if args.device == "cpu":
        configure_cpu(args.threads, args.flush_denormal)
    elif args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    cfg = load_preset(args.preset, args.set)
    if args.compile and args.compile_backend != "inductor":
        global _COMPILE_BACKEND
        _COMPILE_BACKEND = args.compile_backend
    return cfg


_COMPILE_BACKEND = "inductor"


def compile_module(net: nn.Module, mode: str = "default") -> nn.Module:
    if _COMPILE_BACKEND != "inductor":  # smoke runs: the eager backend has no modes
        return torch.compile(net, backend=_COMPILE_BACKEND)
    return torch.compile(net, mode=mode)


def run(args: argparse.Namespace, name: str, unit: str, contenders: list[Contender], models: list[Model],
        notes: list[str], flops: Callable[[Contender], float] | None, peak_dtype: torch.dtype | None) -> list[dict]:
    """Warm up, time interleaved rounds, print the table, append one record per anchor row."""
    device = args.device
    load_before = load_average()
    print(f"{name} | {machine(device)} ({cpu_model() if device == 'cpu' else 'cuda'}) | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')} | "
          f"load average {load_before}")
    for m in models:
        print(f"  {m.label:<10} {m.params:>12,} parameters  {m.description}")
    for note in notes:
        print(f"  note: {note}")
    contenders = warm_up(contenders, device, args.warmup)
    if not any(c.model.anchor is None for c in contenders):
        raise SystemExit("none of our rows ran")
    round_s = args.round_seconds if args.round_seconds is not None else (0.3 if device == "cuda" else 1.0)
    for c in contenders:  # calls per turn so that each turn lasts about round_s: short turns are timer noise
        per_call = max(c.first_call_s if args.warmup == 1 else _time_one(c, device), 1e-6)
        c.calls = max(1, min(500, math.ceil(round_s / per_call)))
    _interleave(contenders, device, args.rounds)
    want_mfu = args.mfu if args.mfu is not None else device == "cuda"
    peak = None
    if want_mfu and flops is not None:
        for c in contenders:
            c.flops_per_image = flops(c)
        peak = matmul_peak(device, peak_dtype or torch.float32)
    load_after = load_average()
    print_table(f"{name}, {unit}, median of {args.rounds} interleaved rounds", contenders, unit, peak)
    if peak:
        print(f"MFU: FLOPs from torch.utils.flop_counter / {peak / 1e12:.2f} TFLOP/s measured "
              f"({peak_dtype or torch.float32} {8192 if device == 'cuda' else 1024}² matmul, this run)")
    print(f"load average before {load_before}, after {load_after}")
    extra = {"load_avg": [load_before, load_after], "rounds": args.rounds,
             "peak_flops": peak, "preset": args.preset, "overrides": args.set}
    records = comparisons(name, contenders, device, unit, extra)
    for r in records:
        theirs = next(c for c in contenders if c.model.anchor == r["anchor"]
                      and c.settings.describe() == r["theirs_settings"])
        r["first_call_s"] = {"ours": round(max(c.first_call_s for c in contenders if c.model.anchor is None), 2),
                             "theirs": round(theirs.first_call_s, 2)}
        if peak and theirs.flops_per_image:
            ours = max((c for c in contenders if c.model.anchor is None), key=lambda c: c.median)
            r["mfu"] = {"ours": round(ours.flops_per_image * ours.median / peak, 4),
                        "theirs": round(theirs.flops_per_image * theirs.median / peak, 4)}
    if not args.no_record:
        for r in records:
            append_result(r, args.results)
        print(f"appended {len(records)} records to {args.results}")
    return records


def _time_one(c: Contender, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    c.run()
    synchronize(device)
    return time.perf_counter() - start


def _interleave(contenders: list[Contender], device: str, rounds: int) -> None:
    """Round r times A's turn, then B's, then C's …; each contender's rate per round is kept."""
    for _ in range(rounds):
        for c in contenders:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(c.calls):
                c.run()
            synchronize(device)
            c.rates.append(c.images * c.calls / (time.perf_counter() - start))
