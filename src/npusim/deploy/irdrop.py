"""IR drop along the lines of a crossbar array: a first-order model fast enough for inference,
and the exact netlist of a tile to validate it (:mod:`npusim.circuits.netlist_solve`).

Geometry (one array, ``r`` rows × ``c`` columns, cell ``(i, j)`` a conductance ``G_ij`` S
between row node ``u_ij`` and column node ``v_ij``): row ``i`` is driven at its left end by a
voltage ``V_i`` (V) through one wire segment per cell, ``R_w`` Ω each; each column ends below
row ``r − 1`` in a virtual ground (the transimpedance amplifier) through one segment per cell.
Row segment ``k`` carries the currents of cells ``j ≥ k``; column segment ``k`` those of cells
``i ≤ k``. Column currents ``I_j = Σ_i G_ij (u_ij − v_ij)`` (A) are exactly linear in ``V``
(the network is linear), ``I = V @ G_eff``.

First order: the ideal cell currents ``G_ij V_i`` produce the wire drops

    u_ij = V_i (1 − R_w A_ij),    A_ij = Σ_{k ≤ j} Σ_{j' ≥ k} G_ij'
    v_ij = R_w Σ_i' M_ii' G_i'j V_i',    M_ii' = r − max(i, i')

i.e. to first order each cell sees a relative drop ``δ = R_w (A + M @ G)``. Applied as
``G (1 − δ)`` that linearisation is poor once drops reach tens of percent; this model applies
it as the equivalent series resistance of the wires each cell's current crosses,

    G_eff = G / (1 + R_w (A + M @ G)),

the same to first order and exact for one cell. It costs one ``r × r × c`` matmul per array,
once per programming and time; inference then runs on ``G_eff`` at no extra cost. Against the
exact netlist of a 128×128 tile with 2.5 Ω per segment and 25 µS devices
(``tests/test_deploy_irdrop.py``): max relative error of the column currents 0.1% for a
deployed-weight pattern (10% drop), 1.1% for uniform conductances (46% drop), 1.9% with every
device at g_max (90% drop); the linear form ``G (1 − δ)`` errs by 1%, 21% and 76%.
"""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.circuits.netlist import Netlist


def distance_matrix(
    rows: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Tensor:
    """``M_ii' = rows − max(i, i')``: column segments shared by cells i and i' (count)."""
    i = torch.arange(rows, device=device)
    return (rows - torch.maximum(i[:, None], i[None, :])).to(dtype)


def ir_drop_first_order(g: Tensor, wire_ohm: float) -> Tensor:
    """Effective conductances ``G_eff`` (S) of arrays ``g`` (..., rows, cols) in S with wire
    resistance ``wire_ohm`` (Ω) per cell segment: column currents are ``V @ G_eff``."""
    if wire_ohm == 0.0:
        return g.clone()
    return g / (1.0 + wire_ohm * relative_drop_per_ohm(g))


def relative_drop_per_ohm(g: Tensor) -> Tensor:
    """``A + M @ G`` (S): each cell's first-order relative voltage drop per Ω of segment."""
    a = torch.flip(torch.cumsum(torch.flip(g, (-1,)), -1), (-1,)).cumsum(-1)
    return a + distance_matrix(g.shape[-2], g.dtype, g.device) @ g


def crossbar_netlist(g: Tensor, wire_ohm: float) -> tuple[Netlist, list[int]]:
    """Exact netlist of one array ``g`` (rows, cols) S with ``wire_ohm`` Ω per cell segment,
    row drivers as voltage sources (source ``i`` drives row ``i``) and each column ending in a
    0 V virtual ground through its last segment. Returns ``(netlist, bottom)``: ``bottom[j]``
    is the last column node of column ``j``; the column current is ``V(bottom[j]) / wire_ohm``."""
    rows, cols = g.shape
    gv = g.detach().double().tolist()
    net = Netlist()
    drive = net.add_nodes(rows)
    row = [net.add_nodes(cols) for _ in range(rows)]
    col = [net.add_nodes(cols) for _ in range(rows)]
    gw = 1.0 / wire_ohm
    for i in range(rows):
        net.add_vsource(drive[i], 0, 0.0)
        prev = drive[i]
        for j in range(cols):
            net.add_resistor(prev, row[i][j], gw)
            prev = row[i][j]
            net.add_resistor(row[i][j], col[i][j], gv[i][j])
    for j in range(cols):
        for i in range(rows - 1):
            net.add_resistor(col[i][j], col[i + 1][j], gw)
        net.add_resistor(col[rows - 1][j], 0, gw)
    return net, [col[rows - 1][j] for j in range(cols)]


def exact_column_currents(g: Tensor, wire_ohm: float, volts: Tensor) -> Tensor:
    """Column currents (A), shape (batch, cols), of array ``g`` for row voltages ``volts``
    (batch, rows) V, from the exact netlist solution (float64)."""
    from npusim.circuits.netlist_solve import NetlistSolver

    net, bottom = crossbar_netlist(g, wire_ohm)
    steady = NetlistSolver(net).solve(volts.double(), diode="ideal")
    return steady.voltages[:, bottom] / wire_ohm
