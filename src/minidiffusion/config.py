"""Configuration: one frozen dataclass per concern, TOML presets, ``section.key=value`` overrides.

A run is fully described by a :class:`Config`. Presets live in ``configs/*.toml`` (also shipped inside the
package, so ``--config quick`` works anywhere); every key is checked: unknown keys, wrong types and
out-of-range values raise :class:`UserError` naming the key and what would have been accepted.
Derived facts (image channels and size) are not configured: they come from the dataset.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .data.registry import DATASETS
from .devices import DEVICE_FORMS, check_device_name
from .diffusion.registry import OBJECTIVES, SAMPLERS
from .errors import UserError


def _opt(default: Any, *, choices: tuple | None = None, min: float | None = None, max: float | None = None,
         min_items: int = 0, help: str = "") -> Any:
    """A dataclass field carrying its validation rules (choices, inclusive bounds, for lists the least number of
    items) and a one-line help."""
    meta = {"choices": choices, "min": min, "max": max, "min_items": min_items, "help": help}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    # The defaults are the mnist preset's network, so that a config with no [model] fits the default data; but
    # norm_groups, added later, defaults to the automatic groups that runs saved before it were trained with.
    variant: str = _opt("ddpm", choices=("ddpm", "simple"), help="UNet: Ho et al. 'ddpm' or the lighter 'simple'")
    base_channels: int = _opt(64, min=8, help="width of the first level; a multiple of 8 (GroupNorm)")
    channel_mults: tuple[int, ...] = _opt((1, 2, 2), min=1, min_items=1,
                                          help="width of each level relative to base_channels")
    num_res_blocks: int = _opt(2, min=1, max=8, help="residual blocks per level (ddpm variant)")
    attention_resolutions: tuple[int, ...] = _opt((14,), min=1, help="feature sizes that get self-attention (ddpm)")
    num_heads: int = _opt(1, min=1, help="attention heads")
    dropout: float = _opt(0.1, min=0.0, max=0.99, help="dropout inside residual blocks")
    norm_groups: int = _opt(0, min=0, help="GroupNorm groups in every layer (32: Ho et al.'s and diffusers' "
                            "UNet2DModel); 0: 32 where a layer has >= 128 channels, else the most groups of >= 4 "
                            "channels")
    patch_size: int = _opt(1, min=1, max=8, help="p > 1: the UNet sees p x p pixel patches as channels "
                                                 "(pixel unshuffle), at 1/p the resolution")


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = _opt("linear", choices=("linear", "cosine"), help="noise schedule")
    num_timesteps: int = _opt(1000, min=2, max=100_000, help="T; timesteps t are 0-based: 0 .. T-1")
    beta_start: float = _opt(1e-4, min=0.0, max=1.0, help="linear schedule: beta at t=0")
    beta_end: float = _opt(0.02, min=0.0, max=1.0, help="linear schedule: beta at t=T-1")
    prediction: str = _opt("eps", choices=("eps", "v"), help="what the network predicts")
    min_snr_gamma: float = _opt(0.0, min=0.0, help="ddpm: loss weight min(SNR, γ)/SNR (Hang et al. 2023); 0 = off")
    objective: str = _opt("ddpm", choices=OBJECTIVES,
                          help="ddpm (Ho et al.), edm (Karras et al. 2022 preconditioning), flow (flow matching)")
    t_sampling: str = _opt("auto", choices=("auto", "uniform", "lognormal", "logit_normal"),
                           help="training noise levels; auto = the objective's own (uniform, lognormal, "
                                "logit_normal)")
    p_mean: float = _opt(-1.2, help="lognormal: mean of ln σ, σ = √((1-ᾱ)/ᾱ) (EDM: -1.2)")
    p_std: float = _opt(1.2, min=1e-3, help="lognormal: standard deviation of ln σ (EDM: 1.2)")
    logit_mean: float = _opt(0.0, help="logit_normal: mean of logit(u), u = σ/(1+σ) the flow time")
    logit_std: float = _opt(1.0, min=1e-3, help="logit_normal: standard deviation of logit(u)")
    uniform_mix: float = _opt(0.0, min=0.0, max=1.0, help="fraction of training levels drawn uniformly instead")
    sigma_data: float = _opt(0.5, min=1e-3, help="edm: standard deviation of the data (images in [-1, 1])")
    sigma_min: float = _opt(0.002, min=1e-5, help="edm: smallest σ sampled")
    sigma_max: float = _opt(80.0, min=1e-3, help="edm: largest σ sampled (the prior is N(0, σ_max²))")


@dataclass(frozen=True)
class DataConfig:
    name: str = _opt("mnist", choices=tuple(DATASETS), help="dataset")
    root: str = _opt("", help="where the files are; '' = the default location for the dataset")
    image_size: int = _opt(0, min=0, max=4096, help="resize to this size; 0 = the dataset's own size")
    channels: int = _opt(0, choices=(0, 1, 3), help="folder only: 1 (grey) or 3 (RGB); 0 = 3")
    flip: str = _opt("auto", choices=("auto", "yes", "no"), help="random horizontal flip; auto = not for digits")
    num_workers: int = _opt(2, min=0, max=64, help="DataLoader workers for streamed (folder) datasets")
    in_memory: str = _opt("auto", choices=("auto", "yes", "no"),
                          help="keep the whole dataset on the device as uint8; auto = when it is small")
    conditional: bool = _opt(False, help="class-conditional: the network learns each class (mnist, cifar10: their "
                             "labels; a folder: one subfolder per class) and `sample --class` draws one")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _opt(0, min=0, help="total optimizer steps; 0 = derive from epochs")
    epochs: float = _opt(0.0, min=0.0, help="used when steps = 0")
    batch_size: int = _opt(128, min=1, help="global batch size (all ranks together)")
    lr: float = _opt(2e-4, min=0.0, max=1.0, help="peak learning rate (AdamW)")
    weight_decay: float = _opt(0.0, min=0.0, help="AdamW weight decay")
    adam_beta2: float = _opt(0.999, min=0.0, max=0.9999, help="AdamW's β2, the decay of its squared-gradient "
                             "average (EDM2 uses 0.99)")
    warmup_steps: int = _opt(5000, min=0, help="linear learning-rate warmup")
    lr_decay: str = _opt("none", choices=("none", "cosine"), help="after warmup: constant or cosine to 0")
    grad_clip: float = _opt(1.0, min=0.0, help="max gradient norm; 0 = off")
    ema_decay: float = _opt(0.9999, min=0.0, max=1.0, help="EMA decay; the effective decay warms up from 0")
    precision: str = _opt("fp32", choices=("fp32", "bf16", "fp16"), help="autocast dtype")
    channels_last: bool = _opt(False, help="channels_last memory format")
    compile: bool = _opt(False, help="torch.compile the model")
    compile_mode: str = _opt("default", choices=("default", "reduce-overhead", "max-autotune",
                                                 "max-autotune-no-cudagraphs"),
                             help="torch.compile's mode with train.compile (reduce-overhead: CUDA graphs)")
    time_limit: float = _opt(0.0, min=0.0, help="seconds of training after which the run ends early, with its "
                                                "final checkpoint and samples; 0 = none (the lr still follows steps)")
    fit_time_limit: bool = _opt(False, help="end the lr schedule within train.time_limit: after a tenth of it, the "
                                "run's length becomes the steps that fit at the measured speed (at most train.steps)")
    seed: int = _opt(0, min=0, max=2**31 - 1, help="all randomness derives from (seed, step, rank)")
    label_dropout: float = _opt(0.1, min=0.0, max=1.0, help="conditional runs: the chance that a training image's "
                                "class is replaced by 'no class', which classifier-free guidance needs (Ho & "
                                "Salimans 2022)")
    device: str = _opt("auto", help=f"{DEVICE_FORMS}; auto = cuda when available")
    log_every: int = _opt(50, min=1, help="steps between metrics.jsonl lines")
    sample_every: int = _opt(0, min=0, help="steps between sample grids; 0 = only at the end")
    checkpoint_every: int = _opt(0, min=0, help="steps between checkpoints; 0 = only at the end")
    keep_checkpoints: int = _opt(3, min=1, help="how many recent checkpoints to keep")
    max_nonfinite: int = _opt(5, min=1, help="consecutive non-finite losses that stop the run")
    eval_every: int = _opt(0, min=0, help="steps between in-training evaluations (classifier features); 0 = off")
    eval_n: int = _opt(500, min=10, help="samples per in-training evaluation")
    log: tuple[str, ...] = _opt(("jsonl",), choices=("jsonl", "tensorboard"), help="where metrics go")


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = _opt("ddim", choices=SAMPLERS, help="sampler (each serves every objective): ddpm, ddim, dpmpp, "
                        "euler, heun")
    steps: int = _opt(50, min=1, help="sampling steps (network evaluations; heun: 2 steps - 1)")
    eta: float = _opt(0.0, min=0.0, max=1.0, help="ddim sampler: 0 = deterministic, 1 = ddpm-like")
    spacing: str = _opt("uniform", choices=("uniform", "quadratic"), help="ddpm objective: the timestep grid "
                        "(quadratic: denser near t = 0)")
    variance: str = _opt("large", choices=("large", "small"),
                         help="ddpm sampler: beta ('large') or posterior ('small')")
    n: int = _opt(64, min=1, help="images to draw (grids during training, default for `sample`)")
    batch_size: int = _opt(256, min=1, help="images per network call")
    rho: float = _opt(7.0, min=1.0, help="edm: the σ grid's spacing exponent ρ (Karras et al. eq. 5)")
    shift: float = _opt(1.0, min=0.01, help="flow: t' = s t / (1 + (s-1) t) on the time grid; > 1 = more steps "
                                            "near noise")
    churn: float = _opt(0.0, min=0.0, help="euler/heun: S_churn, the stochasticity of Karras et al. Alg. 2; 0 = ODE")
    s_noise: float = _opt(1.0, min=0.0, help="euler/heun: S_noise, scale of the noise churn adds")
    s_tmin: float = _opt(0.0, min=0.0, help="euler/heun: churn only at levels (σ or t) >= S_tmin")
    s_tmax: float = _opt(0.0, min=0.0, help="euler/heun: churn only at levels <= S_tmax; 0 = no limit")
    guidance: float = _opt(1.0, min=1.0, help="autoguidance weight w: D = D_guide + w (D - D_guide); 1 = off")
    guide_interval: tuple[float, ...] = _opt((), min=0.0, help="[lo, hi]: guide only at noise levels σ in it "
                                             "(Kynkäänniemi et al. 2024; σ as EDM's: t/(1-t) for flow, "
                                             "√((1-ᾱ)/ᾱ) for ddpm), the model alone elsewhere; [] = everywhere")
    guide_at: float = _opt(0.0, min=0.0, max=0.99, help="training keeps the EMA weights at this fraction of "
                           "train.steps as the guide network (0 = none)")
    guide_step: int = _opt(0, min=0, help="training keeps the EMA weights after this many steps as the guide "
                           "network, whatever train.steps is (0 = none; instead of guide_at)")
    cfg_weight: float = _opt(1.0, min=0.0, help="conditional runs: classifier-free guidance weight w, D = D(no class) "
                             "+ w (D(class) - D(no class)); 1 = plain conditional, 0 = the 'no class' model")
    cfg_interval: tuple[float, ...] = _opt((), min=0.0, help="[lo, hi]: classifier-free guidance only at noise "
                                           "levels σ in it (as sample.guide_interval), the conditional model alone "
                                           "elsewhere; [] = everywhere")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    # -- conversions ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        def plain(section: Any) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}

        return {s.name: plain(getattr(self, s.name)) for s in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "config", saved: bool = False) -> Config:
        """Build and validate a config from nested dicts; missing keys take their defaults. ``saved``: a config a
        run wrote (checkpoint, config.toml), where keys the variant ignores are dropped, not refused (before
        2026-12-02 every key was written)."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a table of sections, got {type(d).__name__}")
        if saved:
            d = _without_ignored(d)
        sections = {s.name: s for s in dataclasses.fields(cls)}
        for name in d:
            if name not in sections:
                raise UserError(f"{where}: unknown section '{name}' (valid: {', '.join(sections)})")
        built = {}
        for name, sfield in sections.items():
            built[name] = _build_section(sfield.default_factory, d.get(name, {}), name, where)  # type: ignore[misc]
        cfg = cls(**built)
        _check_combinations(cfg, where)
        return cfg

    def to_record(self) -> dict[str, dict[str, Any]]:
        """``to_dict`` less the keys the run has no use for (``_ignored``): what config.toml and a checkpoint hold."""
        return {section: {k: v for k, v in values.items() if not self._ignored(section, k)}
                for section, values in self.to_dict().items()}

    def to_toml(self) -> str:
        lines = []
        for section, values in self.to_record().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    def replace(self, **sections: Any) -> Config:
        """``cfg.replace(train={"steps": 10})``: a copy with some keys changed, validated like an override."""
        d = self.to_dict()
        for section, values in sections.items():
            d.setdefault(section, {}).update(values)
        return Config.from_dict(d)

    def _ignored(self, section: str, key: str) -> bool:
        """A key the chosen variant has no use for (left out of config.toml, refused when set): the ddpm UNet's keys
        for the simple one; the conditional keys for an unconditional run, and norm_groups at its automatic 0, so
        that such a run's config.toml (and checkpoint) reads as it did before they existed."""
        if section == "model" and (self.model.variant == "simple" and key in DDPM_ONLY
                                   or key == "norm_groups" and not self.model.norm_groups):
            return True
        return not self.data.conditional and key in CONDITIONAL_ONLY.get(section, ())

    # -- derived ----------------------------------------------------------------------------------------------
    def total_steps(self, dataset_size: int) -> int:
        if self.train.steps:
            return self.train.steps
        if not self.train.epochs:
            raise UserError("train.steps and train.epochs are both 0: set one of them")
        return max(1, math.ceil(self.train.epochs * dataset_size / self.train.batch_size))


DDPM_ONLY = ("num_res_blocks", "attention_resolutions")  # the simple UNet: one block per level, attention mid only
# the keys of class-conditional runs (data.conditional = true), by section
CONDITIONAL_ONLY = {"data": ("conditional",), "train": ("label_dropout",), "sample": ("cfg_weight", "cfg_interval")}


def _without_ignored(d: dict) -> dict:
    model = d.get("model")
    if not isinstance(model, dict) or model.get("variant", ModelConfig.variant) != "simple":
        return d
    return {**d, "model": {k: v for k, v in model.items() if k not in DDPM_ONLY}}


def _check_combinations(cfg: Config, where: str) -> None:
    try:
        check_device_name(cfg.train.device)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    """Keys that are valid alone but not together."""
    d, sample = cfg.diffusion, cfg.sample
    for key in DDPM_ONLY if cfg.model.variant == "simple" else ():
        if getattr(cfg.model, key) != getattr(ModelConfig(), key):
            raise UserError(f"{where}: model.{key} is for the ddpm variant; the simple UNet has one block per level "
                            f"and attention only in the middle (remove the key or set model.variant=ddpm)")
    if not cfg.data.conditional:
        for section, keys in CONDITIONAL_ONLY.items():
            for key in keys:
                if getattr(getattr(cfg, section), key) != getattr(type(getattr(cfg, section))(), key):
                    raise UserError(f"{where}: {section}.{key} is for class-conditional runs: set "
                                    f"data.conditional=true, or remove the key")
    refused = SAMPLERS[sample.sampler].refuses.get(d.objective)
    if refused:
        fits = [n for n, s in SAMPLERS.items() if d.objective not in s.refuses]
        raise UserError(f"{where}: sample.sampler={sample.sampler} does not sample diffusion.objective={d.objective}: "
                        f"{refused} (choose {', '.join(fits)}, e.g. --set sample.sampler="
                        f"{OBJECTIVES[d.objective].default_sampler})")
    OBJECTIVES[d.objective].check(d, where)
    _check_sample(sample, where)
    if cfg.train.fit_time_limit and not cfg.train.time_limit:
        raise UserError(f"{where}: train.fit_time_limit fits the schedule to train.time_limit, which is 0: set "
                        f"train.time_limit (seconds of training) or train.fit_time_limit=false")


def _check_sample(sample: SampleConfig, where: str) -> None:
    """The [sample] keys that are valid alone but not together."""
    for key in ("guide_interval", "cfg_interval"):
        interval = getattr(sample, key)
        if interval and not (len(interval) == 2 and interval[0] < interval[1]):
            raise UserError(f"{where}: sample.{key}={list(interval)} must be two noise levels [lo, hi] with lo < hi, "
                            f"e.g. [0.25, 5.7], or [] to guide everywhere")
    if sample.guide_at and sample.guide_step:
        raise UserError(f"{where}: sample.guide_at={sample.guide_at:g} and sample.guide_step={sample.guide_step} "
                        f"both choose the guide: set one of them to 0")


def replace_sample(sample: SampleConfig, changes: dict[str, Any], where: str = "config") -> SampleConfig:
    """``sample`` with some keys changed (None values: unchanged), validated as a config's [sample] is; a sampler
    that does not fit the objective is refused where the objective is known (``sampling.generate``)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return sample
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(sample).items()}
    built = _build_section(SampleConfig, {**values, **changes}, "sample", where)
    _check_sample(built, where)
    return built


# Keys a resumed run may change freely: how long, how often, where, how fast; not what is learned or how.
RESUMABLE_CHANGES = {
    "train": {"steps", "epochs", "time_limit", "fit_time_limit", "log_every", "sample_every", "checkpoint_every",
              "keep_checkpoints", "eval_every", "eval_n", "log", "device", "compile", "compile_mode", "channels_last",
              "max_nonfinite"},
    "data": {"root", "num_workers", "in_memory"},
    "sample": {f.name for f in dataclasses.fields(SampleConfig)},
}


def config_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """The keys in which ``new`` differs from ``old``, as "section.key: old -> new": (free, significant), free
    being those of RESUMABLE_CHANGES."""
    a, b = old.to_dict(), new.to_dict()
    free, significant = [], []
    for section in b:
        for key, value in b[section].items():
            if a[section].get(key) != value:
                change = f"{section}.{key}: {_toml_value(a[section].get(key))} -> {_toml_value(value)}"
                (free if key in RESUMABLE_CHANGES.get(section, ()) else significant).append(change)
    return free, significant


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _build_section(cls: type, values: Any, section: str, where: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"{where}: [{section}] must be a table, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise UserError(f"{where}: unknown key '{section}.{key}' (valid: {', '.join(fields)})")
        kwargs[key] = _check(f"{section}.{key}", value, hints[key], fields[key].metadata)
    return cls(**kwargs)


def _check(key: str, value: Any, hint: Any, meta: Any) -> Any:
    """Type-check and range-check one value; returns it in its canonical type (tuples, floats)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item_type is not str:
            value = [value]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list of {item_type.__name__}, got {value!r}")
        if len(value) < meta.get("min_items", 0):
            raise UserError(f"{key}: needs at least {meta['min_items']} value(s), got {list(value)!r}")
        return tuple(_check(key, v, item_type, meta) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise UserError(f"{key}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: must be finite, got {value!r}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if meta.get("min") is not None and value < meta["min"]:
        raise UserError(f"{key}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise UserError(f"{key}: {value!r} is above the maximum {meta['max']}")
    return value


# -- presets and overrides -----------------------------------------------------------------------------------

def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("minidiffusion.presets").iterdir()
                  if p.name.endswith(".toml"))


def read_toml(path_or_name: str | Path) -> dict[str, Any]:
    """Read a TOML file, or a shipped preset by name (``quick``, ``cifar10``, ...)."""
    path = Path(path_or_name)
    if path.is_file():
        text, where = _read_text(path), str(path)
    elif path.suffix == "" and str(path_or_name) in preset_names():
        text, where = resources.files("minidiffusion.presets").joinpath(f"{path_or_name}.toml").read_text(), str(path)
    else:
        raise UserError(f"config '{path_or_name}' not found (a TOML file, or a preset: {', '.join(preset_names())})")
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:  # tomllib recurses once per level of [[[...]]] nesting
        raise UserError(f"{where}: not valid TOML: {e}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """``'train.lr=1e-3'`` -> ``('train', 'lr', 0.001)``. Values are TOML literals; bare words are strings."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise UserError(f"--set {text!r}: expected section.key=value, e.g. train.lr=1e-4")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw  # a bare word such as cosine or /data/cifar
    if isinstance(value, str) and "," in value and not raw.startswith(('"', "'")):
        value = [_scalar(v.strip()) for v in value.split(",") if v.strip()]  # 1,2,2 -> [1, 2, 2]
    return section, name, value


def _scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw


def load_config(path_or_name: str | Path | None = None, overrides: list[str] = (), *, saved: bool = False) -> Config:
    """A preset or TOML file plus ``section.key=value`` overrides, validated; ``saved``: the file is a run's own
    config.toml (see :meth:`Config.from_dict`), the overrides are checked as usual."""
    d = read_toml(path_or_name) if path_or_name else {}
    d = _without_ignored(d) if saved else d
    where = str(path_or_name) if path_or_name else "config"
    for text in overrides:
        section, name, value = parse_override(text)
        if not isinstance(d.setdefault(section, {}), dict):
            raise UserError(f"{where}: [{section}] must be a table")
        d[section][name] = value
    return Config.from_dict(d, where=where)
