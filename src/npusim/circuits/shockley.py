"""Shockley diodes (with series resistance) in the deep resistive network.

A hidden node of a DRN layer sees its neighbours through total conductance ``G`` (S) and drive
``d = Σ_j G_ij V_j + b_i`` (A), and holds one diode to ground: excitatory nodes (first half of
the layer) have the anode at ground, inhibitory nodes (second half) have the anode at the node.
With ``s = −1`` (excitatory) or ``+1`` (inhibitory), the diode's branch voltage is ``v = s·V``
and its current ``i = Is·(eʷ − 1)`` (A) away from the node (times ``s``), where the normalised
junction voltage ``w = v_j/(n·Vt)`` and ``v = n·Vt·w + Rs·i``. The node's KCL,
``G·V = d − s·i``, becomes one scalar equation in ``w``::

    Is·(1 + G·Rs)·(eʷ − 1) + G·n·Vt·w = s·d

convex and increasing in ``w``, so Newton's method started to the right of the root converges
monotonically (no overflow, no damping). :func:`layer_solve` solves it for a whole layer at once;
this is the node's exact minimiser of the energy with the diode's co-content
``∫₀ᵛ i dv = ½·Rs·i² + n·Vt·Is·(eʷ − 1 − w)`` (J/s = W), see :func:`cocontent`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.circuits.netlist import DiodeModel


def solve_exp_lin(a: Tensor, b: Tensor, d: Tensor, iters: int = 60) -> Tensor:
    """Root ``w`` of ``a·(eʷ − 1) + b·w = d`` for ``a ≥ 0``, ``b > 0`` (broadcast), by Newton
    from an upper bound of the root (monotone for this convex increasing function)."""
    a, b = (torch.as_tensor(v, dtype=d.dtype, device=d.device) for v in (a, b))
    if not bool((a > 0).any()):
        return d / b
    pos = d > 0
    up_pos = torch.minimum(torch.log1p(d.clamp_min(0) / a), d / b)
    up_neg = torch.clamp_max((d + a) / b, 0.0)
    w = torch.where(pos, up_pos, up_neg)
    eps = torch.finfo(d.dtype).eps
    for _ in range(iters):
        ew = torch.exp(w)
        g = a * (ew - 1.0) + b * w - d
        step = (g / (a * ew + b)).clamp_min(0.0)  # never step right of the root's side
        w = w - step
        if float((step / (1.0 + w.abs())).max()) <= 4 * eps:
            break
    return w


def layer_sign(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Diode orientation of a hidden layer of ``n`` nodes: −1 excitatory (first half), +1
    inhibitory (second half)."""
    half = n // 2
    return torch.cat([-torch.ones(half, dtype=dtype), torch.ones(n - half, dtype=dtype)])


def layer_solve(drive: Tensor, den: Tensor, sign: Tensor, model: DiodeModel) -> Tensor:
    """Exact node voltages (V) of a hidden layer with Shockley diodes, given the neighbour
    drive (batch, n) A, total node conductance ``den`` (n,) S and diode ``sign`` (n,)."""
    nvt = model.n * model.vt
    d = sign * drive
    w = solve_exp_lin(model.is_ * (1.0 + den * model.rs), den * nvt, d)
    i = model.is_ * torch.expm1(w)
    return sign * (d - i) / den


def branch_current(v: Tensor, model: DiodeModel) -> Tensor:
    """Current (A) of the diode + series-resistance branch at branch voltage ``v`` (V)."""
    w = solve_exp_lin(model.is_ * model.rs, model.n * model.vt, v)
    return model.is_ * torch.expm1(w)


def cocontent(v: Tensor, model: DiodeModel) -> Tensor:
    """Co-content ``∫₀ᵛ i dv`` (W) of the diode branch at branch voltage ``v`` (V)."""
    w = solve_exp_lin(model.is_ * model.rs, model.n * model.vt, v)
    i = model.is_ * torch.expm1(w)
    return 0.5 * model.rs * i * i + model.n * model.vt * model.is_ * (torch.expm1(w) - w)


def diode_energy(state: list[Tensor], model: DiodeModel) -> Tensor:
    """Σ of the hidden layers' diode co-contents (W) per sample; ``state`` holds the free
    layers (the last, the output, has no diodes)."""
    e = torch.zeros(state[0].shape[0], dtype=state[0].dtype, device=state[0].device)
    for s in state[:-1]:
        e = e + cocontent(layer_sign(s.shape[1], s.dtype).to(s.device) * s, model).sum(1)
    return e
