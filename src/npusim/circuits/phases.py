"""A free relaxation followed by nudged ones from its equilibrium: what EqProp asks of a network
each training step (:meth:`npusim.core.interfaces.Network.relax_phases`).

:func:`relax_phases` is the reference any network can use: one ``relax`` for the free phase,
then one for all nudged phases side by side (one β per tile). A network with a faster way to
run the same relaxations (the fused sweep loop of a layered network) overrides the method and
must give the same states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from npusim.core.interfaces import Network, Relaxation


def check_betas(betas: Sequence[float]) -> tuple[float, ...]:
    """The nudging strengths as floats: at least one, none zero, and finite when there are
    several (a tile's β = ∞ clamps its output; only a single phase may do that)."""
    out = tuple(float(b) for b in betas)
    if not out:
        raise ValueError("relax_phases needs at least one nudging strength beta")
    if any(b == 0.0 or math.isnan(b) for b in out):
        raise ValueError(f"every nudging strength must be non-zero and a number, got {out}")
    if len(out) > 1 and not all(math.isfinite(b) for b in out):
        raise ValueError(f"side-by-side nudged phases need finite betas, got {out}")
    return out


def tile_betas(betas: tuple[float, ...], batch: int, like: Tensor) -> float | Tensor:
    """The ``beta`` argument of ``relax`` for ``betas`` side by side: the scalar for one phase,
    else a (tiles·batch, 1) column, β_t on the rows of tile t (``like``'s dtype and device)."""
    if len(betas) == 1:
        return betas[0]
    col = torch.empty(len(betas) * batch, 1, dtype=like.dtype, device=like.device)
    for t, b in enumerate(betas):
        col[t * batch : (t + 1) * batch] = b
    return col


def split_tiles(rel: Relaxation, tiles: int) -> list[Relaxation]:
    """A side-by-side relaxation of ``tiles`` copies as one :class:`Relaxation` per tile
    (views; the residual and sweeps are the whole relaxation's)."""
    if tiles == 1:
        return [rel]
    n = rel.state[0].shape[0] // tiles
    return [
        Relaxation([s[t * n : (t + 1) * n] for s in rel.state], rel.residual, rel.sweeps)
        for t in range(tiles)
    ]


def relax_phases(
    net: Network,
    x: Tensor,
    target: Tensor,
    betas: Sequence[float],
    *,
    sweeps: int = 15,
    free_sweeps: int | None = None,
    tol: float = 0.0,
) -> tuple[Relaxation, list[Relaxation]]:
    """The free relaxation (``free_sweeps`` sweeps, default ``sweeps``), then one nudged
    relaxation per β in ``betas`` warm-started from the free equilibrium, side by side (each
    still a full relaxation of its own): returns (free, [nudged, one per β]). One β nudges
    with a scalar; several with one β per tile."""
    betas = check_betas(betas)
    free = net.relax(x, sweeps=free_sweeps or sweeps, tol=tol)
    tiles = len(betas)
    beta = tile_betas(betas, x.shape[0], free.state[0])
    if tiles == 1:
        state, tgt = free.state, target
    else:
        state = [torch.cat([s] * tiles) for s in free.state]
        tgt = torch.cat([target] * tiles)
    nudged = net.relax(x, state, beta=beta, target=tgt, sweeps=sweeps, tol=tol, tile=tiles)
    return free, split_tiles(nudged, tiles)
