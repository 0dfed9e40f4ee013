"""Batched steady states of a :class:`~npusim.circuits.netlist.Netlist`.

The linear part (resistors + voltage sources, modified nodal analysis) is factorised once per
netlist (sparse LU) and reused for every input vector. Diodes are then handled in diode space:
with diode branch currents ``μ`` (A, anode → cathode) as unknown sinks, node voltages are
``V = V₀ − Z μ`` and diode branch voltages ``v = q − M μ`` with ``q = Dᵀ V₀`` (V) the open-circuit
diode voltages and ``M = Dᵀ Z`` (Ω) the symmetric positive-definite transfer resistance.

* Ideal diodes: the co-content minimum subject to ``v ≤ 0`` is the linear complementarity
  problem ``μ ≥ 0, (M + Rs)μ − q ≥ 0, μᵀ((M + Rs)μ − q) = 0`` (the dual of the QP), solved exactly
  by batched block principal pivoting (finite for positive-definite ``M``).
* Shockley diodes: ``(M + Rs) μ + n·Vt·ln(1 + μ/Is) = q`` is the gradient of a strictly convex
  content; damped Newton (Armijo backtracking, log-domain steps that keep ``μ > −Is``) solves it
  to machine precision. Series resistance is exact (it just adds to ``M``'s diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from npusim.circuits.netlist import Netlist


@dataclass
class Steady:
    """A batch of steady states: ``voltages`` (batch, num_nodes + 1) in V with column 0 the
    ground (0 V), ``diode_currents`` (batch, n_diodes) A anode → cathode, ``vsource_currents``
    (batch, n_vsources) A into each source's + terminal (SPICE sign), ``iterations`` used."""

    voltages: Tensor
    diode_currents: Tensor
    vsource_currents: Tensor
    iterations: int


class NetlistSolver:
    """Factorises a netlist's linear part once; :meth:`solve` then handles any batch of source
    values. Raises ``ValueError`` if the resistive network leaves a node floating."""

    def __init__(self, net: Netlist) -> None:
        self.net = net
        n, m = net.num_nodes, len(net.vsources)
        self.n, self.m = n, m
        rows, cols, vals = [], [], []

        def stamp(i: int, j: int, g: float) -> None:
            if i and j:
                rows.append(i - 1), cols.append(j - 1), vals.append(g)

        for a, b, g in net.resistors:
            stamp(a, a, g), stamp(b, b, g), stamp(a, b, -g), stamp(b, a, -g)
        for k, (p, q, _) in enumerate(net.vsources):
            for node, s in ((p, 1.0), (q, -1.0)):
                if node:
                    rows += [node - 1, n + k]
                    cols += [n + k, node - 1]
                    vals += [s, s]
        k_mat = sp.csc_matrix((vals, (rows, cols)), shape=(n + m, n + m))
        try:
            self.lu = spla.splu(k_mat)
        except RuntimeError as err:
            raise ValueError(
                "the netlist's resistive network is singular: every node needs a resistive path "
                "to ground or a voltage source, and no loop may consist of voltage sources only"
            ) from err
        self.inj = sp.csc_matrix(self._incidence(net.isources, 1, 0))  # (n, n_is): +1 at n
        d = self._incidence(net.diodes, 0, 1)  # (n, n_d): +1 at anode, −1 at cathode
        self.d = torch.from_numpy(d)
        z = (
            self.lu.solve(np.vstack([d, np.zeros((m, d.shape[1]))]))
            if d.size
            else np.zeros((n + m, 0))
        )
        self.z = torch.from_numpy(np.ascontiguousarray(z))  # (n + m, n_d)
        mm = d.T @ z[:n]
        self.m_mat = torch.from_numpy(0.5 * (mm + mm.T))
        arr = net.diode_arrays()
        self.is_ = torch.from_numpy(arr["is_"])
        self.nvt = torch.from_numpy(arr["n"] * arr["vt"])
        self.mr = self.m_mat + torch.diag(torch.from_numpy(arr["rs"]))

    def _incidence(self, elems, plus: int, minus: int) -> np.ndarray:
        out = np.zeros((self.n, len(elems)))
        for k, e in enumerate(elems):
            if e[plus]:
                out[e[plus] - 1, k] += 1.0
            if e[minus]:
                out[e[minus] - 1, k] -= 1.0
        return out

    def open_circuit(self, vsrc: Tensor, isrc: Tensor) -> Tensor:
        """MNA solution with all diodes removed, shape (batch, n + m)."""
        rhs = np.zeros((self.n + self.m, vsrc.shape[0]))
        if self.inj.shape[1]:
            rhs[: self.n] = self.inj @ isrc.numpy().T
        rhs[self.n :] = vsrc.numpy().T
        return torch.from_numpy(np.ascontiguousarray(self.lu.solve(rhs).T))

    def solve(
        self,
        vsrc: Tensor | None = None,
        isrc: Tensor | None = None,
        *,
        diode: str = "shockley",
        tol: float = 1e-13,
        max_iter: int = 200,
    ) -> Steady:
        """Steady states for source voltages ``vsrc`` (batch, n_vsources) V and currents
        ``isrc`` (batch, n_isources) A (None: the netlist's stored values). ``diode`` is
        ``"shockley"`` or ``"ideal"``; ``tol`` bounds the last Newton step's change of any node
        voltage (V)."""
        if diode not in ("shockley", "ideal"):
            raise ValueError(f"diode must be 'shockley' or 'ideal', got {diode!r}")
        vsrc, isrc = batch_sources(self.net, vsrc, isrc)
        x0 = self.open_circuit(vsrc, isrc)
        n = self.n
        it = 0
        mu = torch.zeros(x0.shape[0], self.d.shape[1], dtype=torch.float64)
        nd = mu.shape[1]
        chunk = max(1, int(2**25 // max(nd * nd, 1)))  # ≤ 256 MiB of per-sample matrices
        for lo in range(0, mu.shape[0] if nd else 0, chunk):
            q = x0[lo : lo + chunk, :n] @ self.d
            start, its = lcp_bpp(self.mr, q, max_iter=max_iter)  # ideal diodes
            if diode == "shockley":  # warm-started from the ideal currents
                zv = self.z[:n]
                start, its2 = shockley_newton(
                    self.mr, q, self.is_, self.nvt, zv, start, tol, max_iter
                )
                its += its2
            mu[lo : lo + chunk] = start
            it = max(it, its)
        x = x0 - mu @ self.z.T
        volts = torch.cat([torch.zeros(x.shape[0], 1, dtype=x.dtype), x[:, :n]], 1)
        return Steady(volts, mu, x[:, n:], it)


def solve(net: Netlist, vsrc=None, isrc=None, *, diode: str = "shockley", **kw) -> Steady:
    """One-shot :meth:`NetlistSolver.solve` (factorise, then solve the batch)."""
    return NetlistSolver(net).solve(vsrc, isrc, diode=diode, **kw)


def batch_sources(net: Netlist, vsrc: Tensor | None, isrc: Tensor | None) -> tuple[Tensor, Tensor]:
    """Source values as float64 batches of equal size: voltages (batch, n_vsources) V and
    currents (batch, n_isources) A; None takes the netlist's stored values."""
    v = net.vsource_values() if vsrc is None else torch.as_tensor(vsrc, dtype=torch.float64)
    i = net.isource_values() if isrc is None else torch.as_tensor(isrc, dtype=torch.float64)
    v = v.reshape(v.shape[0] if v.dim() == 2 else 1, len(net.vsources))
    i = i.reshape(i.shape[0] if i.dim() == 2 else 1, len(net.isources))
    b = max(v.shape[0], i.shape[0])
    if v.shape[0] not in (1, b) or i.shape[0] not in (1, b):
        raise ValueError(f"batch sizes differ: vsrc {v.shape[0]}, isrc {i.shape[0]}")
    return v.expand(b, -1).contiguous(), i.expand(b, -1).contiguous()


def _masked_solve(a: Tensor, rhs: Tensor, mask: Tensor) -> Tensor:
    """Solve ``a[F,F] x_F = rhs_F`` per sample (F = mask), with ``x = 0`` off F."""
    f = mask.to(a.dtype)
    sys = a * f[:, :, None] * f[:, None, :] + torch.diag_embed(1.0 - f)
    return torch.linalg.solve(sys, (rhs * f).unsqueeze(-1)).squeeze(-1) * f


def lcp_bpp(m: Tensor, q: Tensor, max_iter: int = 200) -> tuple[Tensor, int]:
    """Batched LCP ``μ ≥ 0, y = mμ − q ≥ 0, μ·y = 0`` for symmetric positive-definite ``m``
    (n, n) and ``q`` (batch, n), by block principal pivoting with Murty's single-pivot fallback
    (Júdice & Pires 1994), which terminates finitely. Returns ``(μ, pivots)``."""
    batch, nd = q.shape
    free = q > 0
    scale_q = q.abs().amax(1, keepdim=True).clamp_min(1e-300)
    best = torch.full((batch,), nd + 1, dtype=torch.long)
    chances = torch.full((batch,), 3, dtype=torch.long)
    idx = torch.arange(nd)
    for it in range(1, max_iter + 1):
        mu = _masked_solve(m, q, free)
        y = mu @ m - q
        y = torch.where(free, torch.zeros_like(y), y)
        tol_mu = 1e-12 * mu.abs().amax(1, keepdim=True).clamp_min(1e-300)
        bad = (free & (mu < -tol_mu)) | (~free & (y < -1e-12 * scale_q))
        count = bad.sum(1)
        if not bool(count.any()):
            return mu.clamp_min(0.0), it
        better = count < best
        best = torch.where(better, count, best)
        chances = torch.where(better, torch.full_like(chances, 3), chances - (count > 0).long())
        block = chances >= 0
        last = torch.where(bad, idx, -1).amax(1, keepdim=True)
        flip = torch.where(block[:, None], bad, idx == last)
        free = free ^ flip
    raise RuntimeError(f"ideal-diode pivoting did not finish in {max_iter} pivots")


def shockley_newton(
    mr: Tensor,
    q: Tensor,
    is_: Tensor,
    nvt: Tensor,
    zv: Tensor,
    start: Tensor,
    tol: float,
    max_iter: int,
) -> tuple[Tensor, int]:
    """Solve ``mr μ + nvt·ln(1 + μ/Is) = q`` (batch, n_d) by damped Newton on the convex
    content ``Φ = ½μᵀ mr μ − qᵀμ + Σ nvt·(u ln(u/Is) − u + Is)``, ``u = μ + Is`` (A), from the
    currents ``start`` ≥ 0 (A). Stops when the last step moved no node voltage (``zv`` maps
    currents to node voltages) by more than ``tol`` V and no diode's voltage residual exceeds
    ``1e3·tol`` V."""
    u = start.clamp_min(0.0) + is_
    floor = is_ * 1e-200  # reverse currents closer to −Is than this are −Is to float64

    def content(u: Tensor) -> Tensor:
        mu = u - is_
        return (
            0.5 * ((mu @ mr) * mu).sum(1)
            - (q * mu).sum(1)
            + (nvt * (u * torch.log(u / is_) - u + is_)).sum(1)
        )

    phi = content(u)
    for it in range(1, max_iter + 1):
        mu = u - is_
        grad = mu @ mr + nvt * torch.log(u / is_) - q
        hess = mr + torch.diag_embed(nvt / u)
        chol, info = torch.linalg.cholesky_ex(hess)
        if bool(info.any()):
            step = -torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        else:
            step = -torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        slope = (grad * step).sum(1)
        alpha = torch.ones_like(phi)
        todo = torch.ones_like(phi, dtype=torch.bool)
        u_new, phi_new = u, phi
        for _ in range(60):  # backtracking along u → u + αΔ (Δ ≥ 0) or u·exp(αΔ/u) (Δ < 0)
            a = alpha[:, None] * step
            cand = torch.where(step >= 0, u + a, (u * torch.exp(a / u)).clamp_min(floor))
            phi_c = content(cand)
            ok = phi_c <= phi + 1e-4 * alpha * slope + 1e-14 * phi.abs() + 1e-300
            take = todo & ok
            u_new = torch.where(take[:, None], cand, u_new)
            phi_new = torch.where(take, phi_c, phi_new)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
            alpha = torch.where(todo, 0.5 * alpha, alpha)
        dv = ((u_new - u) @ zv.T).abs().amax()
        u, phi = u_new, phi_new
        # a diode held at the floor is off to float64 precision unless it wants more current
        res = torch.where((u <= floor * 1.000001) & (grad > 0), 0.0, grad).abs().amax()
        res = res if it > 1 else torch.tensor(float("inf"))
        if float(dv) <= tol and bool((alpha == 1).all()) and float(res) <= 1e3 * tol:
            return u - is_, it
    raise RuntimeError(f"Shockley Newton did not converge in {max_iter} iterations")
