"""A small digit classifier trained by this project: the fast, offline feature extractor for MNIST.

Inception-V3 was trained on photographs and sees a 28x28 digit blown up to 299x299; a classifier trained on
the digits themselves is both far cheaper (a CPU scores thousands of images a second) and more telling: its
128 penultimate features separate the ten classes, and its softmax says whether a sample *is* a digit -- it was
trained to spread its probability evenly over non-digits (noise, blobs, blank images, shuffled strokes, two
digits at once). FID/KID on those features and IS on that softmax are the MNIST analogues of the Inception
metrics; their numbers compare runs of this project, not Inception numbers in papers.

The weights ship in ``minidiffusion/weights/mnist_classifier.safetensors``; ``train_classifier`` (or
``scripts/train_classifier.py``) recreates them bit for bit from a fixed seed in about two CPU minutes.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import file_sha256
from ..errors import UserError
from ..images import to_model_range
from ..rundir import atomic_path

log = logging.getLogger("minidiffusion")

INPUT_SIZE = 28
NUM_CLASSES = 10
FEATURE_DIM = 128
ARCHITECTURE = ("conv3x3(1->16)-batchnorm-relu-maxpool2, conv3x3(16->32)-batchnorm-relu-maxpool2, "
                "fc(1568->128) [features: these pre-activations / their training-set RMS]-relu, fc(128->10)")


class DigitClassifier(nn.Module):
    """28x28 grey image in [-1, 1] -> (128 penultimate features, 10 logits): two conv layers, two linear ones.

    The features are the pre-activations of the 128-unit layer, divided by their root mean square over the training
    set (``feature_scale``, set after training). Before the ReLU, because training with non-digits drives the ReLU
    outputs of every kind of garbage to zero, which would put all bad samples at the same distance from the data;
    scaled, so that KID's kernel (x.y/d + 1)^3 sees inputs of order 1, as with Inception's features.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = FEATURE_DIM):
        super().__init__()
        # BatchNorm makes three epochs enough for > 99% test accuracy; in eval mode it is a fixed affine map.
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 7 * 7, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)  # (B, 16, 14, 14)
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)  # (B, 32, 7, 7)
        h = self.fc1(x.flatten(1))  # (B, 128)
        return h / self.feature_scale, self.fc2(F.relu(h))  # (B, 128), (B, 10)


def weights_path(dataset: str) -> Path:
    """Where the shipped weights for ``dataset`` live inside the package (the file may not exist)."""
    return Path(str(resources.files("minidiffusion.weights").joinpath(f"{dataset}_classifier.safetensors")))


def load_classifier(dataset: str = "mnist", path: str | Path | None = None) -> tuple[DigitClassifier, dict]:
    """The trained classifier for ``dataset`` (eval mode, CPU) and its metadata (accuracy, how it was trained).

    The metadata gains ``sha256``, the hash of the weight file: statistics computed with other weights are stale.
    """
    path = Path(path) if path else weights_path(dataset)
    if not path.is_file():
        raise UserError(f"no classifier weights for {dataset} at {path}: train them with "
                        f"`python scripts/train_classifier.py --dataset {dataset}` (needs the {dataset} data), "
                        f"or use --features inception")
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    net = DigitClassifier()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the digit classifier ({str(e).splitlines()[0]})") from None
    meta["sha256"] = file_sha256(path)
    meta["path"] = str(path)
    return net.eval().requires_grad_(False), meta


def prepare(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float (N, 1, 28, 28) in [-1, 1]; other sizes are resized (antialiased bilinear)."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {pixels.dtype} {tuple(pixels.shape)}")
    if pixels.shape[1] != 1:
        raise UserError(f"the digit classifier takes grey images, got {pixels.shape[1]} channels "
                        f"(use --features inception for colour images)")
    if pixels.shape[-1] != INPUT_SIZE or pixels.shape[-2] != INPUT_SIZE:
        from ..data import resize

        pixels = resize(pixels.cpu(), INPUT_SIZE).to(pixels.device)
    return to_model_range(pixels)


@torch.no_grad()
def accuracy(net: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of uint8 (N, 1, 28, 28) ``images`` whose predicted class is ``labels``."""
    net.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        _, logits = net(prepare(images[start:start + batch_size]))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(images)


@torch.no_grad()
def feature_rms(net: DigitClassifier, images: torch.Tensor, batch_size: int = 1000) -> float:
    """Root mean square of the unscaled features of uint8 ``images`` (all of them, all 128 dimensions)."""
    net.eval()
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        features, _ = net(prepare(images[start:start + batch_size]))
        total += float((features.double() * net.feature_scale).pow(2).sum())
        count += features.numel()
    return (total / count) ** 0.5


def train_classifier(dataset: str = "mnist", out: str | Path | None = None, *, root: str = "", epochs: int = 4,
                     batch_size: int = 128, outliers_per_batch: int = 40, outlier_weight: float = 0.5,
                     lr: float = 3e-3, seed: int = 0, threads: int = 1) -> dict:
    """Train the digit classifier on ``dataset``'s train split and save it with its test accuracy.

    Besides the digits, each batch carries ``outliers_per_batch`` images that are *not* digits (see
    :func:`non_digits`), trained towards the uniform distribution over the classes (Outlier Exposure, Hendrycks
    et al. 2019). Without them a ReLU network is confidently wrong far from its data -- uniform noise came out
    as an "8" with probability 1.0 -- and "fraction of confident samples" would pass a model that draws noise.

    Reproducible: the initial weights, the batch order, the shifts and the outliers all come from ``seed``, and
    the thread count is fixed (another thread count may change float summation order, hence the last bits).
    One thread by default: on a small shared CPU, two OpenMP threads fighting other processes run slower.
    Adam with a one-cycle learning rate; random shifts of up to 2 pixels. Returns the metadata it saves.
    """
    from ..config import DataConfig
    from ..data import load_dataset

    out = Path(out) if out else weights_path(dataset)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train = load_dataset(DataConfig(name=dataset, root=root), "train")
    test = load_dataset(DataConfig(name=dataset, root=root), "test")
    if train.labels is None or train.image_size != INPUT_SIZE or train.channels != 1:
        raise UserError(f"{dataset}: the digit classifier needs labelled 1x28x28 images")

    net = DigitClassifier().to(memory_format=torch.channels_last)  # faster convolutions on CPU
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = len(train) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(seed)
    start_time = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train), generator=g)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            digits = shift(prepare(train.tensor[idx]), max_shift=2, generator=g)  # (B, 1, 28, 28)
            others = non_digits(digits, train.labels[idx], outliers_per_batch, g)  # (B', 1, 28, 28)
            x = torch.cat([digits, others]).contiguous(memory_format=torch.channels_last)
            _, logits = net(x)
            loss = F.cross_entropy(logits[:len(idx)], train.labels[idx])
            # cross-entropy to the uniform distribution: mean over classes of -log p
            loss = loss - outlier_weight * F.log_softmax(logits[len(idx):], dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        acc = accuracy(net, test.tensor, test.labels)
        log.info("epoch %d: loss %.4f, test accuracy %.4f (%.0f s)", epoch + 1, loss.item(), acc,
                 time.perf_counter() - start_time)
    net.feature_scale.fill_(feature_rms(net, train.tensor))

    meta = {
        "format": "minidiffusion-digit-classifier",
        "dataset": dataset,
        "architecture": ARCHITECTURE,
        "input": "uint8 pixels -> x / 127.5 - 1, 1x28x28",
        "feature_dim": str(FEATURE_DIM),
        "feature_scale": f"{float(net.feature_scale):.6g}",
        "test_accuracy": f"{acc:.4f}",
        "train_command": f"python scripts/train_classifier.py --dataset {dataset} --epochs {epochs} --seed {seed}",
        "hyperparameters": json.dumps({"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                                       "threads": threads, "optimizer": "Adam + OneCycleLR",
                                       "augmentation": "random shift <= 2 px",
                                       "outlier_exposure": {"per_batch": outliers_per_batch,
                                                            "weight": outlier_weight,
                                                            "kinds": list(OUTLIER_KINDS)}}),
        "train_seconds": f"{time.perf_counter() - start_time:.0f}",
        "torch_version": torch.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # retraining over the shipped weights never leaves them half written
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    return meta


OUTLIER_KINDS = ("uniform noise", "smooth blobs", "blank", "shuffled 7x7 patches", "two digits overlaid")


def non_digits(digits: torch.Tensor, labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` images in [-1, 1] that are not digits, an equal share of each of ``OUTLIER_KINDS`` -> (n, 1, 28, 28).

    Noise, blobs and blank images are what an untrained or collapsed diffusion model draws; shuffled patches keep
    real strokes but lose the shape; overlaid pairs (of different classes) are the "two digits at once" failure of
    a half-trained model. Patches and overlays are made from the batch's own (shifted) digits.
    """
    b, _, h, w = digits.shape
    k = n // len(OUTLIER_KINDS)
    noise = torch.rand((k, 1, h, w), generator=generator) * 2 - 1
    coarse = torch.rand((k, 1, 7, 7), generator=generator) * 2 - 1  # blobs: noise drawn at 7x7, smoothly enlarged
    blobs = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    blank = (torch.rand((k, 1, 1, 1), generator=generator) ** 3 * 2 - 1).expand(k, 1, h, w)  # mostly near black
    pick = torch.randint(0, b, (k,), generator=generator)
    patches = digits[pick].unfold(2, 7, 7).unfold(3, 7, 7).reshape(k, 1, 16, 7, 7)  # 4x4 grid of 7x7 patches
    perm = torch.argsort(torch.rand((k, 16), generator=generator), dim=1)
    patches = patches[torch.arange(k)[:, None], 0, perm]  # (k, 16, 7, 7), each image's patches shuffled
    shuffled = patches.reshape(k, 4, 4, 7, 7).permute(0, 1, 3, 2, 4).reshape(k, 1, h, w)
    first, second = torch.randint(0, b, (2, n - 4 * k), generator=generator)
    second = torch.where(labels[first] == labels[second], (second + 1) % b, second)  # mostly different classes
    overlaid = torch.maximum(digits[first], digits[second])  # the union of two sets of strokes
    return torch.cat([noise, blobs, blank, shuffled, overlaid])


def shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of (B, C, H, W) by up to ``max_shift`` pixels in x and y, filling with background -1."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
