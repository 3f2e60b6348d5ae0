"""Non-finite losses and gradients: the step is skipped and logged; K in a row stop the run; fp16 overflow is not one.

The fault is injected in-process by wrapping the ddpm objective's ``diffusion_loss``: it is called once per step,
so the n-th call is step n of a fresh run.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

import minidiffusion.diffusion.objectives as objectives_module
from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.errors import UserError
from minidiffusion.training import train
from tests.helpers import tiny_config


def nan_loss(losses: torch.Tensor) -> torch.Tensor:
    return losses * float("nan")


def inf_gradient(losses: torch.Tensor) -> torch.Tensor:
    """A finite loss whose gradient is infinite: only the gradient check can catch it."""
    losses.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    return losses


def inject(monkeypatch, fault, at_steps: set[int]) -> None:
    real, calls = objectives_module.diffusion_loss, itertools.count()

    def diffusion_loss(*args, **kwargs):
        losses = real(*args, **kwargs)
        return fault(losses) if next(calls) in at_steps else losses

    monkeypatch.setattr(objectives_module, "diffusion_loss", diffusion_loss)


def checkpoint(run: Path, step: int):
    return load_checkpoint(run / "checkpoints" / f"ckpt_{step:08d}.json")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def every_step(folder: Path, **train_options):
    return tiny_config(folder, train={"steps": 5, "checkpoint_every": 1, "keep_checkpoints": 10, "log_every": 1,
                                      **train_options})


@pytest.mark.parametrize("fault", [nan_loss, inf_gradient])
def test_a_non_finite_step_is_skipped_and_logged(folder, tmp_path, monkeypatch, caplog, fault):
    inject(monkeypatch, fault, {2})
    train(every_step(folder), tmp_path, progress=False)

    assert {"step": 2, "skipped": "non-finite"} in metrics(tmp_path)
    assert [r["step"] for r in metrics(tmp_path) if "loss" in r] == [1, 2, 4, 5]  # step 2 (0-based) ends at 3
    assert "step 2: non-finite loss or gradient, step skipped" in caplog.text
    # Step 2 runs between checkpoints 2 and 3: weights, EMA and optimizer state are exactly as it found them...
    before, after = checkpoint(tmp_path, 2), checkpoint(tmp_path, 3)
    for key in before.tensors:
        assert torch.equal(before.tensors[key], after.tensors[key]), key
    assert all(torch.isfinite(v).all() for v in after.tensors.values())
    # ... and the next step trains again.
    key = next(k for k in after.tensors if k.startswith("model."))
    assert not torch.equal(after.tensors[key], checkpoint(tmp_path, 4).tensors[key])


def test_k_non_finite_steps_in_a_row_stop_the_run(folder, tmp_path, monkeypatch):
    inject(monkeypatch, nan_loss, {2, 3, 4})
    with pytest.raises(UserError) as caught:
        train(every_step(folder, max_nonfinite=3), tmp_path, progress=False)
    message = str(caught.value)
    last_good = tmp_path / "checkpoints" / "ckpt_00000004.json"  # written after steps 2 and 3, both skipped
    assert message == f"3 non-finite steps in a row (last at step 4); last good checkpoint: {last_good}"
    assert "\n" not in message
    assert [r["step"] for r in metrics(tmp_path) if "skipped" in r] == [2, 3, 4]
    good, last_trained = checkpoint(tmp_path, 4), checkpoint(tmp_path, 2)  # the last good one holds step 1's weights
    for key in good.tensors:
        assert torch.equal(good.tensors[key], last_trained.tensors[key]), key
    assert not (tmp_path / "checkpoints" / "ckpt_00000005.json").exists()


def test_a_short_streak_does_not_stop_the_run(folder, tmp_path, monkeypatch):
    inject(monkeypatch, nan_loss, {1, 2, 4})  # 2 in a row, then 1: never 3
    final = train(every_step(folder, max_nonfinite=3), tmp_path, progress=False)
    assert load_checkpoint(final).step == 5


def test_fp16_overflow_is_handled_by_the_scaler_not_reported(folder, tmp_path, monkeypatch):
    """fp16 autocast and GradScaler work on the CPU in this torch: start the scale so high that the first steps
    overflow. The scaler skips those steps and halves its scale each time; none of that is a non-finite step,
    even with max_nonfinite=1."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *args, **kwargs: real(*args, **kwargs, init_scale=2.0**30))
    steps = 24
    cfg = tiny_config(folder, train={"steps": steps, "precision": "fp16", "max_nonfinite": 1, "log_every": 1,
                                     "checkpoint_every": 0})
    final = load_checkpoint(train(cfg, tmp_path, progress=False))
    assert not any("skipped" in r for r in metrics(tmp_path))
    applied = int(final.tensors["optim.0.step"])  # AdamW's own count of the steps it took
    overflowed = steps - applied
    assert 0 < overflowed < steps
    assert final.meta["scaler"]["scale"] == 2.0**30 / 2**overflowed  # backoff 0.5 per overflow, no growth yet
    assert all(torch.isfinite(v).all() for v in final.tensors.values())
