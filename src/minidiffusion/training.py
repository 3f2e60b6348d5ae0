"""Training: ``train(config, out_dir)`` — one loop, read top to bottom; ``TrainStep`` is one step of it.

Reproducibility by construction: every random draw of step s (batch order, flips, timesteps, noise,
dropout, label dropout) comes from generators seeded with (seed, s), never from state carried between steps. Resuming
from the checkpoint of step s therefore continues exactly as the uninterrupted run would have, and under
torchrun each rank takes its slice of the same global draws, so N ranks × batch b equal 1 rank × batch N·b.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import (
    Checkpoint,
    data_record,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    pack,
    save_checkpoint,
)
from .config import Config, config_changes
from .data import ImageDataset, load_dataset
from .devices import AUTOCAST, resolve_device
from .diffusion import make_objective
from .errors import UserError
from .images import make_class_grid, make_grid, save_png, to_model_range
from .logging_backends import MetricsLogger, require_backends
from .models.unet import build_model, count_parameters
from .rundir import RunLock, atomic_write_bytes
from .sampling import class_labels, generate_sharded, unguided_until

log = logging.getLogger("minidiffusion")
SKIP_LIST = "skipped_files.txt"  # in the run directory: every image file the data loading skipped, one per line


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers (seed, step, purpose...), well spread (splitmix64)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class BatchOrder:
    """Which dataset items form the global batch of step s: epoch e is randperm(n) seeded by (seed, e).

    The permutations are drawn on the CPU and kept on ``device``, so that a step's indices are sliced where the
    images are: no host-to-device copy (and so no wait on the GPU) per step."""

    def __init__(self, n: int, batch_size: int, seed: int, device: str | torch.device = "cpu"):
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._cache[epoch] = torch.randperm(self.n, generator=g).to(self.device)
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        start = step * self.batch_size
        parts, taken = [], 0
        while taken < self.batch_size:  # a batch may run over the end of an epoch into the next
            epoch, offset = divmod(start + taken, self.n)
            part = self._perm(epoch)[offset:offset + self.batch_size - taken]
            parts.append(part)
            taken += len(part)
        return torch.cat(parts)


class StepSampler(torch.utils.data.Sampler):
    """For streamed datasets: yields this rank's item indices for steps start .. end-1."""

    def __init__(self, order: BatchOrder, start: int, end: int, rank_slice: slice):
        self.order, self.start, self.end, self.rank_slice = order, start, end, rank_slice

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            yield self.order.indices(step)[self.rank_slice].tolist()

    def __len__(self) -> int:
        return self.end - self.start


def lr_at(cfg: Config, step: int, total: int, start: int = 0) -> float:
    """Linear warmup to train.lr, then constant or cosine to 0, over the schedule from ``start`` to ``total`` (a run
    trained on past the end of its finished schedule begins a new one where that ended: ``_schedule_start``)."""
    tc = cfg.train
    step, total = step - start, total - start
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_decay == "cosine":
        progress = (step - tc.warmup_steps) / max(1, total - tc.warmup_steps)
        return tc.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return tc.lr


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int, skip: torch.Tensor) -> None:
    """EMA of the weights, in place; the effective decay warms up as min(decay, (1+s)/(10+s)). ``skip``: a bool on
    the device, True to leave the EMA as it is (a skipped step), decided there without a wait."""
    d = min(decay, (1 + step) / (10 + step))
    averages, params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    # ema += (1 - d) (p - ema), the weight 0 on a skipped step: a lerp with a tensor weight would read it on the
    # host (a wait for the GPU, seen in bench/profile_step.py on an H200)
    steps = torch._foreach_sub(params, averages)
    torch._foreach_mul_(steps, (~skip) * (1.0 - d))
    torch._foreach_add_(averages, steps)


@dataclass
class RunState:
    """What a checkpoint restores."""
    step: int = 0
    nonfinite_in_a_row: int = 0
    last_checkpoint: str = "none yet"
    fitted: tuple[int, int] | None = None  # train.fit_time_limit: (the fitted length, the train.steps it came from)
    schedule: tuple[int, int] | None = None  # (start, end) of the learning-rate schedule the run follows


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    mine = model.state_dict()
    problems = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in mine.items()
                if k in state and state[k].shape != v.shape]
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    if problems or missing or extra:
        detail = "; ".join(problems[:3] + [f"missing {k}" for k in missing[:3]]
                           + [f"unexpected {k}" for k in extra[:3]])
        raise UserError(f"{where}: the checkpoint's model does not match this config's model ({detail})")


class TrainStep:
    """One optimizer step: the objective's loss under autocast, backward, gradient clipping, AdamW, EMA. A step whose
    loss (summed over the ranks of ``world``) or gradient is not finite is skipped on every rank alike.

    Nothing in a step waits for the GPU: whether to skip is decided on the device (the fused AdamW takes it as
    ``found_inf``, the EMA as a zero weight) and returned as a bool tensor there, which the loop reads only every
    few steps (``_Window.settle``). ``model`` is trained in place; ``net`` is what the forward pass calls (``model``
    wrapped by DDP or ``torch.compile``; default ``model``). ``loss`` replaces the objective's
    (``(net, x0, t, noise) -> (b,)``).
    """

    def __init__(self, model: nn.Module, cfg: Config, device: str, *, net: nn.Module | None = None,
                 world: distributed.World | None = None, loss=None):
        self.model, self.world = model, world or distributed.World()
        self.net = model if net is None else net  # not `net or model`: that asks a compiled module for its len()
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.objective = make_objective(cfg.diffusion)
        self.loss_fn = loss or self.objective.loss
        self.grad_clip, self.ema_decay = cfg.train.grad_clip or math.inf, cfg.train.ema_decay
        # fused on every device: one kernel for all parameters, and it can skip a step on the device (found_inf)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                           betas=(0.9, cfg.train.adam_beta2), fused=True)
        self.device_type = torch.device(device).type
        self.amp = AUTOCAST[cfg.train.precision]
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=cfg.train.precision == "fp16")

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor | None = None
             ) -> torch.Tensor:
        """The per-example loss (b,) under the run's autocast; ``cond``: the classes (b,) of a conditional run."""
        with torch.autocast(self.device_type, dtype=self.amp, enabled=self.amp is not None):
            if cond is None:
                return self.loss_fn(self.net, x0, t, noise)
            return self.loss_fn(self.net, x0, t, noise, cond)

    def __call__(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, step: int,
                 lr: float | None = None, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step`` at learning rate ``lr`` (None: unchanged), classes ``cond`` for a conditional network ->
        (per-example losses, ``nonfinite``: a bool on the device, True when the step was skipped for a non-finite loss
        or gradient)."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if self.device_type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new step for compile's CUDA graphs (reduce-overhead)
        losses = self.loss(x0, t, noise, cond)
        loss = losses.mean()
        self.scaler.scale(loss).backward()  # under DDP, returns once the gradients are averaged over the ranks
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        # Skipping is decided on the loss summed over the ranks, so that all skip together: a rank that stepped
        # its optimizer or EMA alone would leave the others' weights behind for good.
        nonfinite = ~torch.isfinite(distributed.all_sum(loss.detach(), self.world))
        overflow = ~torch.isfinite(grad_norm)
        if not self.scaler.is_enabled():
            nonfinite |= overflow  # with fp16 an overflow is the scaler's business: skipped, not reported
        skip = nonfinite | overflow
        self.optimizer.found_inf = skip.float()  # read by the fused AdamW, as GradScaler passes it
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.scaler.update()  # with fp16: backs off after an overflow that unscale_ recorded
        ema_update(self.ema, self.model, self.ema_decay, step, skip)
        self.optimizer.zero_grad(set_to_none=True)
        return losses.detach(), nonfinite


def draw_batch(cfg: Config, objective, pixels: torch.Tensor, step: int, rank_slice: slice, flip: bool,
               memory_format: torch.memory_format = torch.contiguous_format):
    """(x0, noise levels, noise) of step ``step`` for this rank's slice ``pixels`` of the global batch: every draw
    from one generator seeded by (train.seed, step), taken for the whole global batch and then sliced."""
    g = torch.Generator(pixels.device).manual_seed(mix_seed(cfg.train.seed, step, 1))
    shape = (cfg.train.batch_size, *pixels.shape[1:])
    t = objective.draw(shape[0], g, pixels.device)[rank_slice]  # timesteps (ddpm), σ (edm), t (flow)
    noise = torch.randn(shape, generator=g, device=pixels.device)[rank_slice]
    x0 = to_model_range(pixels)
    if flip:
        flips = (torch.rand(shape[0], generator=g, device=pixels.device) < 0.5)[rank_slice]
        x0 = torch.where(flips[:, None, None, None], x0.flip(3), x0)
    return x0.contiguous(memory_format=memory_format), t, noise.contiguous(memory_format=memory_format)


def drop_labels(cfg: Config, labels: torch.Tensor, step: int, rank_slice: slice, num_classes: int) -> torch.Tensor:
    """This rank's classes of step ``step``, each replaced by "no class" (index ``num_classes``) with probability
    train.label_dropout (classifier-free guidance's unconditional model learns from those): drawn for the whole global
    batch from a generator seeded by (train.seed, step), then sliced, on the labels' device (no wait for it)."""
    g = torch.Generator(labels.device).manual_seed(mix_seed(cfg.train.seed, step, 3))
    dropped = (torch.rand(cfg.train.batch_size, generator=g, device=labels.device) < cfg.train.label_dropout)
    return torch.where(dropped[rank_slice], num_classes, labels)


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          allow_changes: bool = False, evaluator=None) -> Path:
    """Train the model ``cfg`` describes, writing config, metrics, sample grids and checkpoints to ``out_dir``.

    Returns the path of the final checkpoint's JSON. With ``resume``, continues from the newest complete
    checkpoint in ``out_dir`` (starting fresh, and saying so, when there is none). A resumed ``cfg`` may differ from
    the checkpoint's in how long, how often and where (``config.RESUMABLE_CHANGES``); other differences (learning
    rate, batch, seed, diffusion, data, model) are refused, key by key, unless ``allow_changes``. Whenever config.toml
    changes, the old one is kept as config.step_N.toml.

    ``evaluator(cfg, data, device)`` makes the in-training evaluation (``train.eval_every``), a callable
    ``(ema, step, guide) -> dict`` of metrics; ``minidiffusion.train`` passes ``evaluate.TrainingEvaluator``.
    """
    out = Path(out_dir)
    if cfg.train.eval_every and evaluator is None:
        raise UserError("train.eval_every needs an evaluator: call minidiffusion.train (which brings the digit "
                        "classifier's), or set train.eval_every=0")
    device = resolve_device(cfg.train.device)
    world = distributed.World.from_env()
    if cfg.train.batch_size % world.size:  # checked before joining the group: every rank stops at once, alike
        raise distributed.EveryRankError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the world size {world.size} (it is the "
            f"global batch: each rank takes batch_size / world size)", quiet=not world.is_main)
    world = distributed.init(device)
    device = distributed.local_device(device, world)
    locks: list[RunLock] = []  # rank 0 holds the run directory for the whole run; a second training is refused
    distributed.on_main(lambda: locks.append(RunLock.acquire(out)), world)
    try:
        return _train(cfg, out, world, device, resume, progress, allow_changes, evaluator)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        raise UserError(f"out of memory on {device} while training ({str(e).splitlines()[0][:120]}): lower "
                        f"train.batch_size={cfg.train.batch_size} (the global batch) or the model's width "
                        f"(model.base_channels, model.channel_mults); checkpoints so far are kept") from None
    finally:
        for lock in locks:
            lock.release()


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that failed (CUDA's own error, or the CPU allocator's RuntimeError)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(e) or (
        "not enough memory" in str(e))


def check_memory(cfg: Config, channels: int, size: int, device: str, num_classes: int = 0) -> None:
    """Refuse, before allocating anything, a model whose weights, EMA, gradients and AdamW moments (5 float32 copies)
    alone do not fit in the device's memory: a traceback from the allocator, minutes later, says less."""
    with torch.device("meta"):
        n = count_parameters(build_model(cfg.model, channels, size, num_classes))
    need = 5 * 4 * n
    if device.startswith("cuda"):
        have = torch.cuda.get_device_properties(torch.device(device)).total_memory
    else:
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to check against
            return
    if need > have:
        raise UserError(f"model.base_channels={cfg.model.base_channels} and model.channel_mults="
                        f"{list(cfg.model.channel_mults)} make a network of {n:,} parameters, whose weights, EMA, "
                        f"gradients and optimizer state need {need / 2**30:.1f} GiB, more than the "
                        f"{have / 2**30:.1f} GiB of {device}: make it narrower")


def _train(cfg: Config, out: Path, world: distributed.World, device: str, resume: bool, progress: bool,
           allow_changes: bool, evaluator) -> Path:
    require_backends(cfg.train.log)  # a missing TensorBoard fails now, not after hours of training
    data = distributed.main_first(lambda: load_dataset(cfg.data, "train", labelled=cfg.data.conditional),
                                  world)  # one download per disk
    num_classes = len(data.classes) if cfg.data.conditional else 0
    total = cfg.total_steps(len(data))
    # rank 0 scores EMA samples every eval_every steps (classifier FID against the test split, statistics cached)
    evaluator = evaluator(cfg, data, device) if cfg.train.eval_every and world.is_main else None
    torch.manual_seed(cfg.train.seed)  # initial weights
    check_memory(cfg, data.channels, data.image_size, device, num_classes)
    model = build_model(cfg.model, data.channels, data.image_size, num_classes).to(device)
    step_fn = TrainStep(model, cfg, device, world=world)
    state, guide_step = RunState(), guide_step_of(cfg, total)
    guide = _resume(cfg, out, world, step_fn, state, guide_step, allow_changes, data) if resume else None
    if not resume:
        distributed.on_main(lambda: _refuse_to_overwrite(out), world)
    ended = state.schedule[1] if state.schedule else (state.fitted[0] if state.fitted else None)
    total = _resumed_length(state, total, world)
    if _nothing_to_train(state, total, resume, world):
        return Path(state.last_checkpoint)
    state.schedule = (_schedule_start(cfg, state, ended, total, world), total)
    distributed.on_main(lambda: _write_config(cfg, out, state.step), world)
    data.keep_skip_list(out / SKIP_LIST, write=world.is_main)
    memory_format = _wrap(step_fn, cfg, world, device)
    rank_slice = slice(world.rank * (cfg.train.batch_size // world.size),
                       (world.rank + 1) * (cfg.train.batch_size // world.size))
    batches = _batches(data, cfg, state.step, total, rank_slice, device, labels=bool(num_classes))
    flip = data.flip and cfg.data.flip != "no"
    _log_start(cfg, data, model, device, world, state.step, total)

    logger = MetricsLogger(out, cfg.train.log if world.is_main else (),  # metrics.jsonl, tb/: rank 0 only
                           resumed_at=state.step if resume else None)
    bar = tqdm(total=total, initial=state.step, disable=not (progress and world.is_main), dynamic_ncols=True)
    window, clock = _Window(device), _Clock(cfg, world)
    model.train()
    while state.step < total:
        step = state.step
        pixels, labels = next(batches) if num_classes else (next(batches), None)
        x0, t, noise = draw_batch(cfg, step_fn.objective, pixels, step, rank_slice, flip, memory_format)
        cond = None if labels is None else drop_labels(cfg, labels, step, rank_slice, num_classes)
        torch.manual_seed(mix_seed(cfg.train.seed, step, 2, world.rank))  # dropout
        lr = lr_at(cfg, step, total, state.schedule[0])
        losses, nonfinite = step_fn(x0, t, noise, step, lr, cond)
        window.add(step, losses, step_fn.objective.position(t), nonfinite)
        state.step += 1
        bar.update(1)
        if guide is None and guide_step is not None and state.step <= guide_step and (
                state.step == guide_step or clock.passed(cfg.sample.guide_at * cfg.train.time_limit, state.step)):
            guide = copy.deepcopy(step_fn.ema)  # at its step, or at guide_at of train.time_limit if that comes first
        fitted = clock.fit(state.step, total) if cfg.train.fit_time_limit and state.fitted is None else None
        if fitted is not None:
            state.fitted, state.schedule, bar.total = (fitted, total), (state.schedule[0], fitted), fitted
            if world.is_main:
                log.info("train.fit_time_limit: %d of the %d steps fit in train.time_limit=%gs at this speed; the "
                         "schedule ends at step %d", fitted, total, cfg.train.time_limit, fitted)
            total = fitted

        out_of_time = clock.passed(cfg.train.time_limit, state.step)
        last = state.step == total or out_of_time
        log_now = state.step % cfg.train.log_every == 0 or last
        checkpoint_now = last or bool(cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0)
        if log_now or checkpoint_now:
            _settle(window, state, cfg, world, logger)  # the one read of the steps' skip flags since the last
        if log_now and window.count:
            _log_line(state.step, lr, window, clock, world, logger, bar)
        if checkpoint_now:
            state.last_checkpoint = _save(cfg, out, step_fn, guide, data, state, world)  # before any picture
        if last or (cfg.train.sample_every and state.step % cfg.train.sample_every == 0):
            _draw_grid(cfg, out, step_fn.ema, guide, data, device, world, logger, state.step, bar if last else None)
            model.train()
        if evaluator is not None and state.step % cfg.train.eval_every == 0:
            logger.log({"step": state.step, **evaluator(step_fn.ema, state.step, guide)})
            model.train()
        if out_of_time:
            break
    bar.close()
    logger.close()
    _log_end(cfg, out, state, total, out_of_time, world)
    return Path(state.last_checkpoint)


def _resume(cfg: Config, out: Path, world: distributed.World, step_fn: TrainStep, state: RunState,
            guide_step: int | None, allow_changes: bool, data: ImageDataset) -> nn.Module | None:
    """Restore the newest complete checkpoint of ``out`` (rank 0 chooses, every rank follows); the guide it carries."""
    latest = latest_checkpoint(out) if world.is_main and out.is_dir() else None
    found = distributed.broadcast_object(None if latest is None else (str(latest.path), latest.step), world)
    if found is None:
        distributed.on_main(lambda: _refuse_to_start_over(out), world)
        if world.is_main:
            log.info("--resume: no checkpoint in %s yet, starting a fresh run", out)
        return None
    classes = data.classes if cfg.data.conditional else ()
    guide = distributed.agreed(lambda: restore(latest or _load_for_resume(found[0]), cfg, step_fn, state,
                                               allow_changes, classes), world)
    if world.is_main:
        log.info("resuming from %s (step %d)", *found)
        if guide is None and guide_step is not None and guide_step <= state.step:
            log.warning("the guide's step %d (sample.guide_at/guide_step) is behind the resumed step %d, so this run "
                        "will carry no guide network", guide_step, state.step)
    return guide


def _resumed_length(state: RunState, total: int, world: distributed.World) -> int:
    """The schedule's length: train.steps, or the length a resumed run was fitted to (train.fit_time_limit) while
    train.steps is the one it was fitted from."""
    if state.fitted is None:
        return total
    fitted, fitted_from = state.fitted
    if fitted_from == total:
        return fitted
    if world.is_main:
        log.warning("--resume: the schedule was fitted to the time limit (%d of %d steps); train.steps is now %d, "
                    "which the run follows instead", fitted, fitted_from, total)
    state.fitted = None
    return total


def _schedule_start(cfg: Config, state: RunState, ended: int | None, total: int, world: distributed.World) -> int:
    """Where the learning-rate schedule begins. A run resumed at the end of a finished cosine schedule with more
    steps ("train it longer") gets a new warm-up and decay over the added steps from there (a warm restart, Loshchilov
    & Hutter 2017), not a jump from ~0 back into the middle of a longer cosine. ``ended``: where the checkpoint's
    schedule ended (None for checkpoints from before 2026-12-04 without a fitted length: the old behaviour)."""
    start = state.schedule[0] if state.schedule else 0
    if cfg.train.lr_decay == "cosine" and ended is not None and state.step >= ended and total > state.step:
        start = state.step
        if world.is_main:
            log.info("training on past the finished schedule (step %d): a new warm-up of %d steps and cosine decay "
                     "to step %d", start, cfg.train.warmup_steps, total)
    return start


def _nothing_to_train(state: RunState, total: int, resume: bool, world: distributed.World) -> bool:
    if state.step > total:
        raise distributed.EveryRankError(f"--resume: the checkpoint is at step {state.step}, past this config's "
                                         f"{total} steps: set train.steps above {state.step} to train on",
                                         quiet=not world.is_main)
    if resume and state.step == total:
        if world.is_main:
            log.info("--resume: the run is already complete (step %d of %d): nothing to train; raise train.steps "
                     "to go on", state.step, total)
        return True
    return False


def _wrap(step_fn: TrainStep, cfg: Config, world: distributed.World, device: str) -> torch.memory_format:
    """channels_last, DDP and torch.compile as the config asks; the memory format the batches must take."""
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    step_fn.model.to(memory_format=memory_format)
    net: nn.Module = step_fn.model
    if world.distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[world.local_rank] if device.startswith("cuda")
                                                  else None)
    step_fn.net = torch.compile(net, mode=cfg.train.compile_mode) if cfg.train.compile else net
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its algorithms once, keeps the best
    return memory_format


def _log_start(cfg: Config, data: ImageDataset, model: nn.Module, device: str, world: distributed.World,
               start: int, total: int) -> None:
    if world.is_main:
        log.info("%s: %d images %dx%dx%d | parameters: %s | device %s x%d | %s | global batch %d (%d x %d ranks) "
                 "| steps %d..%d", data.name, len(data), data.channels, data.image_size, data.image_size,
                 f"{count_parameters(model):,}", device, world.size, cfg.train.precision, cfg.train.batch_size,
                 cfg.train.batch_size // world.size, world.size, start, total)


def _settle(window: _Window, state: RunState, cfg: Config, world: distributed.World, logger: MetricsLogger) -> None:
    """Read the skip flags of the steps since the last read (one wait for the device): log each skipped step, and
    stop after train.max_nonfinite in a row. A skipped step changed nothing, so finding it late loses nothing."""
    for step, skipped in window.settle():
        if not skipped:
            state.nonfinite_in_a_row = 0
            continue
        state.nonfinite_in_a_row += 1
        if world.is_main:
            log.warning("step %d: non-finite loss or gradient, step skipped", step)
            logger.log({"step": step, "skipped": "non-finite"})
        if state.nonfinite_in_a_row >= cfg.train.max_nonfinite:
            raise distributed.EveryRankError(
                f"{state.nonfinite_in_a_row} non-finite steps in a row (last at step {step}); last good "
                f"checkpoint: {state.last_checkpoint}", quiet=not world.is_main)


def _log_line(step: int, lr: float, window: _Window, clock: _Clock, world: distributed.World,
              logger: MetricsLogger, bar: tqdm) -> None:
    summary = window.summary(world)  # every rank takes part: the line describes the global batch
    if world.is_main:
        record = {"step": step, **summary, "lr": lr,
                  "img_per_s": window.images * world.size / max(clock.lap(), 1e-9)}
        logger.log(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}")
    else:
        clock.lap()
    window.reset()


def _draw_grid(cfg: Config, out: Path, ema: nn.Module, guide: nn.Module | None, data: ImageDataset, device: str,
               world: distributed.World, logger: MetricsLogger, step: int, bar: tqdm | None) -> None:
    """The grid of cfg.sample.n EMA samples, samples/step_N.png (and the logger's image); ``bar``: the final one."""
    if bar is not None and world.is_main:  # the bar stands at 100%: say what the next minute is for
        bar.close()
        log.info("drawing the final grid: %d samples, %s %d steps", cfg.sample.n, cfg.sample.sampler, cfg.sample.steps)
    conditional = getattr(ema, "num_classes", 0) > 0
    # a row per class (the first sample.n classes, one image each, when there are more)
    labels = class_labels(cfg.sample.n, range(min(cfg.sample.n, len(data.classes)))) if conditional else None
    grid = generate_sharded(ema, make_objective(cfg.diffusion), unguided_until(cfg.sample, guide), cfg.sample.n,
                            seed=cfg.train.seed,
                            shape=(data.channels, data.image_size, data.image_size), device=device, world=world,
                            guide=guide, labels=labels)
    if world.is_main:
        path = out / "samples" / f"step_{step:08d}.png"
        picture = make_class_grid(grid, labels, data.classes) if conditional else make_grid(grid)
        try:
            save_png(picture, path)
        except UserError as e:  # a full disk, a read-only folder: the picture is lost, the run is not
            log.warning("%s; training goes on (the checkpoint is written first)", e)
        logger.image("samples", picture, step)


def _save(cfg: Config, out: Path, step_fn: TrainStep, guide: nn.Module | None, data: ImageDataset,
          state: RunState, world: distributed.World) -> str:
    """Checkpoint ``state.step`` (rank 0 writes; every rank returns once it is on disk): its JSON's path."""
    tensors = pack({"model": step_fn.model, "ema": step_fn.ema, "guide": guide}, step_fn.optimizer)
    # Only rank 0 writes, which is right only while every rank holds the same weights, EMA and optimizer
    # state (DDP averages the gradients; everything after that is deterministic). Cheap to confirm.
    if not distributed.ranks_agree(tensors.values(), world) and world.is_main:
        log.warning("step %d: the ranks hold different weights; the checkpoint has rank 0's (a bug: please "
                    "report it)", state.step)
    write = functools.partial(save_checkpoint, out / "checkpoints", state.step, cfg, tensors,
                              checkpoint_meta(data, state, step_fn), cfg.train.keep_checkpoints)
    return str(distributed.on_main(write, world))


def _log_end(cfg: Config, out: Path, state: RunState, total: int, out_of_time: bool,
             world: distributed.World) -> None:
    if world.is_main:
        early = f" (train.time_limit={cfg.train.time_limit:g}s reached; the schedule had {total})" * out_of_time
        log.info("done: %d steps%s, final checkpoint %s", state.step, early, state.last_checkpoint)
        skipped = ImageDataset.skipped_in(out / SKIP_LIST)
        if skipped:
            log.warning("skipped %d unreadable or huge image file%s in all; the list: %s", len(skipped),
                        "" if len(skipped) == 1 else "s", out / SKIP_LIST)


def guide_step_of(cfg: Config, total: int) -> int | None:
    """The step after which training keeps its EMA as the autoguidance guide: sample.guide_step, else
    sample.guide_at x total steps; None without either."""
    if cfg.sample.guide_step:
        return min(cfg.sample.guide_step, total)
    return max(1, round(cfg.sample.guide_at * total)) if cfg.sample.guide_at else None


FIT_AFTER, FIT_MARGIN = 0.1, 0.98  # train.fit_time_limit: when to measure the speed; the share of the rest to plan


def fitted_length(step: int, rate: float, seconds_left: float, total: int) -> int:
    """The steps done plus those that fit, at ``rate`` steps/s, in FIT_MARGIN of ``seconds_left``; at most ``total``,
    at least one more than ``step``."""
    return max(step + 1, min(total, step + int(rate * max(0.0, seconds_left) * FIT_MARGIN)))


class _Clock:
    """Training time: whether ``seconds`` (train.time_limit, the guide's share of it) have passed since the loop
    began, the schedule that fits in train.time_limit, and the time since the last log line. Under DDP rank 0's
    clock decides, at log steps only (one collective there), so that every rank acts after the same step."""

    now = staticmethod(time.perf_counter)

    def __init__(self, cfg: Config, world: distributed.World):
        self.log_every, self.world, self.time_limit = cfg.train.log_every, world, cfg.train.time_limit
        self.start = self.last = self.now()
        self.mark: tuple[int, float] | None = None  # (step, time) of the first log step: fit() measures from there

    def passed(self, seconds: float, step: int) -> bool:
        if not seconds:
            return False
        if not self.world.distributed:
            return self.now() - self.start >= seconds
        if step % self.log_every:
            return False
        return bool(distributed.broadcast_object(self.now() - self.start >= seconds, self.world))

    def fit(self, step: int, total: int) -> int | None:
        """train.fit_time_limit: at the first log step after a tenth of train.time_limit, the schedule's length that
        ends within it, from the speed since the first log step; None before. Rank 0's clock, at log steps only."""
        if step % self.log_every:
            return None
        fitted = None
        if self.world.is_main:
            now = self.now()
            if self.mark is None:
                self.mark = (step, now)
            elif now - self.start >= FIT_AFTER * self.time_limit and now > self.mark[1]:
                rate = (step - self.mark[0]) / (now - self.mark[1])
                fitted = fitted_length(step, rate, self.time_limit - (now - self.start), total)
        return distributed.broadcast_object(fitted, self.world)

    def lap(self) -> float:
        """Seconds since the last lap (or the start)."""
        now = self.now()
        elapsed, self.last = now - self.last, now
        return elapsed


class _Window:
    """Loss statistics since the last log line, kept on the device, and the steps' skip flags, read only by
    ``settle`` (no wait for the device per step)."""

    def __init__(self, device: str):
        self.device = device
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (step, images, nonfinite) not read yet
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.counts = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.images = 0  # in the steps taken, known once settled

    @property
    def count(self) -> int:
        return self.images

    def add(self, step: int, losses: torch.Tensor, position: torch.Tensor, nonfinite: torch.Tensor) -> None:
        """``position``: each example's noise level between clean (0) and pure noise (1); a ``nonfinite`` step's
        losses are left out."""
        quartile = (position * 4).long().clamp(0, 3)
        taken = (~nonfinite).double()
        self.sums.index_add_(0, quartile, torch.where(nonfinite, 0.0, losses.double()))
        self.counts.index_add_(0, quartile, taken.expand(len(losses)))
        self.pending.append((step, len(losses), nonfinite))

    def settle(self) -> list[tuple[int, bool]]:
        """(step, whether it was skipped) for every step added since the last call, in order: one read."""
        if not self.pending:
            return []
        flags = torch.stack([flag for *_, flag in self.pending]).tolist()
        self.images += sum(images for (_, images, _), skipped in zip(self.pending, flags) if not skipped)
        settled = [(step, bool(skipped)) for (step, *_), skipped in zip(self.pending, flags)]
        self.pending = []
        return settled

    def summary(self, world: distributed.World | None = None) -> dict:
        """Mean loss, overall and per timestep quartile; summed over the ranks of ``world`` (a collective)."""
        world = world or distributed.World()
        sums = distributed.all_sum(self.sums, world).tolist()
        counts = distributed.all_sum(self.counts, world).tolist()
        out = {"loss": sum(sums) / max(sum(counts), 1)}
        for q in range(4):
            out[f"loss_q{q}"] = sums[q] / counts[q] if counts[q] else None
        return out


def _batches(data: ImageDataset, cfg: Config, start: int, total: int, rank_slice: slice,
             device: str, labels: bool = False) -> Iterator:
    """This rank's uint8 batch for each step from ``start``: indexed on the device when the set is in memory. With
    ``labels``, (batch, its int64 classes), the classes taken the same way."""
    if data.tensor is not None:
        images = data.tensor.to(device)
        classes = data.labels.to(device) if labels else None
        order = BatchOrder(len(data), cfg.train.batch_size, cfg.train.seed, device)
        for step in range(start, total):
            indices = order.indices(step)[rank_slice]
            yield (images[indices], classes[indices]) if labels else images[indices]
        return
    order = BatchOrder(len(data), cfg.train.batch_size, cfg.train.seed)
    loader = torch.utils.data.DataLoader(_Labelled(data) if labels else data,
                                         batch_sampler=StepSampler(order, start, total, rank_slice),
                                         num_workers=cfg.data.num_workers, pin_memory=device.startswith("cuda"),
                                         persistent_workers=False)
    for batch in loader:
        if labels:
            yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        else:
            yield batch.to(device, non_blocking=True)


class _Labelled(torch.utils.data.Dataset):
    """A streamed dataset's items with their classes: ``[i]`` is ``data.labelled(i)``, (image, class), which a
    DataLoader collates into (images, int64 classes)."""

    def __init__(self, data: ImageDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.labelled(i)


def _refuse_to_overwrite(out: Path) -> None:
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt_*.json")):
        raise UserError(f"{out} already holds checkpoints: continue it with --resume (train(..., resume=True) in "
                        "Python), or choose another --out")


def _refuse_to_start_over(out: Path) -> None:
    """--resume found checkpoint records but none loads: starting afresh would overwrite them, so stop and say why."""
    if list_checkpoints(out / "checkpoints"):
        try:
            load_checkpoint(out)
        except UserError as e:
            raise UserError(f"--resume: {e}; move the checkpoints away to start afresh") from None


def _write_config(cfg: Config, out: Path, step: int = 0) -> None:
    """config.toml; a different one already there (a resumed run that changed keys) is kept as config.step_N.toml."""
    path = out / "config.toml"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text() != cfg.to_toml():
            os.replace(path, out / f"config.step_{step:08d}.toml")
        atomic_write_bytes(path, cfg.to_toml().encode())
    except OSError as e:
        raise UserError(f"cannot write to output directory {out}: {e.strerror or e}") from None


def _load_for_resume(path: str) -> Checkpoint:
    """The checkpoint rank 0 chose, read by another rank: it must see the same run directory."""
    try:
        return load_checkpoint(path)
    except UserError as e:
        raise UserError(f"{e} (every rank resumes from rank 0's newest checkpoint: all nodes need to see the run "
                        f"directory, e.g. on a shared disk)") from None


def checkpoint_meta(data: ImageDataset, state: RunState, step_fn: TrainStep) -> dict:
    groups = [{k: v for k, v in g.items() if k != "params"} for g in step_fn.optimizer.state_dict()["param_groups"]]
    classes = data.classes if getattr(step_fn.model, "num_classes", 0) else ()  # a conditional network's
    return {"data": data_record(data.name, data.channels, data.image_size, classes),
            "nonfinite_in_a_row": state.nonfinite_in_a_row, "fitted": state.fitted, "schedule": state.schedule,
            "optimizer_groups": groups,
            "scaler": step_fn.scaler.state_dict() if step_fn.scaler.is_enabled() else None,
            "rng": "all randomness of step s derives from (train.seed, s, rank); nothing else to restore"}


def _checked_optimizer_state(ckpt: Checkpoint, params: list[torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """The checkpoint's AdamW state, each moment the shape of its parameter and each step count one number: a state
    that does not fit would fail inside the first step, far from its cause."""
    state = ckpt.optimizer_state()
    for i, entry in state.items():
        if not 0 <= i < len(params):
            raise UserError(f"--resume: {ckpt.path}: optimizer state for parameter {i}, and the model has "
                            f"{len(params)}")
        for name, value in entry.items():
            want = () if name == "step" else tuple(params[i].shape)
            if tuple(value.shape) != want:
                raise UserError(f"--resume: {ckpt.path}: optimizer state '{name}' of parameter {i} has shape "
                                f"{tuple(value.shape)}, not {want} (damaged or edited checkpoint)")
    return state


def restore(ckpt: Checkpoint, cfg: Config, step_fn: TrainStep, state: RunState,
            allow_changes: bool = False, classes: tuple[str, ...] = ()) -> nn.Module | None:
    """Load weights, EMA, optimizer and counters from a checkpoint, checking the model shapes, the config and the
    class names (``classes``: those of the data now) first. Returns the autoguidance guide network the checkpoint
    carries (a copy of the EMA with its weights), or None."""
    model, ema, optimizer, scaler = step_fn.model, step_fn.ema, step_fn.optimizer, step_fn.scaler
    if ckpt.classes and ckpt.classes != tuple(classes):
        raise UserError(f"--resume: {ckpt.path} learned the classes {', '.join(ckpt.classes)}, and the data now has "
                        f"{', '.join(classes) or 'none'}: the network's class k would change meaning")
    for prefix, module in (("model", model), ("ema", ema)):
        _check_shapes(module, ckpt.state_dict(prefix), str(ckpt.path))
    has_guide = ckpt.has("guide")
    if has_guide:
        _check_shapes(ema, ckpt.state_dict("guide"), str(ckpt.path))
    free, significant = config_changes(ckpt.config, cfg)
    if significant and not allow_changes:
        raise UserError(f"--resume: this config differs from the run's ({'; '.join(significant)}): resume without "
                        f"--config to continue the run as it was, or add --allow-changes to train on with them")
    if significant:
        log.warning("--resume --allow-changes: training on with %s (the old config is kept beside config.toml)",
                    "; ".join(significant))
    if free:
        log.info("--resume: %s", "; ".join(free))
    for prefix, module in (("model", model), ("ema", ema)):
        module.load_state_dict(ckpt.state_dict(prefix))
    guide = None
    if has_guide:
        guide = copy.deepcopy(ema)
        guide.load_state_dict(ckpt.state_dict("guide"))
    opt_state = optimizer.state_dict()
    opt_state["state"] = _checked_optimizer_state(ckpt, list(model.parameters()))
    groups = ckpt.meta.get("optimizer_groups")
    if groups:
        for group, saved in zip(opt_state["param_groups"], groups):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()
                          if k in group and k not in ("params", "fused", "foreach")})
    optimizer.load_state_dict(opt_state)
    if scaler.is_enabled() and ckpt.meta.get("scaler"):
        scaler.load_state_dict(ckpt.meta["scaler"])
    state.step = ckpt.step
    state.nonfinite_in_a_row = int(ckpt.meta.get("nonfinite_in_a_row", 0))
    fitted, schedule = ckpt.meta.get("fitted"), ckpt.meta.get("schedule")
    state.fitted = None if fitted is None else (int(fitted[0]), int(fitted[1]))
    state.schedule = None if schedule is None else (int(schedule[0]), int(schedule[1]))
    state.last_checkpoint = str(ckpt.path)
    return guide
