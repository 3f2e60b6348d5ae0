"""Property-based fuzzing of what reads user input: the config parser and the checkpoint reader.

The property is always the same: success, or a clean UserError -- never another exception, never a hang (each test
runs under an alarm).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.config import Config, load_config, parse_override, read_toml
from minidiffusion.errors import UserError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def no_hang(seconds: int = 120):
    def fail(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def user_error_or_success(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        assert str(e), "an error without a message"
        return None


# -- config ----------------------------------------------------------------------------------------------------------

SECTIONS = {f.name: [g.name for g in dataclasses.fields(f.default_factory())] for f in dataclasses.fields(Config)}
NAMES = sorted(SECTIONS) + sorted({k for keys in SECTIONS.values() for k in keys})

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["ddpm", "cosine", "fp16", "folder", "jsonl", "auto", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
keys = st.sampled_from(NAMES) | st.text(max_size=8) | st.integers(-3, 3)


@FUZZ
@given(st.dictionaries(keys, st.dictionaries(keys, values, max_size=6) | values, max_size=6) | values)
def test_config_from_random_nested_dicts(d):
    with no_hang():
        cfg = user_error_or_success(Config.from_dict, d)
    if cfg is not None:
        assert Config.from_dict(cfg.to_dict()) == cfg  # what is accepted round-trips


@FUZZ
@given(st.sampled_from([(s, k) for s, ks in SECTIONS.items() for k in ks]), values)
def test_config_one_real_key_with_a_random_value(key, value):
    section, name = key
    with no_hang():
        cfg = user_error_or_success(Config.from_dict, {section: {name: value}})
    if cfg is not None:
        assert Config.from_dict(cfg.to_dict()) == cfg
        assert load_config(None, []).replace(**{section: {name: getattr(getattr(cfg, section), name)}}) == cfg


override_text = st.text(max_size=40) | st.builds(
    lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(list(SECTIONS) + ["x", ""]), st.sampled_from(NAMES + ["", "."]),
    st.text(max_size=20) | st.sampled_from(["[" * 600, "{a=" * 300, "1,2,,3", '"x', "1e999", "0x10", "true,1"]))


@FUZZ
@given(override_text)
def test_parse_override_on_random_text(text):
    with no_hang():
        parsed = user_error_or_success(parse_override, text)
        if parsed is not None:
            section, name, _ = parsed
            assert section and name and "=" not in section
        user_error_or_success(load_config, None, [text])


toml_bytes = st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | st.builds(
    lambda head, depth, tail: (head + "[" * depth + tail).encode(), st.sampled_from(["x = ", "[a]\nb = ", ""]),
    st.integers(0, 3000), st.text(max_size=10))


@FUZZ
@given(toml_bytes)
def test_read_toml_on_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp, no_hang():
        path = Path(tmp) / "c.toml"
        path.write_bytes(data)
        table = user_error_or_success(read_toml, path)
        if table is not None:
            assert isinstance(table, dict)
            user_error_or_success(Config.from_dict, table)


# -- checkpoints -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(trained_run) -> tuple[bytes, bytes]:
    """The bytes of a valid checkpoint pair (record, tensors)."""
    ckpt = trained_run / "checkpoints"
    return (ckpt / "ckpt_00000006.json").read_bytes(), (ckpt / "ckpt_00000006.safetensors").read_bytes()


def load_pair(record: bytes, tensors: bytes | None, *, verify: bool = True):
    """Write a checkpoint pair to a fresh folder and load it: the checkpoint or None (after a UserError)."""
    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "ckpt_00000006.json").write_bytes(record)
        if tensors is not None:
            (tmp / "ckpt_00000006.safetensors").write_bytes(tensors)
        with no_hang():
            found = user_error_or_success(load_checkpoint, tmp / "ckpt_00000006.json", verify=verify)
            assert user_error_or_success(load_checkpoint, tmp) is None or found is not None  # the folder form agrees
        return found
    finally:
        shutil.rmtree(tmp)


def with_checksum(record: bytes, tensors: bytes) -> bytes:
    """The record, updated to carry the true checksum of ``tensors`` (so that the loader parses them)."""
    import hashlib

    return json.dumps({**json.loads(record), "sha256": hashlib.sha256(tensors).hexdigest()}).encode()


@FUZZ
@given(st.binary(max_size=300), st.binary(max_size=300) | st.none())
def test_checkpoint_from_random_bytes(record, tensors):
    assert load_pair(record, tensors) is None


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=15)


@FUZZ
@given(json_values)
def test_checkpoint_from_random_json(pristine, value):
    assert load_pair(json.dumps(value).encode(), pristine[1]) is None


RECORD_KEYS = ["format", "version", "step", "weights", "sha256", "config", "data"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(RECORD_KEYS), json_values | st.just("DELETE")), min_size=1, max_size=3))
def test_checkpoint_with_mutated_record(pristine, changes):
    record = json.loads(pristine[0])
    for key, value in changes:
        if value == "DELETE":
            record.pop(key, None)
        else:
            record[key] = value
    found = load_pair(json.dumps(record).encode(), pristine[1])
    if found is not None:
        assert found.tensors.keys() and isinstance(found.step, int)


mutations = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 2**20),
                               st.integers(0, 255)), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for kind, where, byte in edits:
        i = where % max(len(data), 1)
        if kind == "flip" and data:
            data[i] ^= byte or 1
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = bytes([byte])
        elif kind == "delete" and data:
            del data[i]
    return bytes(data)


@FUZZ
@given(mutations, st.booleans())
def test_checkpoint_with_mutated_tensor_file(pristine, edits, header_only):
    record, tensors = pristine
    if header_only:  # aim at the safetensors header: sizes, dtypes, shapes and offsets are where parsers break
        header_end = 8 + int.from_bytes(tensors[:8], "little")
        edits = [(kind, where % header_end, byte) for kind, where, byte in edits]
    damaged = mutate(tensors, edits)
    assume(damaged != tensors)
    assert load_pair(record, damaged) is None  # the checksum catches every change
    load_pair(with_checksum(record, damaged), damaged)  # past the checksum: the safetensors reader must cope
    load_pair(record, damaged, verify=False)


@FUZZ
@given(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets"]),
                       st.sampled_from(["F32", "F16", "I64", "BOOL", "X9", "", None, 0, -1, 2**64, [2**40, 2**40],
                                        [1, -1], [], [0, 8], [8, 0], [0, 2**40], [[1]], {"a": 1}]), min_size=1),
       st.integers(0, 50))
def test_checkpoint_with_a_crafted_safetensors_header(pristine, fields, which):
    record, tensors = pristine
    size = int.from_bytes(tensors[:8], "little")
    header = json.loads(tensors[8:8 + size])
    name = sorted(k for k in header if k != "__metadata__")[which % (len(header) - ("__metadata__" in header))]
    header[name] = {**header[name], **fields}
    new_header = json.dumps(header).encode()
    crafted = len(new_header).to_bytes(8, "little") + new_header + tensors[8 + size:]
    load_pair(with_checksum(record, crafted), crafted)
