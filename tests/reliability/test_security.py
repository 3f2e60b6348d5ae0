"""No pickle: checkpoints are safetensors + JSON, the only unpickler is CIFAR's numpy-only one, and files crafted to
run code when unpickled are refused without running it."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.data.cifar import _NumpyOnlyUnpickler, load_batch, load_cifar10
from minidiffusion.errors import UserError

SRC = Path(__file__).resolve().parents[2] / "src" / "minidiffusion"
CIFAR = SRC / "data" / "cifar.py"


def calls(tree: ast.AST):
    """(dotted name, call node) of every call, e.g. ('torch.load', node) or ('np.load', node)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def keyword(node: ast.Call, name: str):
    """The constant value of keyword ``name`` (None when absent; '?' when not a constant)."""
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "?"
    return None


PICKLE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pickle.dump", "pickle.dumps", "_pickle.loads",
                "dill.load", "dill.loads", "joblib.load", "marshal.loads", "torch.save",
                "torch.serialization.add_safe_globals"}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "joblib", "marshal"}


def unsafe_deserialization(source: str, *, unpickler_allowed: bool = False) -> list[str]:
    """Lines of ``source`` that could unpickle (or write pickles): what the source test forbids."""
    problems = []
    tree = ast.parse(source)
    torch_load_imported = any(isinstance(n, ast.ImportFrom) and n.module == "torch" and
                              any(a.name == "load" for a in n.names) for n in ast.walk(tree))
    for name, node in calls(tree):
        line = f"line {node.lineno}: {name}(...)"
        if name.endswith("torch.load") or (name == "load" and torch_load_imported):
            if keyword(node, "weights_only") is not True:
                problems.append(f"{line} without weights_only=True")
        if name in PICKLE_CALLS:
            problems.append(line)
        if name.split(".")[0] in ("np", "numpy") and name.split(".")[-1] == "load":
            if keyword(node, "allow_pickle") not in (None, False):
                problems.append(f"{line} with allow_pickle")
    if not unpickler_allowed:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases):
                problems.append(f"line {node.lineno}: unpickler class {node.name}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n in PICKLE_MODULES for n in names):
                    problems.append(f"line {node.lineno}: imports {', '.join(names)}")
    return problems


def test_no_unsafe_deserialization_in_the_source():
    problems = {str(path.relative_to(SRC)): unsafe_deserialization(path.read_text(), unpickler_allowed=path == CIFAR)
                for path in sorted(SRC.rglob("*.py"))}
    assert {where: found for where, found in problems.items() if found} == {}


@pytest.mark.parametrize("bad", [
    "import torch\nsd = torch.load(path)",
    "import torch\nsd = torch.load(path, weights_only=False)",
    "from torch import load\nsd = load(path, map_location='cpu')",
    "import pickle\nx = pickle.loads(data)",
    "import numpy as np\nx = np.load(path, allow_pickle=True)",
    "import pickle\nclass U(pickle.Unpickler):\n    pass",
    "import torch\ntorch.save(state, path)",
])
def test_the_source_check_catches_each_pattern(bad):
    assert unsafe_deserialization(bad) != []
    assert unsafe_deserialization("import torch\nsd = torch.load(path, weights_only=True)") == []


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("builtins", "getattr"),
                                          ("subprocess", "Popen"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
                                          ("torch", "load"), ("pickle", "loads"), ("importlib", "import_module")])
def test_the_cifar_unpickler_refuses_everything_but_numpy_arrays(module, name):
    """The one allowed unpickler resolves names from a fixed table and imports nothing."""
    unpickler = _NumpyOnlyUnpickler(io.BytesIO(b""))
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        unpickler.find_class(module, name)
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray


class Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload(Payload):
    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_the_payloads_do_run_when_unpickled_normally(tmp_path):
    """Checks the test itself: these pickles are live, so their refusal below means something."""
    for k, payload in enumerate((Payload, ExecPayload)):
        marker = tmp_path / f"marker{k}"
        pickle.loads(pickle.dumps(payload(marker)))
        assert marker.exists()


@pytest.mark.parametrize("payload", [Payload, ExecPayload])
@pytest.mark.parametrize("hidden", [False, True], ids=["bare", "inside a real batch"])
def test_a_malicious_cifar_pickle_runs_no_code(tmp_path, payload, hidden):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    if hidden:  # a genuine-looking batch with the payload as its labels
        evil = {b"data": np.zeros((2, 3072), np.uint8), b"labels": evil}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UserError, match=r"refusing to unpickle (posix\.system|__builtin__\.exec) from .*data_batch_1"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_batch(folder / "test_batch")
    assert not marker.exists()


def test_a_real_cifar_batch_still_loads(tmp_path):
    """The restriction keeps what numpy needs, with numpy's own pickles of several protocols."""
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    for protocol in (2, 4, 5):
        path = tmp_path / f"batch{protocol}"
        path.write_bytes(pickle.dumps({b"data": images, b"labels": [1, 2, 3]}, protocol=protocol))
        data, labels = load_batch(path)
        assert np.array_equal(data.reshape(3, 3072), images) and labels.tolist() == [1, 2, 3]


# -- checkpoints -------------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def point_record_at(run: Path, content: bytes, name: str = "ckpt_00000006.safetensors") -> Path:
    """Replace the checkpoint's tensor file with ``content`` and fix the record's checksum to match: only the format
    of the file stands between the loader and the payload."""
    record_path = run / "checkpoints" / "ckpt_00000006.json"
    (run / "checkpoints" / name).write_bytes(content)
    record = json.loads(record_path.read_text())
    record.update(weights=name, sha256=sha256(run / "checkpoints" / name))
    record_path.write_text(json.dumps(record))
    return record_path


def torch_pickle(payload) -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"payload-{os.getpid()}.pt"
    torch.save({"model.weight": torch.zeros(2), "extra": payload}, path)  # a classic .pt / .bin: zip + pickle
    try:
        return path.read_bytes()
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", ["torch.save zip", "raw pickle", "pickle named .pt"])
def test_a_checkpoint_tensor_file_holding_a_pickle_is_refused(trained_run, tmp_path, kind):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(trained_run, run)
    content = {"torch.save zip": torch_pickle(Payload(marker)), "raw pickle": pickle.dumps(Payload(marker)),
               "pickle named .pt": torch_pickle(Payload(marker))}[kind]
    record = point_record_at(run, content, "evil.pt" if kind == "pickle named .pt" else "ckpt_00000006.safetensors")
    with pytest.raises(UserError, match="unreadable tensor file"):
        load_checkpoint(record)
    assert not marker.exists()


def test_a_checkpoint_record_holding_a_pickle_is_refused(trained_run, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(trained_run, run)
    record = run / "checkpoints" / "ckpt_00000006.json"
    for content in (pickle.dumps(Payload(marker)), pickle.dumps(Payload(marker), protocol=0)):
        record.write_bytes(content)
        with pytest.raises(UserError, match="not a minidiffusion checkpoint"):
            load_checkpoint(record)
    assert not marker.exists()


def test_the_record_cannot_point_outside_its_folder(trained_run, tmp_path):
    """``weights`` is a file name: a path in it (``../x``, ``/etc/x``) is reduced to its last part."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(run / "checkpoints" / "ckpt_00000006.safetensors", outside)
    (run / "checkpoints" / "ckpt_00000006.safetensors").unlink()
    record_path = run / "checkpoints" / "ckpt_00000006.json"
    for weights in ("../../outside.safetensors", str(outside)):
        record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "weights": weights}))
        with pytest.raises(UserError, match=r"its tensor file outside\.safetensors is missing"):
            load_checkpoint(record_path)


def test_checkpoints_are_safetensors_and_json_only(trained_run):
    files = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert files == [f"ckpt_0000000{s}.{ext}" for s in (3, 6) for ext in ("json", "safetensors")]
    for path in (trained_run / "checkpoints").glob("*.json"):
        json.loads(path.read_text())  # plain JSON
    for path in (trained_run / "checkpoints").glob("*.safetensors"):
        header_size = int.from_bytes(path.read_bytes()[:8], "little")
        header = json.loads(path.read_bytes()[8:8 + header_size])  # the safetensors layout: u64 size + JSON header
        assert all(v["dtype"] in ("F32", "I64") for k, v in header.items() if k != "__metadata__")
