import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from npusim.data import DatasetError, augment_images, load_dataset, read_cifar_batch
from npusim.data.datasets import Dataset


def _batch(n: int, k: int, seed: int, fine: bool = False) -> dict:
    """A CIFAR batch as the archives hold it: bytes keys, uint8 (n, 3072), a list of labels."""
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    labels = [i % k for i in range(n)]
    if fine:
        d[b"fine_labels"], d[b"coarse_labels"] = labels, [v // 5 for v in labels]
    else:
        d[b"labels"] = labels
    return d


def _dump(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar10(root, per_batch: int = 20, n_test: int = 20, nested: bool = True):
    folder = root / "cifar-10-batches-py" if nested else root
    folder.mkdir(exist_ok=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _batch(per_batch, 10, seed=i))
    _dump(folder / "test_batch", _batch(n_test, 10, seed=0))
    _dump(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    return folder


def _s(b: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING, as Python 2 wrote a str
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch byte for byte as Python 2's cPickle (protocol 2) wrote the real files."""
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
        + _s(b"b")
        + b"\x87R(K\x01J"
        + struct.pack("<i", len(data))
        + b"M\x00\x0c\x86cnumpy\ndtype\n"
        + _s(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + _s(data.tobytes())
        + b"tb"
    )
    labs = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + _s(b"data") + array + _s(b"labels") + labs + b"u."


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_loads_with_fixed_stratified_splits(tmp_path, nested):
    folder = _cifar10(tmp_path, nested=nested)
    d = load_dataset("cifar10", tmp_path)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (90, 10, 20)
    assert d.x_train.shape[1] == 3072 and d.x_train.dtype == torch.float32
    assert d.image_shape == (3, 32, 32) and d.chw == (3, 32, 32) and d.num_classes == 10
    assert sorted(d.y_val.tolist()) == list(range(10))  # 1/10 of each class
    raw = read_cifar_batch(folder / "test_batch", "labels", 10)[0]
    assert torch.equal(d.x_test, torch.from_numpy(raw).float() / 255)
    assert d.y_test.tolist() == [i % 10 for i in range(20)]
    # train + val are exactly the five training batches, no image twice
    rows = {r.tobytes() for r in torch.cat([d.x_train, d.x_val]).numpy()}
    assert len(rows) == 100
    again = load_dataset("cifar10", folder)
    assert torch.equal(again.y_train, d.y_train) and torch.equal(again.x_val, d.x_val)
    assert not torch.equal(load_dataset("cifar10", folder, split_seed=1).y_train, d.y_train)


def test_cifar10_reads_a_python2_pickle(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, (4, 3072), dtype=np.uint8)
    (tmp_path / "b").write_bytes(_py2_pickle(data, [1, 2, 3, 9]))
    x, y = read_cifar_batch(tmp_path / "b", "labels", 10)
    assert np.array_equal(x, data) and y.tolist() == [1, 2, 3, 9] and y.dtype == np.int64


def test_cifar100_uses_the_100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "train", _batch(1000, 100, seed=1, fine=True))
    _dump(folder / "test", _batch(200, 100, seed=2, fine=True))
    d = load_dataset("cifar100", tmp_path)
    assert d.num_classes == 100 and d.image_shape == (3, 32, 32)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (900, 100, 200)
    assert int(d.y_test.max()) == 99 and torch.bincount(d.y_val).tolist() == [1] * 100


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _corrupt(folder, case):
    f = folder / "data_batch_3"
    if case == "truncated":
        f.write_bytes(f.read_bytes()[:-100])
    elif case == "garbage":
        f.write_bytes(b"not a pickle at all")
    elif case == "padded":
        f.write_bytes(f.read_bytes() + b"\x00")
    elif case == "shape":
        b = _batch(20, 10, 3)
        b[b"data"] = b[b"data"].reshape(20, 3, 1024)
        _dump(f, b)
    elif case == "width":
        b = _batch(20, 10, 3)
        b[b"data"] = b[b"data"][:, :3000]
        _dump(f, b)
    elif case == "dtype":
        b = _batch(20, 10, 3)
        b[b"data"] = b[b"data"].astype(np.float32)
        _dump(f, b)
    elif case == "range":
        b = _batch(20, 10, 3)
        b[b"labels"][5] = 10
        _dump(f, b)
    elif case == "count":
        b = _batch(20, 10, 3)
        b[b"labels"].pop()
        _dump(f, b)
    elif case == "key":
        b = _batch(20, 10, 3)
        del b[b"labels"]
        _dump(f, b)
    elif case == "missing":
        f.unlink()
    elif case == "global":
        b = _batch(20, 10, 3)
        b[b"labels"] = _Evil(folder / "PWNED")
        _dump(f, b)


@pytest.mark.parametrize(
    "case,message",
    [
        ("truncated", r"data_batch_3: not a whole pickle"),
        ("garbage", r"data_batch_3: not a whole pickle"),
        ("padded", r"data_batch_3 is padded"),
        ("shape", r"data_batch_3: 'data' must be a uint8 array \(n, 3072\), got uint8 \(20, 3, "),
        ("width", r"data_batch_3: 'data' has shape \(20, 3000\); expected \(n, 3072\)"),
        ("dtype", r"data_batch_3: 'data' must be a uint8 array \(n, 3072\), got float32"),
        ("range", r"data_batch_3: 'labels' must be in 0..9 \(min 0, max 10\)"),
        ("count", r"data_batch_3: 20 images but 19 labels"),
        ("key", r"data_batch_3: no 'labels' entry"),
        ("missing", r"missing cifar10 file\(s\) data_batch_3 in"),
        ("global", r"data_batch_3: the pickle asks for \w+\.system; .* refused"),
    ],
)
def test_a_bad_cifar_file_is_one_clear_dataset_error(tmp_path, case, message):
    folder = _cifar10(tmp_path)
    _corrupt(folder, case)
    with pytest.raises(DatasetError, match=message):
        load_dataset("cifar10", tmp_path)
    assert not (folder / "PWNED").exists()


def test_cifar_needs_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar100")
    with pytest.raises(DatasetError, match="data folder not found"):
        load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(DatasetError, match="missing cifar100 file"):
        load_dataset("cifar100", tmp_path)


def test_image_shape_takes_channels():
    x, y = torch.rand(4, 12), torch.arange(4) % 2
    assert Dataset("t", x, y, x, y, x, y, 2, (3, 4)).chw == (1, 3, 4)
    assert Dataset("t", x, y, x, y, x, y, 2, (3, 2, 2)).chw == (3, 2, 2)
    for bad in ((3, 3), (2, 2, 2), (12,), (1, 1, 3, 4)):
        with pytest.raises(DatasetError, match="do not hold 12 inputs"):
            Dataset("t", x, y, x, y, x, y, 2, bad)


def shift_images(x: torch.Tensor, shape: tuple[int, int], max_shift: int, g) -> torch.Tensor:
    """The training loop's shift before augment_images (kept as the reference): each image
    shifted by a random whole-pixel offset in [−max_shift, max_shift]², zero fill."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    h, w = shape
    pad = max_shift
    img = torch.nn.functional.pad(x.view(n, 1, h, w), (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return img[torch.arange(n)[:, None, None], 0, rows, cols].reshape(n, h * w)


@pytest.mark.parametrize("shape,shift", [((8, 8), 1), ((28, 28), 2), ((5, 7), 3), ((8, 8), 0)])
def test_augment_shift_is_the_training_loops_shift(shape, shift):
    x = torch.rand(64, shape[0] * shape[1])
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(
            augment_images(x, shape, shift, False, g1), shift_images(x, shape, shift, g2)
        )
        assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # same draws


@pytest.mark.parametrize("shape", [(6, 5), (3, 6, 5)])
def test_augment_flip_mirrors_about_half_the_images(shape):
    n = 400
    x = torch.rand(n, int(np.prod(shape)))
    g = torch.Generator().manual_seed(7)
    once = augment_images(x, shape, 0, True, g)
    twice = augment_images(once, shape, 0, True, g.manual_seed(7))  # the same flips again
    assert torch.equal(twice, x)
    mirror = torch.rand(n, generator=torch.Generator().manual_seed(7)) < 0.5
    img, out = x.view(n, -1, *shape[-2:]), once.view(n, -1, *shape[-2:])
    assert torch.equal(out[mirror], torch.flip(img[mirror], dims=[-1]))
    assert torch.equal(out[~mirror], img[~mirror])
    assert 150 < int(mirror.sum()) < 250


def test_augment_moves_every_channel_together():
    n, shape = 50, (3, 7, 9)
    x = torch.rand(n, 3 * 7 * 9)
    out = augment_images(x, shape, 2, True, torch.Generator().manual_seed(1)).view(n, 3, 63)
    g = torch.Generator().manual_seed(1)
    torch.randint(0, 5, (2, n), generator=g)
    mirror = torch.rand(n, generator=g) < 0.5
    for c in range(3):  # each channel as a one-channel image, with the same offsets
        ref = shift_images(x.view(n, 3, 63)[:, c], (7, 9), 2, torch.Generator().manual_seed(1))
        ref = torch.where(mirror[:, None, None], ref.view(n, 7, 9).flip(-1), ref.view(n, 7, 9))
        assert torch.equal(out[:, c], ref.reshape(n, 63))
    with pytest.raises(ValueError, match="do not match"):
        augment_images(x, (7, 9), 1, False, g)


def _blob(n: int, h: int, w: int, centre: tuple[float, float]) -> torch.Tensor:
    """(n, h·w) Gaussian blobs (σ 1.5 pixels) at ``centre`` = (x, y) pixels from the middle."""
    ys, xs = torch.meshgrid(
        torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij"
    )
    img = torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 1.5**2))
    return img.reshape(1, h * w).repeat(n, 1).double()


def test_affine_moves_a_blob_to_its_rotated_and_scaled_place():
    """A blob at q (pixels from the centre) lands at s·R(−a)·q for the drawn angle a and
    scale s (x right, y down), within a tenth of a pixel; its mass grows by s²."""
    n, h, w, q = 32, 28, 28, (6.0, -3.0)
    x = _blob(n, h, w, q)
    out = augment_images(x, (h, w), 0, False, torch.Generator().manual_seed(3), 30.0, 0.2)
    g = torch.Generator().manual_seed(3)
    a = ((torch.rand(n, generator=g) * 2 - 1) * math.radians(30.0)).double()
    s = (1 + (torch.rand(n, generator=g) * 2 - 1) * 0.2).double()
    assert float(a.abs().max()) > math.radians(20) and float((s - 1).abs().max()) > 0.15
    ys, xs = torch.meshgrid(
        torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij"
    )
    mass = out.sum(1)
    cx = (out * xs.reshape(-1).double()).sum(1) / mass
    cy = (out * ys.reshape(-1).double()).sum(1) / mass
    ex = s * (torch.cos(a) * q[0] + torch.sin(a) * q[1])
    ey = s * (-torch.sin(a) * q[0] + torch.cos(a) * q[1])
    assert torch.allclose(cx, ex, atol=0.1) and torch.allclose(cy, ey, atol=0.1)
    assert torch.allclose(mass / x.sum(1), s**2, rtol=0.02)


def test_affine_off_is_the_shift_alone_and_bad_ranges_are_refused():
    x = torch.rand(16, 3 * 6 * 5)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(
        augment_images(x, (3, 6, 5), 1, True, g1, 0.0, 0.0),
        augment_images(x, (3, 6, 5), 1, True, g2),
    )
    tiny = augment_images(x, (3, 6, 5), 0, False, torch.Generator(), 1e-9, 0.0)
    assert torch.allclose(tiny, x, atol=1e-5)  # a rotation by ~0 resamples on the pixel grid
    for rotate, zoom in [(-1.0, 0.0), (181.0, 0.0), (0.0, 1.0), (0.0, -0.1)]:
        with pytest.raises(ValueError, match="rotate must be"):
            augment_images(x, (3, 6, 5), 0, False, torch.Generator(), rotate, zoom)
