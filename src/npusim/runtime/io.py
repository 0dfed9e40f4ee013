"""Run-folder files: atomic writes (temporary file + rename), strict JSON, checksummed
weights-only checkpoints, the folder's lock."""

from __future__ import annotations

import enum
import fcntl
import hashlib
import io
import json
import math
import os
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from npusim.core.errors import NpusimError

LOCK = ".npusim.lock"
FORMAT = "npusim-checkpoint"  # the wrapper save_state writes around a state
VERSION = 1


class RunError(NpusimError, RuntimeError):
    """A run folder or one of its files cannot be used as asked; the message names the file."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path`` and rename it into place, so an
    interrupted run never leaves a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def json_safe(x: Any) -> Any:
    """``x`` with every non-finite float replaced by a string (``"nan"``, ``"inf"``, ``"-inf"``),
    recursively, so the JSON written is valid (JSON has no NaN or Infinity)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def atomic_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as strict JSON (non-finite floats as strings, see :func:`json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file strictly (no NaN / Infinity); any problem is a :class:`RunError`
    naming the file."""
    path = Path(path)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RunError(f"{path} is not valid JSON ({e}); move or delete it") from None


def clean_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) an interrupted :func:`atomic_write` left in
    ``folder``; call only while holding the folder's :class:`RunLock`. Returns those deleted."""
    gone = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


class RunLock:
    """An exclusive lock on a run folder (``flock`` on ``.npusim.lock``), so two commands never
    write one folder at once. The kernel drops it when the process ends, even on ``kill -9``, so
    a dead run leaves no stale lock. Use as a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunError(
                f"{self.folder} is in use by another npusim process (pid {holder}); wait for it "
                "to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ---- checkpoints: weights-only pickle, checksummed ----------------------------------------
def _encode(x: Any) -> Any:
    """Checkpoint state in types a weights-only load accepts (numpy arrays become tagged lists
    of Python numbers, numpy scalars Python numbers)."""
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.dtype.str, "shape": list(x.shape), "values": x.ravel().tolist()}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, enum.Enum):  # e.g. Phase keys of the ledger: their plain values
        return _encode(x.value)
    if isinstance(x, dict):
        return {_encode(k): _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_encode(v) for v in x)
    return x


def _decode(x: Any, path: Path) -> Any:
    if isinstance(x, dict):
        if "__ndarray__" in x:
            try:
                dtype = np.dtype(x["__ndarray__"])
                if dtype.kind not in "biuf":
                    raise TypeError(f"dtype {dtype} not allowed")
                return np.array(x["values"], dtype=dtype).reshape(x["shape"])
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                raise RunError(f"{path}: a stored array is malformed ({e})") from None
        return {k: _decode(v, path) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v, path) for v in x]
    return x


def digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's content (structure, numbers and every tensor's bytes)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if x is None:
            h.update(b"N")
        elif isinstance(x, bool):
            h.update(b"B1" if x else b"B0")
        elif isinstance(x, int):
            h.update(b"I%d;" % x)
        elif isinstance(x, float):
            h.update(b"F" + struct.pack("<d", x))
        elif isinstance(x, str):
            b = x.encode("utf-8", "surrogatepass")
            h.update(b"S%d;" % len(b) + b)
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"D%d;" % len(x))
            for k, v in x.items():
                feed(k)
                feed(v)
        elif isinstance(x, (list, tuple)):
            h.update(b"L%d;" % len(x))
            for v in x:
                feed(v)
        else:
            raise TypeError(f"cannot checksum a {type(x).__name__} in a checkpoint")

    feed(obj)
    return h.hexdigest()


def save_state(state: Any, path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts, numpy arrays) atomically, in
    types a weights-only load accepts, with the SHA-256 of its content."""
    enc = _encode(state)
    wrapper = {"format": FORMAT, "version": VERSION, "sha256": digest(enc), "state": enc}
    buf = io.BytesIO()
    torch.save(wrapper, buf)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))


def load_state(path: str | Path) -> Any:
    """What :func:`save_state` wrote, loaded without running code from the file
    (``weights_only``) and its checksum verified; anything else is a :class:`RunError`."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's advice on unsafe files: our error says it
            warnings.simplefilter("ignore", UserWarning)
            wrapper = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise RunError(f"{path} not found") from None
    except Exception as e:  # any unreadable file; weights_only never runs code from it
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        why = next((ln for ln in lines if "Unpickler error" in ln), lines[0])
        raise RunError(f"cannot read checkpoint {path}: {why}") from None
    if not (isinstance(wrapper, dict) and wrapper.get("format") == FORMAT):
        raise RunError(f"{path} is not an npusim checkpoint (or one of an older npusim)")
    if wrapper.get("version") != VERSION or not isinstance(wrapper.get("sha256"), str):
        raise RunError(f"{path}: unsupported checkpoint version {wrapper.get('version')!r}")
    try:
        ok = digest(wrapper.get("state")) == wrapper["sha256"]
    except TypeError:
        ok = False
    if not ok:
        raise RunError(f"{path} is damaged: its checksum does not match its content")
    return _decode(wrapper["state"], path)
