"""Run-folder files: atomic writes (temporary file + rename), strict JSON, the folder's lock."""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from npusim.core.errors import NpusimError

LOCK = ".npusim.lock"


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
