"""Where training metrics go: ``RUN/metrics.jsonl`` and, with ``train.log = ["jsonl", "tensorboard"]``, ``RUN/tb/``.

The trainer talks to one :class:`MetricsLogger`: ``log(record)`` for each metrics line (a dict with a
``step``), ``image(tag, grid, step)`` for each sample grid, ``close()`` at the end. TensorBoard is the optional
extra ``tb``; asking for it without the package fails when the logger is made (at the start of training),
not at the first log line hours later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .rundir import atomic_write_bytes

log = logging.getLogger("minidiffusion")

BACKENDS = ("jsonl", "tensorboard")


def require_backends(backends: Sequence[str]) -> None:
    """Raise :class:`UserError` now if a backend in ``backends`` is unknown or its package is missing."""
    for name in backends:
        if name not in BACKENDS:
            raise UserError(f"train.log: unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if "tensorboard" in backends:
        _summary_writer_class()


def _summary_writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard itself imports the tensorboard package
        raise UserError("train.log includes 'tensorboard' but the tensorboard package is not installed: "
                        "pip install tensorboard (in a clone: pip install -e '.[tb]'), or drop it: "
                        "--set train.log=jsonl") from None
    return SummaryWriter


class MetricsLogger:
    """One JSON line per record in ``out_dir/metrics.jsonl``; scalars and images in ``out_dir/tb`` for TensorBoard.

    ``backends=()`` logs nothing (what ranks other than 0 get). ``resumed_at``: the step a resumed run continues
    from; what the interrupted run logged after it is dropped, since the resumed run logs those steps again.
    A metrics line that cannot be written (a full disk) is a warning, not the end of the run.
    """

    def __init__(self, out_dir: str | Path, backends: Sequence[str] = ("jsonl",), resumed_at: int | None = None):
        require_backends(backends)
        out = Path(out_dir)
        self.jsonl_path = out / "metrics.jsonl" if "jsonl" in backends else None
        self.writer = None
        if "tensorboard" in backends:
            purge = None if resumed_at is None else resumed_at + 1
            self.writer = _summary_writer_class()(log_dir=str(out / "tb"), purge_step=purge)
        self.write_failed = False
        if resumed_at is not None and self.jsonl_path is not None and self.jsonl_path.is_file():
            self._rewind(resumed_at)

    def _rewind(self, step: int) -> None:
        """Keep the lines up to ``step``; a torn last line of a killed run goes too."""
        kept = []
        for line in self.jsonl_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line + "\n")
        atomic_write_bytes(self.jsonl_path, "".join(kept).encode())

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serializable, with an integer ``step``); every number in it becomes a scalar."""
        if self.jsonl_path is not None:
            try:
                with open(self.jsonl_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                if not self.write_failed:
                    log.warning("%s: cannot write (%s); training goes on, metrics lines are lost until it can",
                                self.jsonl_path, e.strerror or e)
                self.write_failed = True
        if self.writer is not None:
            step = int(record["step"])
            for tag, value in _scalars(record):
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()  # a line every log_every steps: cheap, and nothing is lost if the run dies

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A uint8 (H, W, C) image (a sample grid); the PNG files themselves are the trainer's business."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) for every number in ``record`` but the step; nested dicts become ``outer/inner`` tags."""
    for key, value in record.items():
        if key == "step" and not prefix:
            continue
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", float(value)
