import json
import shutil

import pytest
import torch

from minidiffusion import training
from minidiffusion.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from minidiffusion.errors import UserError
from minidiffusion.training import BatchOrder, fitted_length, lr_at, train
from tests.helpers import full_and_resumed, make_folder, tiny_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


def test_run_directory_contents(folder, tmp_path):
    cfg = tiny_config(folder)
    final = train(cfg, tmp_path / "run", progress=False)
    assert final == tmp_path / "run" / "checkpoints" / "ckpt_00000006.json"
    assert (tmp_path / "run" / "config.toml").read_text() == cfg.to_toml()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    assert all({"loss", "loss_q0", "loss_q3", "lr", "img_per_s"} <= r.keys() for r in lines)
    assert (tmp_path / "run" / "samples" / "step_00000006.png").is_file()
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [3, 6]
    ckpt = load_checkpoint(final)
    assert ckpt.step == 6 and ckpt.config == cfg and ckpt.meta["data"] == {"name": "folder", "channels": 1,
                                                                           "image_size": 8}


def test_train_step_called_alone_is_the_loop(folder, tmp_path):
    """The loop is draw_batch + TrainStep at lr_at: the same calls made by hand give the run's weights bit for bit
    (what lets the benchmarks time the library's own step)."""
    from minidiffusion.data import load_dataset
    from minidiffusion.models.unet import build_model
    from minidiffusion.training import TrainStep, draw_batch

    cfg = tiny_config(folder, model={"dropout": 0.0}, data={"flip": "yes"})
    final = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    data = load_dataset(cfg.data)
    torch.manual_seed(cfg.train.seed)
    step = TrainStep(build_model(cfg.model, data.channels, data.image_size), cfg, "cpu")
    order, total = BatchOrder(len(data), cfg.train.batch_size, cfg.train.seed), cfg.train.steps
    for s in range(total):
        x0, t, noise = draw_batch(cfg, step.objective, data.tensor[order.indices(s)], s, slice(None), flip=True)
        losses, nonfinite = step(x0, t, noise, s, lr_at(cfg, s, total))
        assert not nonfinite and losses.shape == (cfg.train.batch_size,)
    for prefix, net in (("model", step.model), ("ema", step.ema)):
        for k, v in net.state_dict().items():
            assert torch.equal(final.state_dict(prefix)[k], v), (prefix, k)
    # and the trainer's finiteness check: a NaN batch is skipped on the device, weights, EMA and AdamW's state untouched
    def everything():
        nets = [v for net in (step.model, step.ema) for v in net.state_dict().values()]
        return [v.clone() for v in nets + [v for state in step.optimizer.state.values() for v in state.values()]]

    before = everything()
    _, nonfinite = step(torch.full_like(x0, float("nan")), t, noise, total)
    assert nonfinite.dtype == torch.bool and bool(nonfinite)
    assert all(torch.equal(a, b) for a, b in zip(before, everything(), strict=True))


def test_resume_reproduces_the_uninterrupted_run(folder, tmp_path):
    cfg = tiny_config(folder, model={"dropout": 0.1})  # dropout too: its randomness is per step as well
    full, cut = full_and_resumed(cfg, tmp_path)
    a, b = load_checkpoint(full), load_checkpoint(cut)
    assert a.step == b.step == 6
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key
    full_log = (full / "metrics.jsonl").read_text().splitlines()
    cut_log = (cut / "metrics.jsonl").read_text().splitlines()
    loss = lambda line: json.loads(line)["loss"]
    assert loss(full_log[-1]) == loss(cut_log[-1])
    assert [json.loads(line)["step"] for line in cut_log] == [2, 4, 6]  # steps 4 and 6 once: resumed, not repeated


def test_resume_without_checkpoint_starts_fresh(folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="minidiffusion")
    train(tiny_config(folder, train={"steps": 2}), tmp_path / "new", resume=True, progress=False)
    assert "starting a fresh run" in caplog.text
    assert latest_checkpoint(tmp_path / "new").step == 2


def test_refuses_to_overwrite_a_run_without_resume(folder, tmp_path):
    cfg = tiny_config(folder, train={"steps": 2})
    train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(cfg, tmp_path / "r", progress=False)


def test_resume_with_a_different_model_names_the_tensors(folder, tmp_path):
    train(tiny_config(folder, train={"steps": 2}), tmp_path / "r", progress=False)
    other = tiny_config(folder, train={"steps": 4}, model={"base_channels": 16})
    with pytest.raises(UserError, match=r"time_embed.mlp.0.weight \(32, 8\) vs \(64, 16\)"):
        train(other, tmp_path / "r", resume=True, progress=False)


def test_training_reduces_the_loss(folder, tmp_path):
    cfg = tiny_config(folder, train={"steps": 60, "log_every": 10, "checkpoint_every": 0, "batch_size": 16})
    train(cfg, tmp_path / "r", progress=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]


def test_batch_order_covers_each_epoch_once():
    order = BatchOrder(10, 4, seed=3)
    seen = torch.cat([order.indices(s) for s in range(5)])  # 20 items = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(order.indices(3), BatchOrder(10, 4, seed=3).indices(3)), "a pure function of the step"
    assert not torch.equal(order.indices(0), BatchOrder(10, 4, seed=4).indices(0))


def test_learning_rate_schedule():
    cfg = tiny_config("x", train={"lr": 1.0, "warmup_steps": 4, "lr_decay": "cosine"})
    assert [lr_at(cfg, s, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(cfg, 8, 12) == pytest.approx(0.5)
    assert lr_at(cfg, 12, 12) == pytest.approx(0.0)


def test_time_limit_ends_the_run_early_with_a_final_checkpoint(folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="minidiffusion")
    cfg = tiny_config(folder, train={"steps": 1000, "time_limit": 1e-6, "checkpoint_every": 0})
    final = train(cfg, tmp_path / "r", progress=False)
    assert load_checkpoint(final).step == 1  # the limit is checked after every step: the first one ends it
    assert (tmp_path / "r" / "samples" / "step_00000001.png").is_file()
    assert [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [1]
    assert "train.time_limit=1e-06s reached; the schedule had 1000" in caplog.text
    # --resume goes on from there (here by one more step: the limit applies to each invocation)
    assert load_checkpoint(train(cfg, tmp_path / "r", resume=True, progress=False)).step == 2


def test_resume_of_a_finished_run_says_so_and_trains_nothing(folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="minidiffusion")
    cfg = tiny_config(folder)
    final = train(cfg, tmp_path / "r", progress=False)
    files = lambda: {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*") if p.name != ".lock"}
    before = files()
    assert train(cfg, tmp_path / "r", resume=True, progress=False) == final
    assert "already complete (step 6 of 6)" in caplog.text
    assert files() == before
    with pytest.raises(UserError, match="checkpoint is at step 6, past this config's 4 steps"):
        train(cfg.replace(train={"steps": 4}), tmp_path / "r", resume=True, progress=False)


@pytest.mark.parametrize("changed", [{"train": {"lr": 5e-4}}, {"train": {"batch_size": 2}}, {"train": {"seed": 3}},
                                     {"diffusion": {"schedule": "cosine"}}, {"diffusion": {"prediction": "v"}},
                                     {"model": {"dropout": 0.2}}])
def test_resume_refuses_a_changed_recipe_key_by_key(folder, tmp_path, changed):
    cfg = tiny_config(folder, train={"steps": 3})
    train(cfg, tmp_path / "r", progress=False)
    section, values = next(iter(changed.items()))
    (key, value), = values.items()
    with pytest.raises(UserError, match=rf"differs from the run's \({section}\.{key}: .* -> .*\).*--allow-changes"):
        train(cfg.replace(**{**changed, "train": {"steps": 6, **changed.get("train", {})}}), tmp_path / "r",
              resume=True, progress=False)
    assert (tmp_path / "r" / "config.toml").read_text() == cfg.to_toml()  # untouched


def test_resume_with_allow_changes_keeps_the_config_history(folder, tmp_path, caplog):
    cfg = tiny_config(folder, train={"steps": 3})
    train(cfg, tmp_path / "r", progress=False)
    caplog.set_level("INFO", logger="minidiffusion")
    changed = cfg.replace(train={"lr": 5e-4, "steps": 6, "log_every": 3})
    train(changed, tmp_path / "r", resume=True, progress=False, allow_changes=True)
    assert "train.lr: 0.001 -> 0.0005" in caplog.text and "train.steps: 3 -> 6" in caplog.text
    assert (tmp_path / "r" / "config.toml").read_text() == changed.to_toml()
    assert (tmp_path / "r" / "config.step_00000003.toml").read_text() == cfg.to_toml()
    assert load_checkpoint(tmp_path / "r").config == changed


def test_cli_resume_without_config_continues_the_runs_own(folder, tmp_path):
    from minidiffusion.cli import main

    cfg = tiny_config(folder, train={"steps": 3})
    train(cfg, tmp_path / "r", progress=False)
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--set", "train.steps=4", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "r").step == 4  # not the quick preset: that would be refused as a change
    assert main(["train", "--config", "quick", "--out", str(tmp_path / "r"), "--resume"]) == 2


def test_the_final_grid_is_announced(folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="minidiffusion")
    train(tiny_config(folder), tmp_path / "r", progress=False)
    messages = [r.getMessage() for r in caplog.records]
    at = messages.index("drawing the final grid: 4 samples, ddim 3 steps")
    assert messages[at + 1].startswith("done: 6 steps")


def test_streamed_workers_skips_add_up_in_the_run_directory(tmp_path, caplog):
    """Decoded on demand by two DataLoader workers, each bad file is listed once in RUN/skipped_files.txt and the
    end of the run gives the total, not only what one worker saw."""
    root = make_folder(tmp_path / "imgs", n=10)
    bad = [root / "003.png", root / "008.png"]
    for path in bad:
        path.write_bytes(b"not a png")
    cfg = tiny_config(root, data={"in_memory": "no", "num_workers": 2}, train={"steps": 6, "checkpoint_every": 6})
    with caplog.at_level("WARNING", logger="minidiffusion"):
        train(cfg, tmp_path / "run", progress=False)  # 6 steps of 4: every file is met at least twice
    skip_list = tmp_path / "run" / "skipped_files.txt"
    assert sorted(set(skip_list.read_text().splitlines())) == [str(p) for p in bad]
    assert f"skipped 2 unreadable or huge image files in all; the list: {skip_list}" in caplog.text
    clean = make_folder(tmp_path / "clean", n=8)
    train(tiny_config(clean, train={"steps": 2}), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "skipped_files.txt").exists()


def test_adam_beta2_reaches_the_optimizer_and_survives_resume(folder, tmp_path):
    from minidiffusion.models.unet import build_model
    from minidiffusion.training import TrainStep

    cfg = tiny_config(folder, train={"adam_beta2": 0.99})
    step = TrainStep(build_model(cfg.model, 1, 8), cfg, "cpu")
    assert step.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    ckpt = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    assert ckpt.meta["optimizer_groups"][0]["betas"] == [0.9, 0.99]


def test_fitted_length():
    # 5 steps/s for 98% of 100 s left: 490 more; never past train.steps, never less than one more step
    assert fitted_length(20, 5.0, 100.0, 10_000) == 510
    assert fitted_length(20, 5.0, 100.0, 300) == 300
    assert fitted_length(20, 5.0, -3.0, 300) == 21


class _FakeClock:
    """One second per reading: the loop's clock readings per step are fixed, so the speed it measures is exact."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 1.0
        return self.t


def test_fit_time_limit_ends_the_schedule_within_the_limit(folder, tmp_path, caplog, monkeypatch):
    caplog.set_level("INFO", logger="minidiffusion")
    monkeypatch.setattr(training._Clock, "now", _FakeClock())
    cfg = tiny_config(folder, train={"steps": 1000, "time_limit": 100, "fit_time_limit": True, "lr_decay": "cosine",
                                     "checkpoint_every": 20})
    final = load_checkpoint(train(cfg, tmp_path / "r", progress=False))
    fitted, of = final.meta["fitted"]
    assert of == 1000 and 40 < fitted < 100 and final.step == fitted, "the run took the whole fitted schedule"
    assert "reached" not in caplog.text, "and ended by it, not by the time limit"
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["lr"] == pytest.approx(lr_at(cfg, fitted - 1, fitted)) and lines[-1]["lr"] < 0.01 * cfg.train.lr
    # resumed from a checkpoint after the fit, the run keeps its fitted schedule: the same weights bit for bit
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "r", cut)
    for suffix in (".json", ".safetensors"):
        (cut / "checkpoints" / f"ckpt_{fitted:08d}{suffix}").unlink()
    monkeypatch.setattr(training._Clock, "now", _FakeClock())
    again = load_checkpoint(train(cfg, cut, resume=True, progress=False))
    assert again.step == fitted and again.meta["fitted"] == [fitted, 1000]
    assert all(torch.equal(again.tensors[k], v) for k, v in final.tensors.items())
    # a finished fitted run is complete; a run given another train.steps follows that instead
    caplog.clear()
    train(cfg, tmp_path / "r", resume=True, progress=False)
    assert f"already complete (step {fitted} of {fitted})" in caplog.text
    longer = tiny_config(folder, train={"steps": fitted + 2, "lr_decay": "cosine", "checkpoint_every": 20})
    assert load_checkpoint(train(longer, tmp_path / "r", resume=True, progress=False)).step == fitted + 2
    assert "train.steps is now" in caplog.text


def test_fit_time_limit_needs_a_time_limit():
    with pytest.raises(UserError, match="train.fit_time_limit fits the schedule to train.time_limit, which is 0"):
        tiny_config("x", train={"fit_time_limit": True})


def test_training_a_finished_run_longer_starts_a_new_warmup_and_decay(folder, tmp_path):
    """`--resume --set train.steps=12` on a run whose cosine ended at step 6: before, the learning rate jumped from ~0
    back into the middle of a 12-step cosine; now the added steps get their own warm-up and decay (a warm restart),
    the checkpoint records that schedule, and resuming inside it is exact."""
    cfg = tiny_config(folder, train={"lr_decay": "cosine", "log_every": 1, "checkpoint_every": 3})
    train(cfg, tmp_path / "run", progress=False)
    longer = cfg.replace(train={"steps": 12})
    final = load_checkpoint(train(longer, tmp_path / "run", resume=True, progress=False))
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
           if "lr" in r}
    peak, warmup = cfg.train.lr, cfg.train.warmup_steps
    # the added six steps follow a schedule of their own, the first six's again (warm-up, then cosine toward 0),
    # where a 12-step cosine would have jumped to 0.65 of the peak at step 7
    assert [lrs[s] for s in range(7, 13)] == pytest.approx([lrs[s] for s in range(1, 7)])
    assert lrs[7] == pytest.approx(peak / warmup) and lrs[6] < 0.15 * peak
    assert final.meta["schedule"] == [6, 12]
    # stopped at 9 inside the new schedule and resumed: the same weights as the uninterrupted extension
    shutil.copytree(tmp_path / "run", tmp_path / "cut")
    for suffix in (".json", ".safetensors"):
        (tmp_path / "cut" / "checkpoints" / f"ckpt_00000012{suffix}").unlink()
    resumed = load_checkpoint(train(longer, tmp_path / "cut", resume=True, progress=False))
    for key, value in final.tensors.items():
        assert torch.equal(resumed.tensors[key], value), key
