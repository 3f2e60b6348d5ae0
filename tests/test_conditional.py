"""Class-conditional runs: labels through training, label dropout, classifier-free guidance through the one guided
denoiser, `sample --class`, the API's classes, and every bad input in one line."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import minidiffusion
from minidiffusion import checkpoint as checkpoint_module
from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.cli import main
from minidiffusion.config import Config, replace_sample
from minidiffusion.data import load_dataset
from minidiffusion.diffusion import clipped, make_objective
from minidiffusion.errors import UserError
from minidiffusion.models.unet import build_model
from minidiffusion.sampling import Options, class_labels, denoiser_of, generate, parse_classes
from minidiffusion.training import BatchOrder, TrainStep, _batches, draw_batch, drop_labels, lr_at, train
from tests.helpers import full_and_resumed, make_folder, tiny_config
from tests.test_data import write_idx_split

CLASSES = ("cat", "dog", "eel")
SHADE = {"cat": 40, "dog": 120, "eel": 200}  # each class's background grey: an image tells its class


def make_classes(root, n=6, size=8):
    """One subfolder per class, n images each, the class readable from every pixel of the background."""
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(n):
            img = np.full((size, size), SHADE[name], np.uint8)
            img[k % size, :] = 255
            Image.fromarray(img).save(folder / f"{k:03d}.png")
    return root


def class_of(pixels: torch.Tensor) -> torch.Tensor:
    """The class of each uint8 image (N, 1, H, W) from its background (its darkest pixel)."""
    shades = torch.tensor([SHADE[c] for c in CLASSES])
    return (pixels.flatten(1).min(1).values[:, None].long() - shades).abs().argmin(1)


@pytest.fixture(scope="module")
def classes_root(tmp_path_factory):
    return make_classes(tmp_path_factory.mktemp("classes"))


def conditional(root, **sections):
    return tiny_config(root, data={"conditional": True, **sections.pop("data", {})}, **sections)


@pytest.fixture(scope="module")
def run(classes_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(conditional(classes_root), out, progress=False)
    return out


# -- the network and the denoisers --------------------------------------------------------------------------------

def noisy_net(cfg) -> torch.nn.Module:
    """A conditional tiny UNet whose output depends on its class (not the zero output of a fresh network)."""
    net = build_model(cfg.model, 1, 8, num_classes=3).eval()
    with torch.no_grad():
        net.time_embed.class_embed.weight.copy_(torch.randn(4, 32))
        net.conv_out.weight.copy_(0.1 * torch.randn_like(net.conv_out.weight))
    return net


class Counted(torch.nn.Module):
    """A network that counts its calls."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.num_classes = net, 0, net.num_classes

    def forward(self, x, t, cond=None):
        self.calls += 1
        return self.net(x, t, cond)


@pytest.mark.parametrize("objective", ["ddpm", "edm", "flow"])
def test_cfg_weight_1_is_the_conditional_denoiser_and_0_the_no_class_one_bit_for_bit(objective):
    cfg = Config.from_dict({"model": {"variant": "simple", "base_channels": 8, "channel_mults": [1, 2]},
                            "diffusion": {"objective": objective}, "data": {"conditional": True}})
    net = Counted(noisy_net(cfg))
    obj = make_objective(cfg.diffusion)
    plain = clipped(obj.denoiser(net)) if obj.clip_x0 else obj.denoiser(net)
    x, cond, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1]), float(obj.sigmas(5, cfg.sample)[1])
    with torch.no_grad():
        want = plain(x, sigma, cond)
        no_class = plain(x, sigma, torch.full_like(cond, 3))
        net.calls = 0
        one = denoiser_of(net, obj, replace_sample(cfg.sample, {"cfg_weight": 1.0}))(x, sigma, cond)
        assert net.calls == 1 and torch.equal(one, want)
        net.calls = 0
        zero = denoiser_of(net, obj, replace_sample(cfg.sample, {"cfg_weight": 0.0}))(x, sigma, cond)
        assert net.calls == 1 and torch.equal(zero, no_class)
        two = denoiser_of(net, obj, replace_sample(cfg.sample, {"cfg_weight": 2.0}))(x, sigma, cond)
        raw = obj.denoiser(net)  # guidance acts on the raw x̂0 estimates, clipping after
        guided = 2 * raw(x, sigma, cond) - raw(x, sigma, torch.full_like(cond, 3))
        torch.testing.assert_close(two, guided.clamp(-1, 1) if obj.clip_x0 else guided, rtol=0, atol=1e-6)
        assert not torch.allclose(want, no_class)
        # outside cfg_interval: the conditional denoiser alone, one call
        outside = replace_sample(cfg.sample, {"cfg_weight": 3.0, "cfg_interval": [1e-9, 1e-8]})
        net.calls = 0
        assert torch.equal(denoiser_of(net, obj, outside)(x, sigma, cond), want) and net.calls == 1


def test_autoguidance_and_cfg_compose_as_documented():
    """D(no class) + w (D_a - D(no class)), D_a = D_guide(c) + w_a (D(c) - D_guide(c)): three calls a step."""
    cfg = Config.from_dict({"model": {"variant": "simple", "base_channels": 8, "channel_mults": [1, 2]},
                            "diffusion": {"objective": "edm"}, "data": {"conditional": True}})
    net, guide = noisy_net(cfg), noisy_net(cfg)
    obj, x, cond = make_objective(cfg.diffusion), torch.randn(2, 1, 8, 8), torch.tensor([2, 0])
    both = replace_sample(cfg.sample, {"cfg_weight": 1.5, "guidance": 3.0})
    with torch.no_grad():
        got = denoiser_of(net, obj, both, guide)(x, 1.0, cond)
        d, g = obj.denoiser(net), obj.denoiser(guide)
        d_a = g(x, 1.0, cond) + 3.0 * (d(x, 1.0, cond) - g(x, 1.0, cond))
        d_u = d(x, 1.0, torch.full_like(cond, 3))
    torch.testing.assert_close(got, d_u + 1.5 * (d_a - d_u), rtol=0, atol=1e-5)


def test_unconditional_networks_are_unchanged_and_refuse_a_class():
    cfg = Config().model
    plain, cond = build_model(cfg, 1, 28), build_model(cfg, 1, 28, num_classes=10)
    extra = set(cond.state_dict()) - set(plain.state_dict())
    assert extra == {"time_embed.class_embed.weight"} and cond.state_dict()[extra.pop()].shape == (11, 256)
    with pytest.raises(ValueError, match="takes no condition"):
        plain(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="needs cond"):
        cond(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    patched = build_model(Config.from_dict({"model": {"patch_size": 2, "channel_mults": [1, 2],
                                                      "attention_resolutions": [7]}}).model, 1, 28, num_classes=10)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 500])
    with torch.no_grad():
        patched.net.conv_out.weight.normal_()
        assert not torch.equal(patched(x, t, torch.tensor([1, 2])), patched(x, t, torch.tensor([3, 2])))


# -- training ---------------------------------------------------------------------------------------------------------

def test_label_dropout_rate_is_the_configured_one_and_ranks_slice_the_global_draw(classes_root):
    cfg = conditional(classes_root, train={"label_dropout": 0.25, "batch_size": 1000})
    labels = torch.zeros(1000, dtype=torch.long)
    dropped = torch.stack([drop_labels(cfg, labels, s, slice(None), 3) == 3 for s in range(20)])
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.01)  # 20,000 draws: σ ≈ 0.003
    assert 0.15 < dropped.float().mean(1).min() and dropped.float().mean(1).max() < 0.35  # not all in one step
    halves = [drop_labels(cfg, labels[:500], 7, slice(r * 500, (r + 1) * 500), 3) for r in range(2)]
    assert torch.equal(torch.cat(halves), drop_labels(cfg, labels, 7, slice(None), 3))
    assert torch.equal(drop_labels(cfg, labels, 7, slice(None), 3), drop_labels(cfg, labels, 7, slice(None), 3))
    for p, want in ((0.0, 0), (1.0, 1000)):
        never = cfg.replace(train={"label_dropout": p})
        assert int((drop_labels(never, labels, 3, slice(None), 3) == 3).sum()) == want


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_folder_labels_follow_the_subfolders_into_every_batch(classes_root, in_memory):
    cfg = conditional(classes_root, data={"in_memory": in_memory, "num_workers": 0}, train={"batch_size": 5})
    data = load_dataset(cfg.data, labelled=True)
    assert data.classes == CLASSES and (data.tensor is None) == (in_memory == "no")
    seen = 0
    for pixels, labels in _batches(data, cfg, 0, 8, slice(1, 4), "cpu", labels=True):
        assert labels.dtype == torch.int64 and torch.equal(labels, class_of(pixels))
        seen += len(labels)
    assert seen == 8 * 3


def test_the_loop_trains_on_the_labels_with_their_dropout(classes_root, run):
    """draw_batch + drop_labels + TrainStep by hand give the run's weights bit for bit: the labels reach the loss."""
    cfg, final = conditional(classes_root), load_checkpoint(run)
    assert final.classes == CLASSES and final.meta["data"]["classes"] == list(CLASSES)
    assert json.loads(final.path.read_text())["version"] == 2
    data = load_dataset(cfg.data, labelled=True)

    def by_hand(shift: int) -> dict:
        torch.manual_seed(cfg.train.seed)
        step = TrainStep(build_model(cfg.model, 1, 8, num_classes=3), cfg, "cpu")
        order, total = BatchOrder(len(data), cfg.train.batch_size, cfg.train.seed), cfg.train.steps
        for s in range(total):
            indices = order.indices(s)
            x0, t, noise = draw_batch(cfg, step.objective, data.tensor[indices], s, slice(None), flip=True)
            cond = drop_labels(cfg, (data.labels[indices] + shift) % 3, s, slice(None), 3)
            step(x0, t, noise, s, lr_at(cfg, s, total), cond)
        return step.model.state_dict()

    mine = by_hand(0)
    for k, v in mine.items():
        assert torch.equal(final.state_dict("model")[k], v), k
    # the labels matter: the same steps with every class shifted by one end elsewhere
    assert not torch.equal(by_hand(1)["conv_out.weight"], mine["conv_out.weight"])


@pytest.mark.parametrize("objective, in_memory", [("ddpm", "yes"), ("flow", "no")])
def test_a_conditional_run_resumes_bit_exactly(classes_root, tmp_path, objective, in_memory):
    cfg = conditional(classes_root, diffusion={"objective": objective},
                      data={"in_memory": in_memory, "num_workers": 0},
                      sample={"sampler": "euler", "cfg_weight": 2.0, "guide_at": 0.5, "guidance": 2.0},
                      train={"label_dropout": 0.3})
    a, b = (load_checkpoint(r) for r in full_and_resumed(cfg, tmp_path))
    assert a.step == b.step == 6 and a.tensors.keys() == b.tensors.keys() and a.has("guide")
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


# -- sampling -----------------------------------------------------------------------------------------------------

def test_sample_class_writes_the_asked_classes_and_labels(run, tmp_path):
    out = tmp_path / "a.npz"
    assert main(["sample", "--checkpoint", str(run), "--class", "dog,0", "--n", "5", "--out", str(out),
                 "--no-progress"]) == 0
    saved = np.load(out)
    assert saved["labels"].tolist() == [1, 1, 1, 0, 0] and saved["labels"].dtype == np.int64
    assert saved["images"].shape == (5, 8, 8, 1)
    model = minidiffusion.load(run)
    assert model.classes == CLASSES and "3 classes" in repr(model)
    images = model.sample(5, classes=["dog", 0])  # the API draws the same images as the command line
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), saved["images"])
    assert model.labels(5, "dog,cat").tolist() == [1, 1, 1, 0, 0]
    # image k depends on (seed, k) and its class only: drawn alone, or beside another class, the same
    both = model.sample(4, classes="eel,cat")
    assert torch.equal(both[:2], model.sample(2, classes="eel"))
    assert torch.equal(both[2:], model.sample(4, classes=0)[2:])
    # default: every class in turn, a grid row each
    assert main(["sample", "--checkpoint", str(run), "--n", "6", "--out", str(tmp_path / "b.npz"),
                 "--no-progress"]) == 0
    assert np.load(tmp_path / "b.npz")["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert main(["sample", "--checkpoint", str(run), "--n", "6", "--out", str(tmp_path / "g.png"),
                 "--no-progress"]) == 0
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape[0] == 3 * 10 + 2  # three rows of 8 px images, 2 px apart
    assert grid.shape[1] > 2 * 10 + 2 and (grid[:, :grid.shape[1] - 22] < 128).any()  # a margin with names in it
    cfg_images = model.sample(3, classes="cat", cfg_weight=3.0)
    assert not torch.equal(cfg_images, model.sample(3, classes="cat"))


def test_class_labels_and_names():
    assert class_labels(7, [4, 2]).tolist() == [4, 4, 4, 4, 2, 2, 2]
    assert class_labels(3, [5, 1, 5]).tolist() == [5, 1, 5]
    assert parse_classes("7", [str(d) for d in range(10)]) == [7]
    assert parse_classes(" 0,3, 7", [str(d) for d in range(10)]) == [0, 3, 7]
    assert parse_classes("b,0", ["a", "b"]) == [1, 0] and parse_classes(["1", 1], ["1", "0"]) == [0, 1]
    with pytest.raises(UserError, match="3 classes for 2 images"):
        class_labels(2, [0, 1, 2])


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args, message", [
    (["--class", "3"], "class 3 is out of range: this network has 3 classes, 0..2 (cat, dog, eel)"),
    (["--class", "cow"], "'cow' is not a class of this network (its classes: cat, dog, eel)"),
    (["--class", "cat,"], "name the classes"),
    (["--class", "cat,dog,eel", "--n", "2"], "3 classes for 2 images"),
    (["--cfg", "-1"], "below the minimum"),
])
def test_bad_classes_are_one_line_and_write_nothing(run, tmp_path, capsys, args, message):
    out = tmp_path / "x.npz"
    err = one_line_error(capsys, ["sample", "--checkpoint", str(run), *args, "--out", str(out), "--no-progress"])
    assert message in err and not out.exists()


def test_unconditional_checkpoints_refuse_classes_and_cfg(tmp_path, capsys):
    folder = make_folder(tmp_path / "flat")
    ckpt = load_checkpoint(train(tiny_config(folder), tmp_path / "plain", progress=False))
    record = json.loads(ckpt.path.read_text())
    assert record["version"] == 1 and "classes" not in record["data"]  # an older reader reads it as it always did
    assert "conditional" not in record["config"]["data"] and "cfg_weight" not in record["config"]["sample"]
    assert "label_dropout" not in (tmp_path / "plain" / "config.toml").read_text()
    out = tmp_path / "x.npz"
    for args, message in ((["--class", "1"], "--class: this network is unconditional"),
                          (["--cfg", "2"], "classifier-free guidance needs a class-conditional network")):
        err = one_line_error(capsys, ["sample", "--checkpoint", str(tmp_path / "plain"), *args, "--out", str(out),
                                      "--no-progress"])
        assert message in err and not out.exists()
    with pytest.raises(UserError, match="this network is unconditional"):
        minidiffusion.load(tmp_path / "plain").sample(2, classes=1)
    net, objective = minidiffusion.load(tmp_path / "plain").net, make_objective(ckpt.config.diffusion)
    with pytest.raises(UserError, match="this network is unconditional"):
        generate(net, objective, ckpt.config.sample, 2, seed=0, shape=(1, 8, 8), labels=torch.zeros(2).long())


def test_bad_conditional_configs_and_data_are_one_line(classes_root, tmp_path, capsys):
    flat = make_folder(tmp_path / "flat")
    config = tmp_path / "c.toml"
    config.write_text(conditional(flat).to_toml())
    err = one_line_error(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "r1"), "--no-progress"])
    assert "is a flat folder: put the images in one subfolder per class" in err
    assert not (tmp_path / "r1" / "checkpoints").exists() and not (tmp_path / "r1" / "config.toml").exists()
    for key in ("train.label_dropout=0.2", "sample.cfg_weight=2"):
        err = one_line_error(capsys, ["train", "--config", "quick", "--set", key, "--out", str(tmp_path / "r2")])
        assert f"{key.split('=')[0]} is for class-conditional runs: set data.conditional=true" in err
    assert not (tmp_path / "r2").exists()
    # an MNIST whose labels file is missing, or shorter than its images
    root = tmp_path / "mnist"
    write_idx_split(root, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8))
    base = ["train", "--config", "quick", "--set", "data.conditional=true", "--set", f"data.root={root}",
            "--no-progress"]
    err = one_line_error(capsys, [*base, "--out", str(tmp_path / "r3")])
    assert "4 images but" in err and "3 labels" in err and not (tmp_path / "r3" / "config.toml").exists()
    (root / "train-labels-idx1-ubyte.gz").unlink()
    err = one_line_error(capsys, [*base, "--out", str(tmp_path / "r4")])
    assert "train-labels-idx1-ubyte.gz" in err and not (tmp_path / "r4" / "config.toml").exists()


def test_an_older_reader_refuses_a_conditional_checkpoint_in_one_line(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "VERSION", 1)  # the reader before class-conditional checkpoints
    out = tmp_path / "x.npz"
    err = one_line_error(capsys, ["sample", "--checkpoint", str(run / "checkpoints" / "ckpt_00000006.json"),
                                  "--out", str(out), "--no-progress"])
    assert "written by a newer minidiffusion (format version 2, this one reads up to 1)" in err
    assert not out.exists()


def test_a_conditional_record_must_agree_with_its_config(run, tmp_path):
    shutil.copytree(run / "checkpoints", tmp_path / "c")
    path = tmp_path / "c" / "ckpt_00000006.json"
    record = json.loads(path.read_text())
    for edit in ({"classes": []}, {"classes": ["cat", "cat", "eel"]}, {"classes": [1, 2, 3]}):
        path.write_text(json.dumps({**record, "data": {**record["data"], **edit}}))
        with pytest.raises(UserError, match="checkpoint records classes"):
            load_checkpoint(path)
    path.write_text(json.dumps({**record, "version": 1}))
    with pytest.raises(UserError, match="at format version 1"):
        load_checkpoint(path)


def test_resume_refuses_classes_that_changed(classes_root, run, tmp_path):
    shutil.copytree(run, tmp_path / "r")
    renamed = tmp_path / "data"
    shutil.copytree(classes_root, renamed)
    (renamed / "eel").rename(renamed / "fox")
    with pytest.raises(UserError, match="learned the classes cat, dog, eel, and the data now has cat, dog, fox"):
        train(conditional(renamed, train={"steps": 8}), tmp_path / "r", resume=True, progress=False,
              allow_changes=True)


def test_the_training_grid_has_a_row_per_class(run):
    grid = np.asarray(Image.open(sorted((run / "samples").iterdir())[-1]))
    assert grid.shape[0] == 3 * 10 + 2  # sample.n = 4 over 3 classes: rows of 2, 1, 1


def test_the_guide_of_a_conditional_model_must_know_its_classes(run, tmp_path, capsys):
    plain = tmp_path / "plain"
    train(tiny_config(make_folder(tmp_path / "flat")), plain, progress=False)
    err = one_line_error(capsys, ["sample", "--checkpoint", str(run), "--guidance", "2", "--guide", str(plain),
                                  "--out", str(tmp_path / "x.npz"), "--no-progress"])
    assert "it knows no classes" in err and "the classes cat, dog, eel" in err


def test_generate_checks_the_labels(run):
    model = minidiffusion.load(run)
    kw = {"seed": 0, "shape": (1, 8, 8), "options": Options()}
    for labels, message in ((torch.zeros(3).long(), r"one per image \(2\)"), (torch.tensor([0, 4]), r"0\.\.3"),
                            (torch.zeros(2), "int64")):
        with pytest.raises(UserError, match=message):
            generate(model.net, model.objective, model.config.sample, 2, labels=labels, **kw)
    no_class = generate(model.net, model.objective, model.config.sample, 2, labels=torch.tensor([3, 3]), **kw)
    assert no_class.shape == (2, 1, 8, 8)  # index 3, "no class": the unconditional model


def test_evaluate_scores_a_conditional_run_by_the_class_asked_for(tmp_path, capsys, monkeypatch):
    """evaluate --checkpoint on a conditional MNIST run draws every class in turn and reports, besides the usual
    metrics, the share of samples that are the digit asked for and each digit's scores, FID against its own test
    digits included."""
    import json

    from minidiffusion.cli import main
    from minidiffusion.config import load_config
    from minidiffusion.training import train

    cfg = load_config("mnist-cond", ["train.steps=2", "train.checkpoint_every=0", "model.base_channels=8",
                                     "sample.n=10", "sample.steps=2", "train.device=cpu"])
    train(cfg, tmp_path / "run", progress=False)

    def evaluate():
        assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--n", "30", "--metrics", "fid",
                     "--no-progress", "--device", "cpu", "--stats-dir", str(tmp_path / "stats")]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    result = evaluate()
    per_class = result["per_class"]
    assert list(per_class) == [str(d) for d in range(10)] and all(c["n"] == 3 for c in per_class.values())
    # classes of equal size: the overall share is the mean of the per-class shares
    assert result["requested_accuracy"] == pytest.approx(np.mean([c["requested_accuracy"] for c in per_class.values()]))
    assert all(c["fid"] > 0 and c["diversity"] >= 0 for c in per_class.values())
    assert result["diversity"] == pytest.approx(np.mean([c["diversity"] for c in per_class.values()]))
    # the reference features by class are cached beside the statistics: a second evaluate extracts no reference
    cached = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert len(cached) == 2 and "-by-class-" in cached[1]
    with np.load(tmp_path / "stats" / cached[1]) as z:
        features, labels = z["features"], z["labels"]
    assert features.shape[0] == len(labels) == 10_000 and np.bincount(labels).tolist()[7] == 1028  # MNIST test 7s
    import minidiffusion.evaluate
    import minidiffusion.features

    extracted, real_extract = [], minidiffusion.features.extract
    for module in (minidiffusion.features, minidiffusion.evaluate):
        monkeypatch.setattr(module, "extract", lambda *a, **k: extracted.append(k["desc"]) or real_extract(*a, **k))
    again = evaluate()
    assert extracted == ["sample features"]
    assert {k: c["fid"] for k, c in again["per_class"].items()} == {k: c["fid"] for k, c in per_class.items()}


def test_snapshots_and_videos_of_a_conditional_run_have_a_row_per_class(run, tmp_path, monkeypatch):
    """The denoising frames lay out the classes' consecutive runs one per row, as the run's PNG grids do."""
    import minidiffusion.visualize as visualize
    from minidiffusion.cli import main

    made = []
    real = visualize.DenoisingRecorder

    def recorder(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(visualize, "DenoisingRecorder", recorder)
    assert main(["sample", "--checkpoint", str(run), "--num-images", "6", "--batch-size", "6", "--snapshots", "1,0",
                 "--no-progress", "--out", str(tmp_path / "snap.png")]) == 0
    (rec,) = made
    assert rec.nrow == 2  # 3 classes x 2 images
    frame = rec.frames[0]  # (H, W, C): 3 rows of 2 images of 8 px, 2 px apart
    assert frame.shape[:2] == (3 * 10 + 2, 2 * 10 + 2)
