"""The Python API in two lines: ``model = minidiffusion.load("runs/mnist")``, ``model.sample(16)``; for a
class-conditional run, ``model.classes`` and ``model.sample(16, classes="7")``.

Training from Python uses the same config objects as the command line::

    cfg = minidiffusion.load_config("quick", ["train.steps=500"])   # a preset or TOML file + overrides
    minidiffusion.train(cfg, "runs/quick")                          # returns the final checkpoint's path
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint
from .config import Config, replace_sample
from .diffusion import make_objective
from .errors import UserError
from .models.unet import count_parameters
from .sampling import Options, class_labels, generate, load_guide, load_model, parse_classes


class Model:
    """A trained network with its config and image shape, ready to sample. Made by :func:`load`."""

    def __init__(self, net: nn.Module, config: Config, image_shape: tuple[int, int, int], device: str = "cpu",
                 checkpoint: Checkpoint | None = None, guide: nn.Module | None = None):
        self.net = net  # in eval mode, gradients off
        self.guide = guide  # the autoguidance guide network, when the checkpoint has one (see sample.guide_step)
        self.config = config
        self.image_shape = image_shape  # (C, H, W)
        self.device = device
        self.checkpoint = checkpoint
        self.objective = make_objective(config.diffusion)  # the denoiser and grid the config's diffusion makes
        # a class-conditional network's class names (class k is classes[k]); () for an unconditional one
        self.classes: tuple[str, ...] = checkpoint.classes if checkpoint is not None else ()

    def labels(self, n: int, classes: Any = None) -> torch.Tensor:
        """The class index of each of ``n`` images ``sample(n, classes=classes)`` draws (int64 (n,))."""
        if classes is None:
            return class_labels(n, range(len(self.classes)))
        return class_labels(n, parse_classes(classes, self.classes, "classes"))

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int = 0,
               batch_size: int | None = None, output: str = "uint8", progress: bool = False, classes: Any = None,
               **options: Any) -> torch.Tensor:
        """``n`` images: uint8 (n, C, H, W), or float32 in [-1, 1] with ``output="float"``; on the CPU.

        ``sampler`` ("ddpm", "ddim", "dpmpp", "euler", "heun": each serves every objective) and ``steps``
        default to the config's [sample] section, as the command line's do.

        A class-conditional model (``self.classes``) draws ``classes``: a class name or index, a list of them, or a
        comma-separated string (``"0,3,7"``); the n images are split into one consecutive run per class listed, as
        equal as n allows (n = len(classes): one image each), ``labels(n, classes)`` says which; default every class.

        Image k depends only on (seed, k) and its class: the same for any ``n`` > k and any ``batch_size``
        (default: the config's sample.batch_size). ``options`` are other [sample] keys, e.g. ``eta=1.0``,
        ``variance="small"``, ``guidance=2.0`` (autoguidance with ``self.guide``), ``cfg_weight=2.0``
        (classifier-free guidance).
        """
        if n < 1:
            raise UserError(f"n={n}: draw at least one image")
        sample = replace_sample(self.config.sample, {**options, "sampler": sampler, "steps": steps,
                                                     "batch_size": batch_size})
        if classes is not None and not self.classes:
            parse_classes(classes, self.classes, "classes")  # the one-line refusal
        labels = self.labels(n, classes) if self.classes else None
        return generate(self.net, self.objective, sample, n, seed=seed, shape=self.image_shape, device=self.device,
                        guide=self.guide, labels=labels,
                        options=Options(channels_last=self.config.train.channels_last, output=output,
                                        progress=progress))

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        where = f", step {self.checkpoint.step} of {self.checkpoint.path}" if self.checkpoint else ""
        classes = f", {len(self.classes)} classes" if self.classes else ""
        return (f"Model({self.config.model.variant} UNet, {count_parameters(self.net):,} parameters, "
                f"images {c}x{h}x{w}{classes}, {self.device}{where})")


def train(cfg: Config, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          allow_changes: bool = False) -> Path:
    """Train the model ``cfg`` describes into ``out_dir``; the final checkpoint's JSON path. See
    :func:`minidiffusion.training.train` for ``resume`` and ``allow_changes``; ``train.eval_every`` > 0 scores EMA
    samples with the digit classifier as it goes (:class:`minidiffusion.evaluate.TrainingEvaluator`)."""
    from .evaluate import TrainingEvaluator
    from .training import train as run

    return run(cfg, out_dir, resume=resume, progress=progress, allow_changes=allow_changes,
               evaluator=TrainingEvaluator if cfg.train.eval_every else None)


def load(path: str | Path, *, ema: bool = True, device: str = "cpu", guide: str | Path | None = None) -> Model:
    """The model of a run directory (its newest complete checkpoint) or of one checkpoint file.

    Its autoguidance guide is the checkpoint at ``guide`` (a weaker network of the same data and diffusion), else the
    one the checkpoint carries (trained with sample.guide_step or guide_at), else none.

    ``ema=False`` takes the raw weights instead of their exponential moving average; ``device`` is
    ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (the GPU when there is one).
    """
    from .devices import resolve_device

    device = resolve_device(device, "device")
    net, ckpt = load_model(path, ema=ema, device=device)
    return Model(net, ckpt.config, ckpt.image_shape, device, ckpt, load_guide(ckpt, guide, device=device))
