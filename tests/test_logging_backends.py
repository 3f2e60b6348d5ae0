"""Metrics logging: metrics.jsonl always as configured; TensorBoard scalars and sample grids with train.log."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from minidiffusion.errors import UserError
from minidiffusion.logging_backends import MetricsLogger
from minidiffusion.training import train
from tests.helpers import make_folder, tiny_config

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two contended threads are slower than one for these tiny convolutions
    yield
    torch.set_num_threads(threads)


def read_events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@needs_tensorboard
def test_training_writes_every_metric_and_the_grids_to_tensorboard(tmp_path):
    cfg = tiny_config(make_folder(tmp_path / "data"), train={"log": ["jsonl", "tensorboard"], "sample_every": 3})
    train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = read_events(tmp_path / "run" / "tb")
    expected = {key for r in records for key, v in r.items() if key != "step" and v is not None}
    assert {"loss", "loss_q0", "lr", "img_per_s"} <= expected
    assert set(events.Tags()["scalars"]) == expected
    for key in expected:
        logged = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == [step for step, _ in logged]
        assert [e.value for e in scalars] == pytest.approx([value for _, value in logged], rel=1e-6)  # float32
    images = events.Images("samples")
    assert [e.step for e in images] == [3, 6]  # sample_every 3 and the last step
    assert images[-1].width > 8 * 2 and images[-1].height > 8 * 2  # the grid, not one image


@needs_tensorboard
def test_logger_nested_records_and_images(tmp_path):
    logger = MetricsLogger(tmp_path, ["tensorboard"])  # TensorBoard only: no metrics.jsonl
    logger.log({"step": 5, "eval": {"fid": 12.5, "kid": 0.01}, "note": "text", "ok": True, "missing": None})
    logger.image("grid", np.zeros((10, 12, 1), np.uint8), 5)
    logger.close()
    events = read_events(tmp_path / "tb")
    assert sorted(events.Tags()["scalars"]) == ["eval/fid", "eval/kid"]
    assert events.Scalars("eval/fid")[0].value == 12.5 and events.Scalars("eval/fid")[0].step == 5
    assert (events.Images("grid")[0].width, events.Images("grid")[0].height) == (12, 10)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_jsonl_only_and_nothing(tmp_path):
    MetricsLogger(tmp_path).log({"step": 1, "loss": 0.5})
    MetricsLogger(tmp_path, ()).log({"step": 2, "loss": 0.4})  # ranks other than 0 log nothing
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'
    assert not (tmp_path / "tb").exists()


def test_missing_tensorboard_fails_before_training(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorb"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    cfg = tiny_config(tmp_path / "no-such-data", train={"log": ["jsonl", "tensorboard"]})
    with pytest.raises(UserError, match=r"pip install tensorboard \(in a clone: pip install -e '.\[tb\]'\)"):
        train(cfg, tmp_path / "run", progress=False)  # before the (missing) data is even looked at
    assert not (tmp_path / "run").exists()


def test_resumed_logger_drops_what_the_resumed_run_logs_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (2, 4, 6)) + '{"step": 8, "lo')
    logger = MetricsLogger(tmp_path, ("jsonl",), resumed_at=4)  # killed mid-line after step 6; resumed from 4
    logger.log({"step": 6, "loss": 0.5})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"step": 2, "loss": 0.2}, {"step": 4, "loss": 0.4}, {"step": 6, "loss": 0.5}]


def test_an_unwritable_metrics_file_warns_once_and_training_goes_on(tmp_path, caplog):
    (tmp_path / "metrics.jsonl").mkdir()  # opening it for appending fails with an OSError, as a full disk would
    logger = MetricsLogger(tmp_path, ("jsonl",))
    for step in (1, 2):
        logger.log({"step": step, "loss": 1.0})
    assert logger.write_failed and caplog.text.count("cannot write") == 1
