"""Reader for the CIFAR-10 and CIFAR-100 python-pickle batches, without running their code.

Layouts, as the two python archives unpack (``data_dir`` may be the folder above or the
folder itself):

* ``cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5`` (training, 10,000 images
  each) and ``test_batch`` (10,000); labels ``labels``, 10 classes. ``batches.meta`` (the
  class names) is not read.
* ``cifar-100-python/``: ``train`` (50,000) and ``test`` (10,000); labels ``fine_labels``,
  100 classes (``coarse_labels``, 20 superclasses, and ``meta`` are not read).

Each file is a pickled dict whose ``data`` is a uint8 array (n, 3072): one 32×32 RGB image a
row, channel-first and row-major (1,024 red, then green, then blue pixel values 0..255).

A pickle can call any importable function while it loads, so these files are read by an
unpickler that builds only plain containers and numpy arrays: it resolves exactly numpy's
``_reconstruct`` (``numpy.core`` or ``numpy._core``), ``numpy.ndarray``, ``numpy.dtype`` and
``_codecs.encode`` limited to latin-1 (how a protocol-2 pickle written by Python 3 stores
bytes), and refuses any other global. Every file is read and checked before any array is
built; a missing, oversized, truncated, corrupt or inconsistent file raises one
:class:`DatasetError` naming the file and what is wrong.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from npusim.data.errors import DatasetError

CIFAR_SHAPE = (3, 32, 32)  # channels, height, width of one image
CIFAR_FEATURES = 3 * 32 * 32
MAX_FILE_BYTES = 1 << 30  # 1 GiB: above CIFAR-100's 160 MB train file, below a memory bomb


class CifarLayout(NamedTuple):
    """One CIFAR variant's standard folder, training files, test file, label key, classes."""

    folder: str
    train: tuple[str, ...]
    test: str
    labels: str
    num_classes: int


CIFAR: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "labels",
        10,
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), "test", "fine_labels", 100),
}


def _latin1_encode(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it: a str to bytes in latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("_codecs.encode is allowed only for a str in latin-1")
    return text.encode("latin-1", errors)


def _allowed() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[attr-defined,no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds containers and numpy arrays and refuses any other global."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="latin1")  # as numpy reads Python 2 array pickles
        self.path = path
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.path}: the pickle asks for {module}.{name}; a CIFAR batch holds only "
                "numpy arrays and lists, so the file is refused (nothing in it was run)"
            ) from None


def _unpickle(path: Path, max_bytes: int) -> object:
    if not path.is_file():
        raise DatasetError(f"CIFAR file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetError(f"{path} has {size} bytes, more than the {max_bytes} allowed")
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, path).load()
            if f.read(1):
                raise DatasetError(f"{path} is padded: bytes follow the end of its pickle")
    except DatasetError:
        raise
    except Exception as e:  # anything a corrupt file makes the unpickler raise is the file's
        raise DatasetError(f"cannot read CIFAR file {path}: not a whole pickle ({e!r})") from None
    return obj


def read_cifar_batch(
    path: str | Path, label_key: str, num_classes: int, max_bytes: int = MAX_FILE_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 3072) uint8, channel-first 3×32×32, and labels (n,) int64 in
    ``0..num_classes-1`` of one CIFAR pickle; keys may be bytes or str."""
    path = Path(path)
    obj = _unpickle(path, max_bytes)
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in d:
            raise DatasetError(f"{path}: no {key!r} entry (keys: {sorted(map(str, d))})")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2:
        what = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DatasetError(f"{path}: 'data' must be a uint8 array (n, 3072), got {what}")
    if x.shape[1] != CIFAR_FEATURES or x.shape[0] == 0:
        raise DatasetError(
            f"{path}: 'data' has shape {x.shape}; expected (n, {CIFAR_FEATURES}) with n ≥ 1 "
            "(32×32 RGB images)"
        )
    raw = d[label_key]
    try:
        y = np.asarray(raw) if isinstance(raw, list | tuple | np.ndarray) else None
    except ValueError:
        y = None
    if y is None or y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {label_key!r} must be a list of integers")
    if len(y) != len(x):
        raise DatasetError(f"{path}: {len(x)} images but {len(y)} labels in {label_key!r}")
    if y.min() < 0 or y.max() > num_classes - 1:
        raise DatasetError(
            f"{path}: {label_key!r} must be in 0..{num_classes - 1} (min {y.min()}, max {y.max()})"
        )
    return x, y.astype(np.int64)


def cifar_folder(data_dir: str | Path, name: str) -> Path:
    """The folder holding ``name``'s batches: ``data_dir``'s standard sub-folder if there is
    one, else ``data_dir`` itself; every batch file must be present."""
    spec = CIFAR[name]
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data folder not found: {data_dir}")
    folder = data_dir / spec.folder if (data_dir / spec.folder).is_dir() else data_dir
    missing = [f for f in (*spec.train, spec.test) if not (folder / f).is_file()]
    if missing:
        raise DatasetError(
            f"missing {name} file(s) {', '.join(missing)} in {folder} (expected the "
            f"{spec.folder}/ folder of the python archive)"
        )
    return folder


def load_cifar(
    data_dir: str | Path, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training images and labels, then test images and labels, of ``cifar10`` or
    ``cifar100`` (fine labels): images (n, 3072) uint8 channel-first, labels int64."""
    if name not in CIFAR:
        raise DatasetError(f"unknown CIFAR variant {name!r}; choose one of {', '.join(CIFAR)}")
    spec = CIFAR[name]
    folder = cifar_folder(data_dir, name)
    train = [read_cifar_batch(folder / f, spec.labels, spec.num_classes) for f in spec.train]
    x_te, y_te = read_cifar_batch(folder / spec.test, spec.labels, spec.num_classes)
    x_tr = np.concatenate([x for x, _ in train]) if len(train) > 1 else train[0][0]
    y_tr = np.concatenate([y for _, y in train])
    return x_tr, y_tr, x_te, y_te
