"""How the CPU kernels (numba) share threads with torch: as many as torch has, and torch's count
left as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba
import numpy as np
import torch
from torch import Tensor


@contextlib.contextmanager
def numba_threads(limit: int) -> Iterator[int]:
    """Yield the thread count for the numba kernels run inside: torch's count, at most
    ``limit`` (the work's independent parts) and numba's pool size, at least 1. numba's count is
    set only above 1 (one thread needs no parallel region, so the pool is not started); torch's
    count is restored after, as numba's OpenMP pool, started by its first parallel call,
    resets it."""
    torch_threads = torch.get_num_threads()
    threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS, limit))
    if threads > 1:
        numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


def as_numpy(t: Tensor) -> np.ndarray:
    """``t``'s values as a contiguous numpy array (a view when it already is one)."""
    return t.detach().contiguous().numpy()
