"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically. No pickle anywhere.

A checkpoint is a pair ``ckpt_STEP.safetensors`` + ``ckpt_STEP.json`` in ``RUN/checkpoints/``. The JSON is
written last and records the SHA-256 of the tensor file, so a checkpoint is complete exactly when its
JSON exists and the hash matches: a crash at any moment leaves either the previous checkpoints alone or
a new complete one, never a torn one that looks valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Config, DataConfig
from .data.registry import DATASETS
from .errors import UserError
from .models.unet import build_model
from .rundir import atomic_write_bytes, fsync_dir

FORMAT = "minidiffusion-checkpoint"
# 1: unconditional networks; 2: class-conditional ones (data.classes), which a reader of version 1 refuses in one line
# instead of failing on the class embedding. An unconditional checkpoint is still written as version 1.
VERSION = 2
_NAME = re.compile(r"^ckpt_(\d+)\.json$")
MAX_IMAGE_SIZE = {f.name: f for f in dataclasses.fields(DataConfig)}["image_size"].metadata["max"]

log = logging.getLogger("minidiffusion")


# The tensors a checkpoint holds, by prefix: "model.*" the raw weights, "ema.*" their moving average, "guide.*" the
# autoguidance guide (optional), "optim.I.NAME" the optimizer's state of parameter I. Only this module spells them.
NETWORKS = ("model", "ema", "guide")
OPTIM = "optim"


@dataclass
class Checkpoint:
    path: Path  # the .json file
    step: int
    config: Config
    meta: dict[str, Any]  # everything in the JSON
    tensors: dict[str, torch.Tensor]  # see NETWORKS and OPTIM

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the network was trained on (checked when loaded)."""
        return self.data["channels"], self.data["image_size"], self.data["image_size"]

    @property
    def data(self) -> dict[str, Any]:
        """The training images: {"name", "channels", "image_size"}, and "classes" for a conditional run (see
        :func:`data_record`)."""
        return self.meta["data"]

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of a class-conditional network (class k is ``classes[k]``); () for an unconditional one."""
        return tuple(self.data.get("classes", ()))

    def has(self, prefix: str) -> bool:
        """Whether the checkpoint holds tensors under ``prefix.`` ('ema', 'guide', ...)."""
        return any(k.startswith(prefix + ".") for k in self.tensors)

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.`` ('model', 'ema' or 'guide') with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def network(self, prefix: str, device: str = "cpu") -> nn.Module:
        """The UNet the config describes with the weights under ``prefix``, in eval mode, gradients off."""
        channels, size, _ = self.image_shape
        net = build_model(self.config.model, channels, size, len(self.classes))
        try:
            net.load_state_dict(self.state_dict(prefix))
        except RuntimeError as e:
            first_line = str(e).splitlines()[0]
            raise UserError(f"{self.path}: weights do not fit the model its config describes ({first_line})") from None
        return net.to(device).eval().requires_grad_(False)

    def optimizer_state(self) -> dict[int, dict[str, torch.Tensor]]:
        """The optimizer's per-parameter state, as ``Optimizer.state_dict()["state"]`` holds it."""
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.tensors.items():
            if key.startswith(OPTIM + "."):
                _, idx, name = key.split(".", 2)
                per_param.setdefault(int(idx), {})[name] = value
        return per_param


def data_record(name: str, channels: int, image_size: int, classes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The "data" entry of a checkpoint: which images, their shape, and for a class-conditional run the names of its
    classes (the network's class k is ``classes[k]``)."""
    record = {"name": name, "channels": int(channels), "image_size": int(image_size)}
    return {**record, "classes": list(classes)} if classes else record


def pack(networks: dict[str, nn.Module | None],
         optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: each network's state under its prefix (None: left out), then the optimizer's."""
    unknown = set(networks) - set(NETWORKS)
    if unknown:
        raise ValueError(f"unknown checkpoint prefixes {sorted(unknown)} (known: {', '.join(NETWORKS)})")
    tensors = {f"{prefix}.{k}": v for prefix, net in networks.items() if net is not None
               for k, v in net.state_dict().items()}
    if optimizer is not None:
        for i, state in optimizer.state_dict()["state"].items():
            tensors.update({f"{OPTIM}.{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v) for k, v in state.items()})
    return tensors


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import, before any thread writes files
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def save_checkpoint(directory: Path, step: int, config: Config, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any] | None = None, keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``. Returns the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"ckpt_{step:08d}.safetensors"
    tmp = weights.with_name(f"{weights.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # safetensors creates it 0600; readable like the JSON beside it
        os.replace(tmp, weights)
        version = 2 if (meta or {}).get("data", {}).get("classes") else 1  # see VERSION
        record = {"format": FORMAT, "version": version, "step": step, "weights": weights.name,
                  "sha256": file_sha256(weights), "config": config.to_record(), **(meta or {})}
        path = directory / f"ckpt_{step:08d}.json"
        atomic_write_bytes(path, json.dumps(record, indent=1).encode())
        fsync_dir(directory)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error, not OSError
        tmp.unlink(missing_ok=True)
        if not (directory / f"ckpt_{step:08d}.json").exists():
            weights.unlink(missing_ok=True)  # tensors without their record are no checkpoint, only lost space
        why = getattr(e, "strerror", None) or e
        raise UserError(f"could not write checkpoint for step {step} in {directory}: {why} "
                        f"(earlier checkpoints are untouched)") from None
    prune(directory, keep)
    return path


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, json path) of every checkpoint record in ``directory``, oldest first (not yet verified)."""
    if not directory.is_dir():
        return []
    try:
        found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    except OSError as e:  # an unreadable folder (permissions): one line, not a traceback
        raise UserError(f"cannot read the checkpoint folder {directory}: {e.strerror or e}") from None
    return sorted(found)


def prune(directory: Path, keep: int) -> None:
    for _, path in list_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)  # JSON first: a half-deleted checkpoint is incomplete, never torn
        path.with_suffix(".safetensors").unlink(missing_ok=True)
    for stray in directory.glob("*.tmp"):  # left by a crash during a write
        stray.unlink(missing_ok=True)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not a minidiffusion checkpoint (unreadable JSON: {e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{path}: not a minidiffusion checkpoint (no '\"format\": \"{FORMAT}\"' record)")
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path}: checkpoint has no valid format version")
    if version > VERSION:
        raise UserError(f"{path}: written by a newer minidiffusion (format version {version}, this one reads "
                        f"up to {VERSION}); upgrade minidiffusion")
    for key, kind in (("step", int), ("weights", str), ("sha256", str), ("config", dict)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise UserError(f"{path}: checkpoint record is missing a valid '{key}'")
    named = _NAME.match(path.name)
    if record["step"] < 0 or (named and int(named.group(1)) != record["step"]):
        raise UserError(f"{path}: checkpoint record says step {record['step']}, which its name does not (edited or "
                        f"foreign record)")
    return record


def load_checkpoint(path: str | Path, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint from its .json or .safetensors file, or the newest complete one in a run directory."""
    path = Path(path)
    if path.is_dir():
        found, skipped = _newest_complete(path)
        if found is None:
            why = f" (the newest, {skipped[0]})" if skipped else ""
            raise UserError(f"no complete checkpoint in {path}{why}")
        _warn_skipped(found, skipped)
        return found
    if path.suffix == ".safetensors":
        if path.is_file() and not path.with_suffix(".json").is_file():
            raise UserError(f"{path}: no {path.with_suffix('.json').name} beside it, so not a minidiffusion checkpoint "
                            f"(that record holds its config and checksum)")
        path = path.with_suffix(".json")
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    record = _read_record(path)
    weights = path.parent / Path(record["weights"]).name
    if not weights.is_file():
        raise UserError(f"{path}: its tensor file {weights.name} is missing")
    try:
        digest = file_sha256(weights) if verify else None
    except OSError as e:
        raise UserError(f"{weights}: cannot read the tensor file ({e.strerror or e})") from None
    if verify and digest != record["sha256"]:
        raise UserError(f"{weights}: checksum mismatch (truncated or modified file)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: unreadable tensor file ({e})") from None
    config = Config.from_dict(record["config"], where=str(path), saved=True)
    _check_data(path, record.get("data"), config, record["version"])
    return Checkpoint(path, record["step"], config, record, tensors)


def _check_data(path: Path, data: Any, config: Config, version: int) -> None:
    """The image shape a checkpoint records: whole numbers, channels 1 or 3, and the size its config asks for; class
    names exactly when its config is conditional (and then format version 2)."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) and not isinstance(data.get(k), bool)
                                             for k in ("channels", "image_size")):
        raise UserError(f"{path}: checkpoint does not record a valid image shape ('data' entry: {data!r})")
    native = DATASETS[config.data.name].size if config.data.name in DATASETS else 0
    size = config.data.image_size or native
    if data["channels"] not in (1, 3) or not 1 <= data["image_size"] <= MAX_IMAGE_SIZE or (
            size and data["image_size"] != size):
        raise UserError(f"{path}: checkpoint records images of {data['channels']} channels at "
                        f"{data['image_size']} px, which its config ({config.data.name}, size {size or 'any'}) does "
                        f"not make (edited or damaged record)")
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or bool(classes) != (
            config.data.conditional) or (classes and (version < 2 or len(set(classes)) != len(classes))):
        raise UserError(f"{path}: checkpoint records classes {classes!r} for a "
                        f"{'conditional' if config.data.conditional else 'unconditional'} config at format version "
                        f"{version} (edited or damaged record)")


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint in ``run_dir`` (or ``run_dir/checkpoints``) that loads and verifies, or None.

    Newer records that do not load (torn by a crash, foreign, from a newer version) are skipped with a warning.
    """
    found, skipped = _newest_complete(run_dir)
    if found is not None:
        _warn_skipped(found, skipped)
    return found


def _warn_skipped(found: Checkpoint, skipped: list[str]) -> None:
    for why in skipped:
        log.warning("skipping a checkpoint that does not load: %s; using %s (step %d)", why, found.path.name,
                    found.step)


def _newest_complete(run_dir: Path, attempts: int = 3) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that loads, and why each newer record did not (newest first).

    A training that runs meanwhile writes new checkpoints and prunes old ones, so the records listed may be gone by
    the time they are read: when none loads and the listing has changed, it is read again."""
    directory = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    listed = list_checkpoints(directory)
    for _ in range(attempts):
        skipped = []
        for _, path in reversed(listed):
            try:
                return load_checkpoint(path), skipped
            except UserError as e:
                skipped.append(str(e))  # torn or foreign (the message names the file): fall back to the previous one
        now = list_checkpoints(directory)
        if now == listed:
            break
        listed = now
    return None, skipped
