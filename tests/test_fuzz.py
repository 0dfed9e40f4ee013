"""Property-based fuzzing (hypothesis) of everything that reads a user's file: the chip TOML
loader, the IDX reader and the run-folder readers (results.json, eval.json, checkpoint.pt).
No input may raise anything but an NpusimError, and nothing accepted may hold NaN or values out
of range."""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npusim.chip import list_presets, load_chip, spec_to_toml
from npusim.chip.spec import SECTIONS
from npusim.core.errors import NpusimError
from npusim.data.idx import load_idx_pair, read_idx
from npusim.runtime.config import TrainConfig
from npusim.runtime.io import digest
from npusim.runtime.run import (
    CHECKPOINT,
    EVAL,
    RESULTS,
    load_checkpoint,
    read_eval,
    read_results,
    train_run,
)

# deterministic in the suite; NPUSIM_FUZZ_EXAMPLES=5000 NPUSIM_FUZZ_RANDOM=1 explores further
EXAMPLES = int(os.environ.get("NPUSIM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not os.environ.get("NPUSIM_FUZZ_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
TMP = Path(tempfile.mkdtemp(prefix="npusim-fuzz-"))


def _floats_ok(x) -> bool:
    """No NaN anywhere in a nested structure (tensors included)."""
    if isinstance(x, float):
        return not math.isnan(x)
    if isinstance(x, torch.Tensor):
        return not bool(torch.isnan(x).any()) if x.is_floating_point() else True
    if isinstance(x, np.ndarray):
        return not (x.dtype.kind == "f" and np.isnan(x).any())
    if isinstance(x, dict):
        return all(_floats_ok(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_floats_ok(v) for v in x)
    return True


# ---- chip TOML ---------------------------------------------------------------------------------
PRESET = load_chip("rram").to_dict()
UNITS = ["uS", "S", "mV", "V", "ns", "s", "um2", "m2", "pJ", "J", "fF", "MHz", "xyz", ""]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=True)


scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=12),
    st.builds(lambda x, u: f"{x} {u}", st.floats(allow_nan=True), st.sampled_from(UNITS)),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))


KEYS = [(sec, k) for sec, t in PRESET.items() if isinstance(t, dict) for k in t if k != "sources"]


@st.composite
def chip_texts(draw) -> str:
    """A preset with 0-3 keys changed or dropped, a section left out, an unknown key or a junk
    line."""
    changed = dict(draw(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=3)))
    dropped = set(draw(st.lists(st.sampled_from(KEYS), max_size=2)))
    left_out = draw(st.sampled_from([None, None, None, *SECTIONS]))
    lines = []
    for section, table in PRESET.items():
        if not isinstance(table, dict) or section == left_out:
            continue
        lines.append(f"[{section}]")
        for key, v in table.items():
            if key == "sources" or (section, key) in dropped:
                continue
            lines.append(f"{key} = {_toml_value(changed.get((section, key), v))}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"{draw(st.sampled_from(['extra', 'g_max', 'x y', '[device]']))} = 1")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines) + "\n"


def _check_chip(path: Path) -> None:
    try:
        spec = load_chip(str(path))
    except NpusimError:
        return
    data = spec.to_dict()
    assert _floats_ok(data)
    again = path.with_suffix(".again.toml")  # accepted values are in range: they load again
    again.write_text(spec_to_toml(spec), encoding="utf-8")
    assert load_chip(str(again)) == spec


@FUZZ
@given(chip_texts())
def test_chip_loader_on_fuzzed_toml(text):
    path = TMP / "chip.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check_chip(path)


@FUZZ
@given(st.text(max_size=300))
def test_chip_loader_on_arbitrary_text(text):
    path = TMP / "text.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # not UTF-8 at all: see test_chip_loader_on_binary_file
    _check_chip(path)


def test_chip_loader_on_binary_file(tmp_path):
    path = tmp_path / "chip.toml"
    path.write_bytes(b"\x80\x81\xfe\xff binary")
    with pytest.raises(NpusimError):
        load_chip(str(path))


def test_cli_chip_check_on_binary_and_empty_files(tmp_path):
    from npusim.cli.options import CliError, check_chip_arg

    for content in (b"\x80\x81\xfe\xff", b"", b'name = "x"\n'):
        (tmp_path / "c.toml").write_bytes(content)
        with pytest.raises(CliError, match="c.toml"):
            check_chip_arg(str(tmp_path / "c.toml"))
    for name in list_presets():
        check_chip_arg(name)


# ---- IDX ----------------------------------------------------------------------------------------
TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_files(draw) -> tuple[bytes, bool]:
    code = draw(st.sampled_from([*TYPES, 0x00, 0x07, 0xFF]))
    ndim = draw(st.integers(0, 6))
    dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    if draw(st.integers(0, 9)) == 0 and dims:
        dims[0] = draw(st.integers(0, 2**32 - 1))  # an absurd declared size
    head = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    if draw(st.integers(0, 9)) == 0:
        head = draw(st.binary(max_size=len(head) + 2))
    size = int(np.prod(dims, dtype=object)) * np.dtype(TYPES.get(code, ">u1")).itemsize
    n = min(size, 4096) + draw(st.sampled_from([0, 0, 0, -1, 1, 5]))
    body = draw(st.binary(min_size=max(n, 0), max_size=max(n, 0)))
    raw = head + body
    compress = draw(st.booleans())
    if compress:
        raw = gzip.compress(raw)
        if draw(st.integers(0, 4)) == 0 and len(raw) > 12:  # corrupt the stream
            i = draw(st.integers(10, len(raw) - 1))
            raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :]
    return raw, compress


@FUZZ
@given(idx_files())
def test_idx_reader_on_fuzzed_files(case):
    raw, compress = case
    path = TMP / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(raw)
    try:
        arr = read_idx(path)
    except NpusimError:
        return
    assert 1 <= arr.ndim <= 4 and _floats_ok(arr)
    assert bool(np.isfinite(arr).all()) if arr.dtype.kind == "f" else True


@FUZZ
@given(
    st.integers(0, 12),
    st.sampled_from([(28, 28), (27, 28), (28,)]),
    st.sampled_from(list(TYPES)),
    st.integers(-3, 300),
    st.integers(-1, 12),
)
def test_idx_pair_values_are_in_range(n, shape, code, pixel, label):
    folder = TMP / "pair"
    folder.mkdir(exist_ok=True)
    dtype = TYPES[code]
    img = np.full((n, *shape), pixel).astype(dtype)
    lab = (np.arange(n) % 10).astype(">u1")
    if n:
        lab[-1] = max(label, 0)
    for name, arr, c in (("images-idx3", img, code), ("labels-idx1", lab, 0x08)):
        head = bytes([0, 0, c, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (folder / f"train-{name}-ubyte").write_bytes(head + arr.tobytes())
    try:
        x, y = load_idx_pair(folder, "train")
    except NpusimError:
        return
    assert x.shape[1:] == (28, 28) and len(x) == len(y) > 0
    assert 0 <= x.min() and x.max() <= 255 and 0 <= y.min() and y.max() <= 9


# ---- run folders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    from npusim.runtime.ledger import Ledger

    out = tmp_path_factory.mktemp("fuzzrun") / "run"
    cfg = TrainConfig(dataset="digits", hidden=[4], epochs=1, sweeps=3, batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unconverged relaxations of a 3-sweep toy run
        train_run(cfg, out, progress=False, log=lambda s: None, ledger=Ledger())
    (out / EVAL).write_text(
        json.dumps(
            {
                "ideal": {
                    "chip": "ideal",
                    "split": "test",
                    "results": [{"after": "1h", "seconds": 3600.0, "test_error": 0.1}],
                }
            }
        )
    )
    return out


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.sampled_from(["nan", "inf", "free", "ideal", "test"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(x, prefix=()):
    """Every path to a value in a nested JSON structure."""
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*prefix, i))


def _set(x, path, value):
    if not path:
        return value
    x[path[0]] = _set(x[path[0]], path[1:], value)
    return x


@st.composite
def mutated_json(draw, original):
    """``original`` with 1-3 of its values (at any depth) replaced, removed or retyped."""
    doc = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        if path and draw(st.booleans()) and isinstance(_get(doc, path[:-1]), dict):
            del _get(doc, path[:-1])[path[-1]]
        else:
            doc = _set(doc, path, draw(json_values))
    return doc


def _get(x, path):
    for p in path:
        if not isinstance(x, (dict, list)):
            raise TypeError("path leads into a leaf")
        x = x[p]
    return x


def _check_accepted_results(res: dict) -> None:
    assert _floats_ok(res)
    for key in ("best_val_error", "test_error", "last_test_error"):
        assert res.get(key) is None or 0 <= res[key] <= 1
    for rec in res.get("epochs", []):
        assert all(0 <= rec[k] <= 1 for k in ("train_error", "val_error", "test_error"))
    TrainConfig.from_dict(res.get("config", {}))


@FUZZ
@given(data=st.data())
def test_results_reader_on_fuzzed_files(run_folder, data):
    original = json.loads((run_folder / RESULTS).read_text())
    folder = TMP / "results"
    folder.mkdir(exist_ok=True)
    doc = data.draw(st.one_of(mutated_json(original), json_values))
    text = json.dumps(doc)
    if data.draw(st.integers(0, 9)) == 0:  # damaged bytes
        i = data.draw(st.integers(0, len(text)))
        text = text[:i] + data.draw(st.sampled_from(["NaN", "\x00", "}", "Infinity", "\ud800"]))
    (folder / RESULTS).write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        res = read_results(folder)
    except NpusimError:
        return
    _check_accepted_results(res)


@FUZZ
@given(data=st.data())
def test_eval_reader_on_fuzzed_files(run_folder, data):
    original = json.loads((run_folder / EVAL).read_text())
    folder = TMP / "eval"
    folder.mkdir(exist_ok=True)
    doc = data.draw(st.one_of(mutated_json(original), json_values))
    (folder / EVAL).write_text(json.dumps(doc))
    try:
        ev = read_eval(folder)
    except NpusimError:
        return
    assert _floats_ok(ev)
    for table in ev.values():
        for row in table["results"]:
            assert math.isfinite(row["seconds"]) and row["seconds"] >= 0
            assert 0 <= row[f"{table['split']}_error"] <= 1


@settings(FUZZ, max_examples=max(EXAMPLES * 2 // 3, 1))
@given(data=st.data())
def test_checkpoint_loader_on_damaged_bytes(run_folder, data):
    raw = bytearray((run_folder / CHECKPOINT).read_bytes())
    folder = TMP / "ckpt"
    folder.mkdir(exist_ok=True)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    kind = data.draw(st.sampled_from(["flip", "truncate", "junk"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        raw = raw[: rng.randrange(len(raw))]
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    (folder / CHECKPOINT).write_bytes(bytes(raw))
    try:
        state = load_checkpoint(folder)
    except NpusimError:
        return
    assert _floats_ok(state)


def _tensor_paths(x, prefix=()):
    if isinstance(x, torch.Tensor):
        yield prefix
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _tensor_paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _tensor_paths(v, (*prefix, i))


@settings(FUZZ, max_examples=max(EXAMPLES * 2 // 3, 1))
@given(data=st.data())
def test_checkpoint_loader_on_wrong_structures_with_valid_checksums(run_folder, data):
    """A crafted checkpoint with a correct checksum but wrong content is still refused."""
    wrapper = torch.load(run_folder / CHECKPOINT, weights_only=True)
    state = wrapper["state"]
    paths = [p for p in _paths(state) if p] + list(_tensor_paths(state))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        value = data.draw(
            st.one_of(
                json_values,
                st.sampled_from(
                    [
                        torch.full((3,), float("nan")),
                        torch.zeros(2, 2),
                        torch.tensor([1, 2]),
                        torch.full((4, 4), 1e30),
                    ]
                ),
            )
        )
        try:  # an earlier change may have removed this path
            parent = _get(state, path[:-1])
            if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(path[-1], int)):
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    folder = TMP / "ckpt2"
    folder.mkdir(exist_ok=True)
    torch.save({**wrapper, "sha256": digest(state), "state": state}, folder / CHECKPOINT)
    try:
        loaded = load_checkpoint(folder)
    except NpusimError:
        return
    assert _floats_ok(loaded)
    TrainConfig.from_dict(loaded["config"]).resolved()


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
@given(data=st.data())
def test_report_command_on_fuzzed_results(run_folder, data, capsys):
    """`npusim report` on a damaged results.json ends in 0 or one error line, never a
    traceback."""
    from npusim.cli.main import main

    original = json.loads((run_folder / RESULTS).read_text())
    folder = TMP / "report"
    folder.mkdir(exist_ok=True)
    doc = data.draw(mutated_json(original))
    (folder / RESULTS).write_text(json.dumps(doc))
    code = main(["report", str(folder), "--no-files"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 or (code == 2 and len(err) == 1 and err[0].startswith("npusim: error:"))
