"""Offline datasets, seeded splits, the IDX and CIFAR readers, and image augmentation."""

from npusim.data.augment import augment_images
from npusim.data.cifar import load_cifar, read_cifar_batch
from npusim.data.datasets import DATASETS, Dataset, DatasetError, load_dataset, one_hot
from npusim.data.idx import IdxError, read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "IdxError",
    "augment_images",
    "load_cifar",
    "load_dataset",
    "one_hot",
    "read_cifar_batch",
    "read_idx",
]
