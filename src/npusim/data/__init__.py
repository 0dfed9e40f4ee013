"""Offline datasets, seeded splits and the IDX reader."""

from npusim.data.datasets import DATASETS, Dataset, DatasetError, load_dataset, one_hot
from npusim.data.idx import IdxError, read_idx

__all__ = ["DATASETS", "Dataset", "DatasetError", "IdxError", "load_dataset", "one_hot", "read_idx"]
