"""Reader for IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

IDX layout: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Any missing, truncated or mismatched file raises
one :class:`IdxError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from npusim.core.errors import NpusimError


class IdxError(NpusimError, ValueError):
    """An IDX file is missing, truncated or inconsistent."""


_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into an array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise IdxError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise IdxError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise IdxError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise IdxError(f"{path} is truncated: header needs {head} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    dtype = np.dtype(_TYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - head != need:
        raise IdxError(
            f"{path} is truncated or padded: shape {dims} needs {need} data bytes, "
            f"file has {len(raw) - head}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / name).is_file():
            return folder / name
    raise IdxError(f"missing IDX file {stem}[.gz] in {folder}")


def load_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels ``{prefix}-images-idx3-ubyte`` / ``{prefix}-labels-idx1-ubyte``."""
    if not folder.is_dir():
        raise IdxError(f"data folder not found: {folder}")
    x = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if x.ndim != 3 or y.ndim != 1:
        raise IdxError(f"{prefix}: expected 3-d images and 1-d labels, got {x.shape}, {y.shape}")
    if len(x) != len(y):
        raise IdxError(f"{prefix}: {len(x)} images but {len(y)} labels in {folder}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise IdxError(f"{prefix}: labels outside 0..9 in {folder}")
    return x.astype(np.float64), y.astype(np.int64)
