"""Reader for IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

IDX layout: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. The header is read and checked first; then
exactly the bytes it declares are read from the (streamed) file, so a small ``.gz`` that would
inflate to gigabytes is refused before it is inflated. Any missing, truncated, padded, corrupt
or mismatched file raises one :class:`IdxError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from npusim.data.errors import DatasetError


class IdxError(DatasetError):
    """An IDX file is missing, truncated, corrupt or inconsistent."""


_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_DATA_BYTES = 1 << 30  # 1 GiB: far above MNIST's 47 MB, far below a decompression bomb
MAX_DIMS = 4
IMAGE_SHAPE = (28, 28)  # MNIST and Fashion-MNIST


def read_idx(path: str | Path, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into an array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise IdxError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
                raise IdxError(f"{path} is not an IDX file (bad magic number)")
            ndim = head[3]
            if not 1 <= ndim <= MAX_DIMS:
                raise IdxError(f"{path}: {ndim} dimensions; an IDX array here has 1..{MAX_DIMS}")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise IdxError(f"{path} is truncated: the header needs {4 + 4 * ndim} bytes")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            dtype = np.dtype(_TYPES[head[2]])
            need = int(np.prod(dims, dtype=object)) * dtype.itemsize
            if need > max_bytes:
                raise IdxError(
                    f"{path}: shape {dims} declares {need} data bytes, more than the "
                    f"{max_bytes} allowed"
                )
            raw = f.read(need)
            if len(raw) != need:
                raise IdxError(
                    f"{path} is truncated: shape {dims} needs {need} data bytes, "
                    f"file has {len(raw)}"
                )
            if f.read(1):
                raise IdxError(f"{path} is padded: bytes follow the {need} data bytes of {dims}")
    except IdxError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise IdxError(f"cannot read IDX file {path}: {e}") from None
    arr = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise IdxError(f"{path} holds NaN or infinite values")
    return arr


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


def load_idx_pair(
    folder: Path, prefix: str, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels ``{prefix}-images-idx3-ubyte`` / ``{prefix}-labels-idx1-ubyte``:
    ``n`` 28×28 images with pixels in 0..255 and ``n`` integer labels in
    ``0..num_classes-1``, checked at load (not after an epoch)."""
    if not folder.is_dir():
        raise IdxError(f"data folder not found: {folder}")
    xp = _find(folder, f"{prefix}-images-idx3-ubyte")
    yp = _find(folder, f"{prefix}-labels-idx1-ubyte")
    x, y = read_idx(xp), read_idx(yp)
    if x.ndim != 3 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise IdxError(f"{xp}: expected images of shape (n, 28, 28), got {x.shape}")
    if y.ndim != 1:
        raise IdxError(f"{yp}: expected 1-d labels, got shape {y.shape}")
    if len(x) != len(y):
        raise IdxError(f"{prefix}: {len(x)} images but {len(y)} labels in {folder}")
    if len(x) == 0:
        raise IdxError(f"{xp} holds no images")
    if x.min() < 0 or x.max() > 255:
        raise IdxError(f"{xp}: pixels outside 0..255 (min {x.min()}, max {x.max()})")
    if (y != np.round(y)).any() or y.min() < 0 or y.max() > num_classes - 1:
        raise IdxError(f"{yp}: labels must be integers in 0..{num_classes - 1}")
    return x.astype(np.float64), y.astype(np.int64)
