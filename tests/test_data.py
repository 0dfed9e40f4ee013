import gzip
import struct

import numpy as np
import pytest
import torch

from npusim.data import DatasetError, IdxError, load_dataset, read_idx


def _write_idx(path, arr: np.ndarray, compress: bool = False, truncate: int = 0) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - truncate] if truncate else raw
    (gzip.open if compress else open)(path, "wb").write(raw)


def _mnist_folder(tmp_path, n_train=120, n_test=20, compress=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte{sfx}",
            rng.integers(0, 256, (n, 28, 28)),
            compress,
        )
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, compress)
    return tmp_path


@pytest.mark.parametrize(
    "name,sizes", [("digits", (1438, 180, 179)), ("mnist5k", (4000, 500, 500))]
)
def test_builtin_splits_are_fixed_disjoint_and_stratified(name, sizes):
    a, b = load_dataset(name), load_dataset(name)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == sizes
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) <= 1.0
    # no image appears in two splits
    rows = {r.tobytes() for r in a.x_train.numpy()}
    assert not any(r.tobytes() in rows for r in a.x_test.numpy())
    counts = torch.bincount(a.y_test, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    c = load_dataset(name, split_seed=1)
    assert not torch.equal(a.y_train, c.y_train)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_round_trip(tmp_path, compress, name):
    folder = _mnist_folder(tmp_path, compress=compress)  # the standard file names of both
    d = load_dataset(name, folder)
    assert len(d.x_train) + len(d.x_val) == 120 and len(d.x_val) > 0 and len(d.x_test) == 20
    assert d.x_train.shape[1] == 784 and d.image_shape == (28, 28) and d.chw == (1, 28, 28)
    raw = read_idx(folder / ("t10k-images-idx3-ubyte" + (".gz" if compress else "")))
    assert torch.allclose(d.x_test, torch.from_numpy(raw.reshape(20, -1) / 255.0).float())
    assert d.y_test.tolist() == [i % 10 for i in range(20)]


def test_idx_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("mnist")
    with pytest.raises(IdxError, match="not found"):
        load_dataset("fashion-mnist", tmp_path / "nope")
    folder = _mnist_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError, match="missing IDX file t10k-labels"):
        load_dataset("mnist", folder)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(19) % 10, True)
    with pytest.raises(IdxError, match="20 images but 19 labels"):
        load_dataset("mnist", folder)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10, True, truncate=3)
    with pytest.raises(IdxError, match="truncated"):
        load_dataset("mnist", folder)
    (folder / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(IdxError, match="bad magic"):
        read_idx(folder / "bad")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar")
    assert issubclass(IdxError, DatasetError)  # one error class for any dataset problem
