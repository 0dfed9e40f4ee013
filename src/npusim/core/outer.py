"""Low-rank (outer-product) parameter updates.

A crossbar is updated in parallel by row and column signals, so a batch's weight gradient is a
sum of outer products ``G = Σ_r left[r]ᵀ right[r]``. Keeping it factored lets the ideal chip
apply it in one pass over the array (``W += leftᵀ right``) instead of materialising ``G``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class OuterProduct:
    """``leftᵀ @ right`` with ``left`` (rank, n_in) and ``right`` (rank, n_out)."""

    left: Tensor
    right: Tensor

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.left.shape[1], self.right.shape[1]))

    def dense(self) -> Tensor:
        return self.left.t() @ self.right

    def scaled(self, a: float) -> OuterProduct:
        return OuterProduct(self.left, self.right * a)

    def add_to(self, p: Tensor) -> None:
        """``p += leftᵀ right`` in place, in one pass over ``p``."""
        p.addmm_(self.left.t(), self.right)


def dense(g: Tensor | OuterProduct) -> Tensor:
    """A gradient or update as a dense tensor."""
    return g.dense() if isinstance(g, OuterProduct) else g
