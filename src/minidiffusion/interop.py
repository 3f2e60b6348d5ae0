"""Weights to and from diffusers (the command: ``minidiffusion convert``, cli/convert.py).

Our ``ddpm`` UNet is laid out like diffusers' ``UNet2DModel`` as configured for ``google/ddpm-cifar10-32``
(see ``models/unet.py``), so a conversion is a renaming of tensors plus a translation of configs:

    diffusers UNet2DModel                      minidiffusion [model]
    block_out_channels (128, 256, 256, 256) -> base_channels 128, channel_mults (1, 2, 2, 2)
    layers_per_block 2                      -> num_res_blocks 2
    AttnDownBlock2D at level i              -> attention_resolutions contains sample_size / 2**i
    attention_head_dim d (None: one head)   -> num_heads = width / d, the same at every attention layer
                                               (absent: diffusers' default d = 8; see --num-heads)
    norm_num_groups g                       -> norm_groups g (every GroupNorm)
    DDPMScheduler beta_* / variance_type    -> [diffusion] schedule, [sample] variance

Everything else must have the one value our UNet implements (GroupNorm eps 1e-6, sinusoid without flip
and freq_shift 1, right/bottom-padded downsampling, ...); a config that differs raises :class:`UserError`
naming the key, rather than converting into a network that computes something else. diffusers uses
``norm_num_groups`` groups in every GroupNorm, as ours does with ``model.norm_groups`` set (the mnist and ddpm
presets: 32); a model trained with the automatic groups (``norm_groups = 0``: 32 only where a layer has >= 128
channels) converts only when that gives 32 everywhere. Tensors are read from safetensors (a legacy ``.bin`` only
through ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint import data_record, pack, save_checkpoint
from .config import Config
from .errors import UserError
from .models.unet import Attention, Downsample, ResBlock, UNet, Upsample, build_model
from .rundir import atomic_path, atomic_write_bytes

log = logging.getLogger("minidiffusion")

WEIGHTS = "diffusion_pytorch_model.safetensors"
LEGACY_WEIGHTS = "diffusion_pytorch_model.bin"

# UNet2DModel's constructor defaults (diffusers 0.30 - 0.42): a config.json leaves out keys at their default.
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}
# DDPMScheduler's constructor defaults.
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}
# The values our UNet implements, for the keys that have no counterpart in ModelConfig.
FIXED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 1, "flip_sin_to_cos": False,
    "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1, "downsample_padding": 0,
    "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu", "norm_eps": 1e-6,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
}
VARIANCE_TO_OURS = {"fixed_large": "large", "fixed_large_log": "large", "fixed_small": "small",
                    "fixed_small_log": "small"}
PREDICTION_TO_OURS = {"epsilon": "eps", "v_prediction": "v"}
SCHEDULE_TO_OURS = {"linear": "linear", "squaredcos_cap_v2": "cosine"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# -- configs --------------------------------------------------------------------------------------------------

def _unsupported(key: str, value: Any, need: Any) -> UserError:
    return UserError(f"diffusers config: {key}={json.dumps(value)} is not supported (minidiffusion's UNet "
                     f"implements {key}={json.dumps(need)})")


def model_from_diffusers(unet: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """A UNet2DModel config -> (our [model] section, image channels, image size). Raises for what we can't build."""
    c = {**UNET_DEFAULTS, **{k: v for k, v in unet.items() if not k.startswith("_")}}
    if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(f"diffusers config: _class_name={unet['_class_name']!r}: only UNet2DModel converts")
    unknown = sorted(set(c) - set(UNET_DEFAULTS))
    if unknown:
        log.warning("diffusers config: ignoring keys this converter does not know: %s", ", ".join(unknown))
    for key, need in FIXED.items():
        value = c[key]
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, need))
        if not (value == need or numbers and math.isclose(value, need, rel_tol=1e-6)):
            raise _unsupported(key, value, need)

    channels = c["in_channels"]
    if channels != c["out_channels"] or channels not in (1, 3):
        raise UserError(f"diffusers config: in_channels={channels}, out_channels={c['out_channels']}: minidiffusion "
                        f"models predict noise for 1- or 3-channel images (in = out)")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise UserError(f"diffusers config: sample_size={size}: only square images are supported")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise UserError(f"diffusers config: sample_size={size!r}: need the image side as an integer")

    widths, down, up = list(c["block_out_channels"]), list(c["down_block_types"]), list(c["up_block_types"])
    if not (len(widths) == len(down) == len(up)) or not widths:
        raise UserError("diffusers config: block_out_channels, down_block_types and up_block_types differ in length")
    for key, kinds, plain, attn in (("down_block_types", down, "DownBlock2D", "AttnDownBlock2D"),
                                    ("up_block_types", up, "UpBlock2D", "AttnUpBlock2D")):
        for kind in kinds:
            if kind not in (plain, attn):
                raise UserError(f"diffusers config: {key} contains {kind!r}; minidiffusion's UNet is built from "
                                f"{plain} and {attn} only")
    attn_levels = [i for i, kind in enumerate(down) if kind == "AttnDownBlock2D"]
    if [i for i, kind in enumerate(reversed(up)) if kind == "AttnUpBlock2D"] != attn_levels:
        raise UserError(f"diffusers config: up_block_types {up} do not mirror down_block_types {down} "
                        f"(minidiffusion puts attention at the same resolutions on the way down and up)")
    base = widths[0]
    if any(w % base for w in widths) or base % 8:
        raise UserError(f"diffusers config: block_out_channels={widths}: minidiffusion needs every width a "
                        f"multiple of the first, which must be a multiple of 8")
    if c["time_embedding_dim"] not in (None, 4 * base):
        raise _unsupported("time_embedding_dim", c["time_embedding_dim"], 4 * base)

    # attention_head_dim is per head, so diffusers' head count follows each layer's width; ours is one number.
    head_dim = c["attention_head_dim"]
    attention_widths = sorted({widths[i] for i in attn_levels} | {widths[-1]})  # + the middle block
    if head_dim is None:
        num_heads = 1
    else:
        heads = {w // head_dim for w in attention_widths}
        if any(w % head_dim for w in attention_widths) or len(heads) != 1:
            raise UserError(f"diffusers config: attention_head_dim={head_dim} gives a different number of heads "
                            f"for attention widths {attention_widths}; minidiffusion uses one head count throughout")
        num_heads = heads.pop()
    n_embeds = c["num_class_embeds"]
    if n_embeds is not None and (not isinstance(n_embeds, int) or n_embeds < 2):
        raise UserError(f"diffusers config: num_class_embeds={n_embeds!r}: need the classes plus one 'no class' entry")
    model = {"variant": "ddpm", "base_channels": base, "channel_mults": [w // base for w in widths],
             "num_res_blocks": c["layers_per_block"],
             "attention_resolutions": [size // 2**i for i in attn_levels], "num_heads": num_heads,
             "dropout": float(c["dropout"]), "norm_groups": c["norm_num_groups"]}
    return model, channels, size


def diffusion_from_scheduler(scheduler: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DDPMScheduler config -> our ([diffusion], [sample]) sections. Raises for schedules we don't have."""
    s = {**SCHEDULER_DEFAULTS, **{k: v for k, v in scheduler.items() if not k.startswith("_")}}
    if s["trained_betas"] is not None:
        raise UserError("diffusers scheduler: trained_betas (an explicit beta list) is not supported")
    if s["beta_schedule"] not in SCHEDULE_TO_OURS:
        raise UserError(f"diffusers scheduler: beta_schedule={s['beta_schedule']!r} is not supported "
                        f"(minidiffusion has: {', '.join(SCHEDULE_TO_OURS)})")
    if s["prediction_type"] not in PREDICTION_TO_OURS:
        raise UserError(f"diffusers scheduler: prediction_type={s['prediction_type']!r} is not supported "
                        f"(minidiffusion has: {', '.join(PREDICTION_TO_OURS)})")
    if s["variance_type"] not in VARIANCE_TO_OURS:
        raise UserError(f"diffusers scheduler: variance_type={s['variance_type']!r} is not supported (learned "
                        f"variances need a network with twice the output channels)")
    if s["rescale_betas_zero_snr"]:
        raise UserError("diffusers scheduler: rescale_betas_zero_snr=true is not supported")
    if not s["clip_sample"] or s["clip_sample_range"] != 1.0 or s["thresholding"]:
        log.warning("diffusers scheduler: clip_sample=%s, clip_sample_range=%s, thresholding=%s; minidiffusion's "
                    "samplers always clip the x0 estimate to [-1, 1]", s["clip_sample"], s["clip_sample_range"],
                    s["thresholding"])
    diffusion = {"schedule": SCHEDULE_TO_OURS[s["beta_schedule"]], "num_timesteps": s["num_train_timesteps"],
                 "beta_start": float(s["beta_start"]), "beta_end": float(s["beta_end"]),
                 "prediction": PREDICTION_TO_OURS[s["prediction_type"]]}
    return diffusion, {"variance": VARIANCE_TO_OURS[s["variance_type"]]}


def config_from_diffusers(unet: dict[str, Any], scheduler: dict[str, Any] | None = None) -> tuple[Config, int, int]:
    """(Config, image channels, image size) for a UNet2DModel config and, optionally, a DDPMScheduler config."""
    model, channels, size = model_from_diffusers(unet)
    diffusion, sample = diffusion_from_scheduler(scheduler or {})
    if (channels, size) == (3, 32):
        data = {"name": "cifar10"}
    elif (channels, size) == (1, 28):
        data = {"name": "mnist"}
    else:
        data = {"name": "folder", "channels": channels, "image_size": size}
    if classes_from_diffusers(unet):
        data["conditional"] = True
    return Config().replace(model=model, diffusion=diffusion, sample=sample, data=data), channels, size


def classes_from_diffusers(unet: dict[str, Any]) -> tuple[str, ...]:
    """The class names of a UNet2DModel with num_class_embeds (ours write them as "_class_names"; otherwise the
    classes are named by their index); () without a class embedding. Its last entry is our "no class"."""
    n = unet.get("num_class_embeds")
    if not n:
        return ()
    names = unet.get("_class_names")
    if not (isinstance(names, list) and len(names) == n - 1 and all(isinstance(x, str) for x in names)):
        names = [str(k) for k in range(n - 1)]
    return tuple(names)


CONVERTIBLE = "the ddpm-variant presets: mnist, mnist-flow, cifar10, cifar10-flow"


def _ddpm_scheduler(cfg: Config) -> dict[str, Any]:
    """DDPMScheduler with timestep_spacing "linspace": it visits our uniform grid (rounded linspace(0, T-1))."""
    d = cfg.diffusion
    if cfg.sample.spacing != "uniform":
        log.warning("sample.spacing=%s has no diffusers counterpart: the pipeline uses 'linspace' (our uniform)",
                    cfg.sample.spacing)
    schedule = {v: k for k, v in SCHEDULE_TO_OURS.items()}[d.schedule]
    return {**SCHEDULER_DEFAULTS, "_class_name": "DDPMScheduler", **_version(),
            "num_train_timesteps": d.num_timesteps, "beta_start": d.beta_start, "beta_end": d.beta_end,
            "beta_schedule": schedule, "variance_type": f"fixed_{cfg.sample.variance}", "clip_sample": True,
            "prediction_type": {v: k for k, v in PREDICTION_TO_OURS.items()}[d.prediction],
            "timestep_spacing": "linspace"}


def _flow_scheduler(cfg: Config) -> dict[str, Any]:
    """FlowMatchEulerDiscreteScheduler: its model input 1000 σ and its Euler step on dx/dσ = v are ours. Its default
    grid runs from 1 to σ_min = 1/1000; shift_terminal = 1/sample.steps stretches it onto ours (N + 1 times from 1 to
    0), so that ``DDPMPipeline(num_inference_steps=sample.steps)`` takes our ``euler`` steps."""
    if cfg.sample.shift != 1:
        raise UserError(f"sample.shift={cfg.sample.shift:g}: diffusers shifts its grid before stretching it to its "
                        f"end, we shift ours after: only sample.shift=1 converts step for step")
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", **_version(), "num_train_timesteps": 1000,
            "shift": 1.0, "use_dynamic_shifting": False, "shift_terminal": 1.0 / cfg.sample.steps,
            "invert_sigmas": False, "stochastic_sampling": False, "use_karras_sigmas": False,
            "use_exponential_sigmas": False, "use_beta_sigmas": False, "time_shift_type": "exponential"}


# diffusion.objective -> the diffusers scheduler that samples it as trained; an objective missing here is refused
SCHEDULERS = {"ddpm": _ddpm_scheduler, "flow": _flow_scheduler}
NO_SCHEDULER = {"edm": "diffusers' EDMEulerScheduler feeds the network ln(σ)/4, ours was trained on 250 ln σ (the "
                       "1000x scale of its timestep embedding)"}


def scheduler_to_diffusers(cfg: Config) -> dict[str, Any]:
    """The diffusers scheduler config that samples ``cfg``'s objective the way our default grid does."""
    objective = cfg.diffusion.objective
    if objective not in SCHEDULERS:
        why = NO_SCHEDULER.get(objective, "diffusers has no scheduler for it")
        raise UserError(f"diffusion.objective={objective}: {why}; ddpm and flow checkpoints convert")
    return SCHEDULERS[objective](cfg)


def config_to_diffusers(cfg: Config, channels: int, image_size: int,
                        classes: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(UNet2DModel config, scheduler config) for our config and image shape (and a conditional network's class
    names: ``num_class_embeds`` = classes + "no class", the names kept as "_class_names"). Every key is written."""
    m = cfg.model
    scheduler = scheduler_to_diffusers(cfg)
    if m.variant != "ddpm":
        raise UserError(f"model.variant={m.variant!r}: only the 'ddpm' UNet has a diffusers counterpart "
                        f"({CONVERTIBLE})")
    if m.patch_size != 1:
        raise UserError(f"model.patch_size={m.patch_size}: diffusers' UNet2DModel has no patch input "
                        f"({CONVERTIBLE} convert)")
    widths = [m.base_channels * k for k in m.channel_mults]
    sizes = [image_size // 2**i for i in range(len(widths))]
    attn_levels = [i for i, s in enumerate(sizes) if s in m.attention_resolutions]
    attention_widths = sorted({widths[i] for i in attn_levels} | {widths[-1]})
    head_dims = {w // m.num_heads for w in attention_widths}
    if m.num_heads == 1:
        head_dim = None  # diffusers: one head as wide as the layer
    elif len(head_dims) == 1:
        head_dim = head_dims.pop()
    else:
        raise UserError(f"model.num_heads={m.num_heads} gives heads of different widths for attention widths "
                        f"{attention_widths}; diffusers' attention_head_dim needs one head width throughout")
    down = ["AttnDownBlock2D" if i in attn_levels else "DownBlock2D" for i in range(len(widths))]
    up = ["AttnUpBlock2D" if kind == "AttnDownBlock2D" else "UpBlock2D" for kind in reversed(down)]
    unet = {"_class_name": "UNet2DModel", **_version(), "sample_size": image_size, "in_channels": channels,
            "out_channels": channels, "block_out_channels": widths, "layers_per_block": m.num_res_blocks,
            "down_block_types": down, "up_block_types": up, "attention_head_dim": head_dim,
            "dropout": m.dropout, "norm_num_groups": m.norm_groups or 32, "attn_norm_num_groups": None,
            "time_embedding_dim": None,
            "num_train_timesteps": None, **FIXED, "num_class_embeds": len(classes) + 1 if classes else None}
    if classes:
        unet["_class_names"] = list(classes)
    return unet, scheduler


def _version() -> dict[str, str]:
    """``_diffusers_version`` of the installed diffusers (informational only; left out when it isn't installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"_diffusers_version": version("diffusers")}
    except PackageNotFoundError:
        return {}


def check_groups(net: nn.Module, groups: int, attn_groups: int | None = None) -> None:
    """Every GroupNorm of ``net`` must have ``groups`` groups (attention norms: ``attn_groups``), as diffusers'."""
    for name, module in net.named_modules():
        if isinstance(module, nn.GroupNorm):
            want = attn_groups if attn_groups is not None and name.endswith(".norm") else groups
            if module.num_groups != want:
                raise UserError(f"norm_num_groups={want}, but minidiffusion's UNet normalizes the "
                                f"{module.num_channels} channels of {name} in {module.num_groups} groups: such a "
                                f"model has no exact counterpart (train with model.norm_groups={want}, as "
                                f"{CONVERTIBLE} do)")


# -- tensor names -------------------------------------------------------------------------------------------

_RESBLOCK = {"norm1": "norm1", "conv1": "conv1", "emb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
             "skip": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
# diffusers < 0.15 stored attention as query/key/value/proj_attn (google/ddpm-* weights still do).
_DEPRECATED = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def diffusers_names(net: UNet) -> dict[str, str]:
    """Our state-dict key -> the key of the same tensor in diffusers' UNet2DModel."""
    blocks: dict[str, tuple[str, dict[str, str]]] = {
        "conv_in": ("conv_in", {}), "time_embed.mlp.0": ("time_embedding.linear_1", {}),
        "time_embed.mlp.2": ("time_embedding.linear_2", {}), "norm_out": ("conv_norm_out", {}),
        "conv_out": ("conv_out", {}), "mid.0": ("mid_block.resnets.0", _RESBLOCK),
        "mid.1": ("mid_block.attentions.0", _ATTENTION), "mid.2": ("mid_block.resnets.1", _RESBLOCK),
        "time_embed.class_embed": ("class_embedding", {})}  # a conditional network's (added to the time embedding)
    # Our down/up paths are flat lists of [ResBlock, Attention?] entries and resampling layers; diffusers
    # groups them per level (down_blocks.L.resnets.J, .attentions.J, .downsamplers.0).
    for path, theirs, resample, resampler in (("down", "down_blocks", Downsample, "downsamplers"),
                                              ("up", "up_blocks", Upsample, "upsamplers")):
        level, j = 0, 0
        for i, layer in enumerate(getattr(net, path)):
            if isinstance(layer, resample):
                blocks[f"{path}.{i}.conv"] = (f"{theirs}.{level}.{resampler}.0.conv", {})
                level, j = level + 1, 0
                continue
            for k, sub in enumerate(layer):
                kind, renames = ("resnets", _RESBLOCK) if isinstance(sub, ResBlock) else ("attentions", _ATTENTION)
                assert isinstance(sub, (ResBlock, Attention))
                blocks[f"{path}.{i}.{k}"] = (f"{theirs}.{level}.{kind}.{j}", renames)
            j += 1
    names = {}
    for key in net.state_dict():
        module, param = key.rsplit(".", 1)
        if module in blocks:
            names[key] = f"{blocks[module][0]}.{param}"
        else:
            block, leaf = module.rsplit(".", 1)
            prefix, renames = blocks[block]
            names[key] = f"{prefix}.{renames[leaf]}.{param}"
    return names


def _modern_name(key: str) -> str:
    module, _, param = key.rpartition(".")
    block, _, leaf = module.rpartition(".")
    if ".attentions." in key and leaf in _DEPRECATED:
        return f"{block}.{_DEPRECATED[leaf]}.{param}"
    return key


def state_dict_from_diffusers(net: UNet, theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their UNet2DModel tensors -> a state dict for ``net`` (float32), checking names and shapes."""
    theirs = {_modern_name(k): v for k, v in theirs.items()}
    names = diffusers_names(net)
    mine = net.state_dict()
    missing = [t for t in names.values() if t not in theirs]
    extra = sorted(set(theirs) - set(names.values()))
    wrong = [f"{t} {tuple(theirs[t].shape)} vs {tuple(mine[o].shape)}" for o, t in names.items()
             if t in theirs and theirs[t].shape != mine[o].shape]
    if missing or extra or wrong:
        detail = "; ".join([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in extra[:3]] + wrong[:3])
        raise UserError(f"diffusers weights do not fit the UNet their config describes ({detail})")
    return {o: theirs[t].to(torch.float32) for o, t in names.items()}


def state_dict_to_diffusers(net: UNet, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors (a state dict of ``net``'s architecture) under diffusers' UNet2DModel names."""
    return {t: ours[o].detach().contiguous() for o, t in diffusers_names(net).items()}


# -- files ----------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def find_diffusers_files(root: Path) -> tuple[Path, Path | None]:
    """(UNet folder, scheduler config or None) of a pipeline folder, a flat repo, or a UNet folder itself."""
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (unet_dir / "config.json").is_file():
        raise UserError(f"{root}: no diffusers UNet here (expected unet/config.json or config.json)")
    for candidate in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json",
                      unet_dir.parent / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return unet_dir, candidate
    return unet_dir, None


def load_diffusers_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    """The UNet's tensors: safetensors, or a legacy pickle read with ``weights_only=True`` (no code runs)."""
    path = unet_dir / WEIGHTS
    try:
        if path.is_file():
            return load_file(str(path))
        if (unet_dir / LEGACY_WEIGHTS).is_file():
            return torch.load(unet_dir / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise UserError(f"{unet_dir}: cannot read the weights ({str(e).splitlines()[0]})") from None
    sharded = sorted(p.name for p in unet_dir.glob("diffusion_pytorch_model*"))
    raise UserError(f"{unet_dir}: no {WEIGHTS} (found: {', '.join(sharded) or 'nothing'}; sharded and variant "
                    f"files are not supported)")


def _download(repo_id: str) -> Path:
    """A Hub repo's JSON and safetensors files in the local Hugging Face cache, or a one-line UserError."""
    folder = repo_id.split("/")[-1]
    how = (f"download it first with `hf download {repo_id} --local-dir {folder}` (pip install huggingface_hub) "
           f"and pass --from-diffusers {folder}")
    if os.environ.get("MINIDIFFUSION_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"{repo_id} is not a local folder and downloads are off (offline); {how}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"{repo_id} is not a local folder and huggingface_hub is not installed; {how}") from None
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
        if not any(path.rglob(WEIGHTS)):  # an old repo with pickled weights only
            path = Path(snapshot_download(repo_id, allow_patterns=["*.json", LEGACY_WEIGHTS, f"*/{LEGACY_WEIGHTS}"]))
    except Exception as e:  # noqa: BLE001  (network, authentication, missing repo: all end the same way)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot download {repo_id} from the Hugging Face Hub ({reason}); {how}") from None
    return path


def from_diffusers(source: str | Path, out_dir: str | Path, *, num_heads: int | None = None) -> Path:
    """Convert a diffusers UNet2DModel (+ DDPMScheduler) into a minidiffusion run directory; returns the checkpoint.

    ``source`` is a local folder (a DDPMPipeline, a flat repo such as google/ddpm-cifar10-32, or a UNet folder)
    or a Hub id, downloaded when huggingface_hub and the network are available. ``num_heads`` runs the weights
    with that many attention heads instead of the number diffusers would use (the tensors are the same).
    """
    out = Path(out_dir)
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("ckpt_*.json")):
        raise UserError(f"{out} already holds checkpoints: choose another --out")
    root = Path(source)
    if not root.exists():
        if not _HUB_ID.match(str(source)):
            raise UserError(f"--from-diffusers {source}: no such folder")
        root = _download(str(source))
    unet_dir, scheduler_path = find_diffusers_files(root)
    unet_cfg = _read_json(unet_dir / "config.json")
    scheduler_cfg = _read_json(scheduler_path) if scheduler_path else None
    if scheduler_cfg is None:
        log.info("%s: no scheduler_config.json, using minidiffusion's default schedule (linear, T=1000)", root)
    cfg, channels, size = config_from_diffusers(unet_cfg, scheduler_cfg)
    if num_heads is not None:
        cfg = cfg.replace(model={"num_heads": num_heads})
    elif "attention_head_dim" not in unet_cfg and cfg.model.num_heads > 1:
        # google/ddpm-* configs predate the key, so diffusers runs their attention with its default heads of 8
        # channels, while Ho et al. trained these weights with one head (diffusion_tf's attn_block).
        log.warning("%s has no attention_head_dim: converted like diffusers runs it, with %d heads of 8 channels; "
                    "weights from the original DDPM code were trained with one head (--num-heads 1)",
                    unet_dir / "config.json", cfg.model.num_heads)
    classes = classes_from_diffusers(unet_cfg)
    net = build_model(cfg.model, channels, size, len(classes))
    check_groups(net, unet_cfg.get("norm_num_groups", UNET_DEFAULTS["norm_num_groups"]),
                 unet_cfg.get("attn_norm_num_groups"))
    state = state_dict_from_diffusers(net, load_diffusers_weights(unet_dir))

    # Both the weights and their EMA are the converted tensors; no optimizer state: a normal step-0 checkpoint.
    net.load_state_dict(state)
    tensors = pack({"model": net, "ema": copy.deepcopy(net)})  # safetensors refuses shared storage
    meta = {"data": data_record(cfg.data.name, channels, size, classes),
            "source": {"diffusers": str(source), "unet_config": unet_cfg, "scheduler_config": scheduler_cfg,
                       "num_heads": num_heads}}
    path = save_checkpoint(out / "checkpoints", 0, cfg, tensors, meta)
    try:
        atomic_write_bytes(out / "config.toml", cfg.to_toml().encode())
    except OSError as e:
        raise UserError(f"cannot write {out / 'config.toml'}: {e.strerror or e}") from None
    return path


def to_diffusers(checkpoint: str | Path, out_dir: str | Path, *, ema: bool = True) -> Path:
    """Write a checkpoint as a diffusers DDPMPipeline folder (model_index.json, unet/, scheduler/); returns it."""
    from .sampling import load_model

    net, ckpt = load_model(checkpoint, ema=ema)
    channels, size, _ = ckpt.image_shape
    unet_cfg, scheduler_cfg = config_to_diffusers(ckpt.config, channels, size, ckpt.classes)
    check_groups(net, unet_cfg["norm_num_groups"])
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder")
    pipeline = {"_class_name": "DDPMPipeline", **_version(), "scheduler": ["diffusers", scheduler_cfg["_class_name"]],
                "unet": ["diffusers", "UNet2DModel"]}
    try:
        for path, data in ((out / "model_index.json", pipeline), (out / "unet" / "config.json", unet_cfg),
                           (out / "scheduler" / "scheduler_config.json", scheduler_cfg)):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
        tensors = state_dict_to_diffusers(net, net.state_dict())
        with atomic_path(out / "unet" / WEIGHTS) as tmp:  # a failed write leaves no truncated weights behind
            save_file(tensors, str(tmp), metadata={"format": "pt"})
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    return out
