"""Low-rank (outer-product) parameter updates.

A crossbar is updated in parallel by row and column signals, so a batch's weight gradient is a
sum of outer products ``G = Σ_r left[r]ᵀ right[r]``. Keeping it factored lets the ideal chip
apply it in one pass over the array (``W += leftᵀ right``) instead of materialising ``G``.

On the CPU in float32 that pass is compiled (:mod:`npusim.core._outer_kernel`): the same
roundings as torch's ``addmm_`` (MKL) for outputs of 16 or more columns, zero rows of ``left``
skipped, the clamp of a non-negative parameter and its column sums (:func:`column_sums`) in the
same pass. A narrower output (a 10-class layer) is updated as its transpose by the same rule
(per element: the rank terms in order, a product then fused multiply-adds, added to ``p``
last), about 3x faster than MKL's small-matrix kernel, whose order for it is its own; that
transpose is kept for the relaxation's next read of ``pᵀ`` (:func:`kept_transpose`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MIN_COLUMNS = 16  # narrower outputs are updated as their transpose (rows in the lanes)
PART_ELEMENTS = 1 << 17  # a row block on another thread gets at least this many elements

_NO_SUMS = np.empty(0, np.float32)  # the compiled update's "no column sums"
# column sums of a parameter as its last compiled update left it: (tensor, version, sums)
_SUMS: dict[int, tuple[weakref.ref, int, Tensor]] = {}
# the transpose of a narrow parameter its last compiled update made: (tensor, version, pᵀ)
_TRANSPOSES: dict[int, tuple[weakref.ref, int, Tensor]] = {}


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

    def add_to(self, p: Tensor, nonneg: bool = False) -> None:
        """``p += leftᵀ right`` in place, in one pass over ``p``; ``nonneg``: then clamp ``p``
        to ≥ 0 (a conductance)."""
        left, right = self.left, self.right
        if not _compiled(p, left, right):
            p.addmm_(left.t(), right)
            if nonneg:
                p.clamp_(min=0.0)
            return
        from npusim.core._outer_kernel import add_outer, transpose_into
        from npusim.core.numba_threads import as_numpy, numba_threads

        if p.shape[1] < MIN_COLUMNS:  # narrow: the wide rule on pᵀ += rightᵀ left, rows of
            q = torch.empty(p.shape[1], p.shape[0], dtype=p.dtype)  # p in the vector lanes
            transpose_into(q.numpy(), p.numpy())
            with numba_threads(_parts(q)) as parts:
                add_outer(q.numpy(), as_numpy(right), as_numpy(left), nonneg, _NO_SUMS, parts)
            transpose_into(p.numpy(), q.numpy())
            torch.autograd.graph.increment_version(p)
            _keep(_TRANSPOSES, p, q)
            return
        sums = torch.empty(p.shape[1] if nonneg else 0, dtype=p.dtype)
        with numba_threads(_parts(p)) as parts:
            add_outer(p.numpy(), as_numpy(left), as_numpy(right), nonneg, sums.numpy(), parts)
        torch.autograd.graph.increment_version(p)  # written through numpy: tell torch
        if nonneg:
            _keep(_SUMS, p, sums)


def column_sums(p: Tensor) -> Tensor:
    """``ones @ p``: the sum of each column of a 2-D ``p``, over its rows in order (kept from
    the compiled update that last wrote a non-negative ``p``, else computed)."""
    kept = _kept(_SUMS, p)
    return kept if kept is not None else p.new_ones(p.shape[0]) @ p


def kept_transpose(p: Tensor) -> Tensor | None:
    """``pᵀ`` as a contiguous tensor if the compiled update of a narrow ``p`` made it and ``p``
    has not changed since; else None. Read it only: it is the update's own copy."""
    return _kept(_TRANSPOSES, p)


def _keep(store: dict, p: Tensor, value: Tensor) -> None:
    """Remember ``value`` for ``p`` as it is now (its version), dropping entries of dead tensors."""
    for key in [k for k, v in store.items() if v[0]() is None]:
        del store[key]
    store[id(p)] = (weakref.ref(p), p._version, value)


def _kept(store: dict, p: Tensor) -> Tensor | None:
    """What :func:`_keep` remembered for ``p`` if ``p`` is unchanged since, else None."""
    hit = store.get(id(p))
    if hit is not None and hit[0]() is p and hit[1] == p._version and not p.requires_grad:
        return hit[2]
    return None


def _parts(p: Tensor) -> int:
    """The most row blocks the compiled update of ``p`` splits into (one per thread)."""
    return max(1, p.numel() // PART_ELEMENTS)


def _compiled(p: Tensor, left: Tensor, right: Tensor) -> bool:
    """The compiled pass applies: float32 on the CPU, wide (or, narrow, tall) enough, nothing
    requiring grad."""
    return (
        p.dtype == left.dtype == right.dtype == torch.float32
        and p.dim() == 2
        and max(p.shape) >= MIN_COLUMNS
        and p.device.type == left.device.type == right.device.type == "cpu"
        and p.is_contiguous()
        and not (p.requires_grad or left.requires_grad or right.requires_grad)
    )


def dense(g: Tensor | OuterProduct) -> Tensor:
    """A gradient or update as a dense tensor."""
    return g.dense() if isinstance(g, OuterProduct) else g
