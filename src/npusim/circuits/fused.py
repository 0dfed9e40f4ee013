"""The relaxation of a layered network (:meth:`LayeredNetwork.relax`) as one compiled call.

The reference relaxation runs each sweep as a handful of small torch operations per layer; for
the narrow layers of a classifier (a 1,024-unit hidden layer against 10 outputs) every one of
them costs more in dispatch and in small-matrix inefficiency than in arithmetic. Here the whole
sweep loop is one numba call over a lane layout: samples in chunks of 16 lanes (one vector
register per unit), each unit's drive accumulated in registers over its neighbours in order,
four units at a time (:mod:`npusim.circuits._lanes`).

Same arithmetic as the reference up to float rounding: each sum runs in input order (a BLAS
product orders it otherwise), no fast-math (NaN and inf propagate, so a diverged relaxation is
still caught), and a scalar β is applied after the product instead of folded into the weights.
Layer order, the stopping rule on ``tol``, ``residual`` (max |change| of the last sweep) and
``sweeps`` are exactly the reference's.

Used by :meth:`LayeredNetwork.relax` when the network describes its units
(:meth:`LayeredNetwork._fused_units`), it has a hidden layer, and no tensor involved requires
grad (backprop differentiates through the reference).
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from npusim.circuits._lanes import _acc1, _acc4, _finish_hidden, _finish_output, _wide_hidden
from npusim.core.numba_threads import as_numpy as _np
from npusim.core.numba_threads import numba_threads

FEW = 64  # a hidden unit with fewer neighbours is updated alone (the drive in registers)

LANES = 16


@contextlib.contextmanager
def _slp():
    """Compile with LLVM's SLP vectoriser on (numba's default is off): the 16 scalar
    accumulators of :mod:`_lanes` become one register. It never reorders float arithmetic."""
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = old


@njit(cache=True)
def _update_layer(  # pragma: no cover - compiled
    S, k, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide, sc, of, olo, ohi,
    mask, t, res, track,
):  # fmt: skip
    """Exact minimiser of free layer ``k`` (1-based) for every chunk of 16 samples, in place."""
    for c in range(S.shape[0]):
        _update_chunk(
            S, c, k, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide, sc, of,
            olo, ohi, mask, t, res, track,
        )  # fmt: skip


@njit(cache=True)
def _update_chunk(  # pragma: no cover - compiled
    S, c, k, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide, sc, of, olo, ohi,
    mask, t, res, track,
):  # fmt: skip
    """Exact minimiser of free layer ``k`` (1-based) for chunk ``c`` of 16 samples, in place;
    ``track``: the residual into ``res`` (a wide hidden layer skips it otherwise)."""
    n = sizes[k]
    nd = sizes[k - 1] if k >= 2 else 0
    nu = sizes[k + 1] if k < L else 0
    rows = S[c]
    m = mask[c]
    base = base1[c % nbase] if k == 1 else brows[offs[k] : offs[k] + n]
    if k < L and nd + nu < FEW:
        h = k - 1
        _wide_hidden(
            rows, offs[k], n, base, wt[k - 2] if k >= 2 else w[k - 1], offs[k - 1], nd,
            w[k - 1], offs[k + 1], nu, den[h], lo[h], hi[h], divide, m, res, track,
        )  # fmt: skip
        return
    j = 0
    while j < n:
        u4 = n >= 4
        if u4 and j + 4 > n:
            j = n - 4  # overlap the last block: recomputes identical values
        cnt = 4 if u4 else 1
        for u in range(cnt):
            tu = t[u]
            src = base[j + u]
            for lane in range(16):
                tu[lane] = src[lane]
        if k >= 2:  # from layer k-1 through W_{k-1}ᵀ (rows: units of layer k)
            wd = wt[k - 2]
            if u4:
                _acc4(t, wd[j], wd[j + 1], wd[j + 2], wd[j + 3], rows, offs[k - 1], sizes[k - 1])
            else:
                _acc1(t, wd[j], rows, offs[k - 1], sizes[k - 1])
        if k < L:  # from layer k+1 through W_k
            wu = w[k - 1]
            if u4:
                _acc4(t, wu[j], wu[j + 1], wu[j + 2], wu[j + 3], rows, offs[k + 1], sizes[k + 1])
            else:
                _acc1(t, wu[j], rows, offs[k + 1], sizes[k + 1])
        for u in range(cnt):
            row = rows[offs[k] + j + u]
            if k < L:
                h = k - 1
                _finish_hidden(t[u], row, den[h][j + u], lo[h][j + u], hi[h][j + u], divide, m, res)
            else:
                _finish_output(t[u], row, sc[c, j + u], of[c, j + u], olo, ohi, m, res)
        j += cnt


@njit(cache=True, parallel=True)
def _sweep_chunks(  # pragma: no cover - compiled
    S, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide, sc, of, olo, ohi, mask,
    sweeps, resc,
):  # fmt: skip
    """All ``sweeps`` sweeps chunk by chunk, the chunks spread over numba's threads (they are
    independent: the same arithmetic as sweep by sweep); ``resc[c]``: chunk c's residual per
    lane in the last sweep."""
    for c in prange(S.shape[0]):
        t = np.zeros((4, 16), S.dtype)
        res = np.zeros(16, S.dtype)
        for sweep in range(sweeps):
            res[:] = 0
            for parity in (1, 2):
                for k in range(parity, L + 1, 2):
                    _update_chunk(
                        S, c, k, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi,
                        divide, sc, of, olo, ohi, mask, t, res, sweep == sweeps - 1,
                    )  # fmt: skip
        for lane in range(16):
            resc[c, lane] = res[lane]


@njit(cache=True)
def _relax(  # pragma: no cover - compiled
    init, has_init, out, L, sizes, offs, base1, nbase, wt, w, bias, den, lo, hi, divide,
    scale, offset, olo, ohi, sweeps, tol, parallel,
):  # fmt: skip
    """The sweep loop: odd layers, then even layers; returns (sweeps run, last residual).

    ``init``: the free layers' initial states (batch, n_k) (unless ``has_init``: zeros);
    ``out``: where the final states go; ``scale``, ``offset``: (batch, n_L) output operator;
    ``parallel``: chunks on numba's threads (only without a stopping rule, ``tol = 0``)."""
    dt = base1.dtype
    batch = out[0].shape[0]
    nch = (batch + 15) // 16
    S = np.zeros((nch, offs[L + 1], 16), dt)
    if has_init:
        for k in range(L):
            _pack(S, offs[k + 1], init[k], batch)
    mask = np.zeros((nch, 16), dt)
    for r in range(batch):
        mask[r // 16, r % 16] = 1.0
    sc = np.zeros((nch, sizes[L], 16), dt)
    of = np.zeros_like(sc)
    _pack(sc, 0, scale, batch)
    _pack(of, 0, offset, batch)
    brows = np.zeros((offs[L + 1], 16), dt)  # bias b_{k−1} of layers k ≥ 2, on every lane
    for k in range(2, L + 1):
        b = bias[k - 1]
        for j in range(sizes[k]):
            brows[offs[k] + j, :] = b[j]
    t = np.zeros((4, 16), dt)
    res = np.zeros(16, dt)
    residual = np.inf
    done = 0
    if parallel and tol == 0.0 and nch > 1:
        resc = np.zeros((nch, 16), dt)
        _sweep_chunks(
            S, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide, sc, of, olo,
            ohi, mask, sweeps, resc,
        )  # fmt: skip
        for c in range(nch):  # the sweep-by-sweep loop's running max (NaN sticks)
            for lane in range(16):
                r, d = res[lane], resc[c, lane]
                res[lane] = r if (r >= d or r != r) else d
        done, residual = sweeps, _lane_max(res)
    else:
        for done in range(1, sweeps + 1):
            res[:] = 0
            check = tol > 0.0 or done == sweeps  # the residual of other sweeps is not read
            for parity in (1, 2):
                for k in range(parity, L + 1, 2):
                    _update_layer(
                        S, k, L, sizes, offs, base1, nbase, brows, wt, w, den, lo, hi, divide,
                        sc, of, olo, ohi, mask, t, res, check,
                    )  # fmt: skip
            if check:
                residual = _lane_max(res)
                if not (residual == residual and abs(residual) < np.inf):
                    break
                if residual <= tol:
                    break
    for k in range(L):
        _unpack(out[k], S, offs[k + 1])
    return done, residual


@njit(cache=True)
def _relax_phases(  # pragma: no cover - compiled
    free_out, nudged_out, L, sizes, offs, base_free, base_nudged, wt, w, bias, den, lo, hi,
    divide, free_scale, free_offset, scale, offset, olo, ohi, free_sweeps, sweeps, tol,
    parallel,
):  # fmt: skip
    """The free relaxation from zero into ``free_out``, then the nudged tiles from its
    equilibrium (sample r of the nudged batch starts at sample r mod batch) into
    ``nudged_out``; returns (free sweeps, free residual, nudged sweeps, nudged residual). A
    diverged free phase (NaN/inf) stops there: the nudged phase is not run (0 sweeps)."""
    fd, fr = _relax(
        free_out, False, free_out, L, sizes, offs, base_free, base_free.shape[0], wt, w, bias,
        den, lo, hi, divide, free_scale, free_offset, olo, ohi, free_sweeps, tol, parallel,
    )  # fmt: skip
    if not (fr == fr and abs(fr) < np.inf):
        return fd, fr, 0, fr
    nd, nr = _relax(
        free_out, True, nudged_out, L, sizes, offs, base_nudged, base_nudged.shape[0], wt, w,
        bias, den, lo, hi, divide, scale, offset, olo, ohi, sweeps, tol, parallel,
    )  # fmt: skip
    return fd, fr, nd, nr


@njit(cache=True)
def _lane_max(res):  # pragma: no cover - compiled
    """The largest of the lanes' residuals, NaN if any is NaN."""
    residual = 0.0
    for r in res:
        if not (residual >= r) or r != r:
            residual = r
            if r != r:
                break
    return residual


@njit(cache=True)
def _pack(dst, off, src, rows):  # pragma: no cover - compiled
    """``dst[c, off + j, l] = src[(16c + l) mod len(src), j]`` for the ``rows`` lanes in use;
    a whole chunk 16 units at a time (a 16×16 tile stays in L1: twice as fast as row by row)."""
    n, m = src.shape[1], src.shape[0]
    for c in range((rows + 15) // 16):
        r0, d = c * 16, dst[c]
        if r0 + 16 <= rows:
            for j0 in range(0, n - 15, 16):
                for lane in range(16):
                    s = src[(r0 + lane) % m]
                    for jj in range(16):
                        d[off + j0 + jj, lane] = s[j0 + jj]
            for lane in range(16):
                s = src[(r0 + lane) % m]
                for j in range(n - n % 16, n):
                    d[off + j, lane] = s[j]
        else:
            for r in range(r0, rows):
                s = src[r % m]
                for j in range(n):
                    d[off + j, r - r0] = s[j]


@njit(cache=True)
def _unpack(dst, src, off):  # pragma: no cover - compiled
    """``dst[r, j] = src[r // 16, off + j, r mod 16]``; 16×16 tiles as :func:`_pack`."""
    n, rows = dst.shape[1], dst.shape[0]
    for c in range(src.shape[0]):
        r0, s = c * 16, src[c]
        if r0 + 16 <= rows:
            for j0 in range(0, n - 15, 16):
                for lane in range(16):
                    d = dst[r0 + lane]
                    for jj in range(16):
                        d[j0 + jj] = s[off + j0 + jj, lane]
            for lane in range(16):
                d = dst[r0 + lane]
                for j in range(n - n % 16, n):
                    d[j] = s[off + j, lane]
        else:
            for r in range(r0, rows):
                d = dst[r]
                for j in range(n):
                    d[j] = s[off + j, r - r0]


@njit(cache=True, parallel=True)
def _drive_rows(s_in, w, b, d, wide, parts):  # pragma: no cover - compiled
    """``d = b + s_in @ w`` row by row, zero inputs skipped, summed in order in float64 if
    ``wide`` else in ``d``'s type; the rows in ``parts`` blocks on numba's threads."""
    m = s_in.shape[0]
    for q in prange(parts):
        r0, r1 = q * m // parts, (q + 1) * m // parts
        if wide:
            _drive_block(s_in, w, b, d, np.empty(w.shape[1], np.float64), r0, r1)
        else:
            _drive_block(s_in, w, b, d, np.empty(w.shape[1], d.dtype), r0, r1)


@njit(cache=True)
def _drive_block(s_in, w, b, d, o, r0, r1):  # pragma: no cover - compiled
    """Rows ``r0 .. r1−1`` of :func:`_drive_rows`, summed in ``o``'s type (four inputs per pass
    over the row: ``((o + a) + b) + c``, the same roundings in order)."""
    n = w.shape[1]
    nz = np.empty(s_in.shape[1], np.int64)
    for r in range(r0, r1):
        for j in range(n):
            o[j] = b[j]
        x = s_in[r]
        m = 0
        for i in range(s_in.shape[1]):
            if x[i] != 0.0:
                nz[m] = i
                m += 1
        q = 0
        while q + 4 <= m:
            i0, i1, i2, i3 = nz[q], nz[q + 1], nz[q + 2], nz[q + 3]
            v0, v1 = o.dtype.type(x[i0]), o.dtype.type(x[i1])
            v2, v3 = o.dtype.type(x[i2]), o.dtype.type(x[i3])
            w0, w1, w2, w3 = w[i0], w[i1], w[i2], w[i3]
            for j in range(n):
                o[j] = o[j] + v0 * w0[j] + v1 * w1[j] + v2 * w2[j] + v3 * w3[j]
            q += 4
        for p in range(q, m):
            v = o.dtype.type(x[nz[p]])
            wr = w[nz[p]]
            for j in range(n):
                o[j] += v * wr[j]
        dr = d[r]
        for j in range(n):
            dr[j] = o[j]


def input_drive(s_in: Tensor, w: Tensor, b: Tensor, wide: bool = False) -> np.ndarray:
    """The input drive ``b + s_in @ w`` (batch, n_1); a zero input adds nothing (most pixels
    are zero). ``wide``: sum in float64 and round once (an in-order float32 sum loses more than
    a blocked BLAS product when terms cancel, as the DRN's ``[x, −x]`` inputs do)."""
    wn = _np(w)
    d = np.empty((s_in.shape[0], wn.shape[1]), wn.dtype)
    with numba_threads(d.shape[0]) as parts:
        if parts > 1:
            _drive_rows(_np(s_in), wn, _np(b), d, wide, parts)
        else:  # no parallel region at all
            o = np.empty(wn.shape[1], np.float64 if wide else wn.dtype)
            _drive_block(_np(s_in), wn, _np(b), d, o, 0, d.shape[0])
    return d


def chunked(drive: np.ndarray, rows: int) -> np.ndarray:
    """``drive`` (batch, n) in the lane layout (chunks, n, 16) for ``rows`` samples (row r
    takes sample r mod batch: tiled copies), pad lanes zero."""
    out = np.zeros(((rows + 15) // 16, drive.shape[1], 16), drive.dtype)
    _pack(out, 0, drive, rows)
    return out


class Plan:
    """What a relaxation needs of a network that does not change with its weights' values:
    layer offsets, unit bounds, and numpy views of the parameters (in-place updates show)."""

    def __init__(self, net_sizes: list[int], params: list[Tensor], units: tuple) -> None:
        self.L = L = len(net_sizes) - 1
        self.dtype = params[0].dtype
        self.ndt = np.float32 if self.dtype == torch.float32 else np.float64
        self.sizes = np.asarray(net_sizes, np.int64)
        self.offs = np.zeros(L + 2, np.int64)  # offs[k]: first row of layer k (1-based)
        self.offs[1:] = np.cumsum([0, *net_sizes[1:]])
        weights, biases = params[:L], params[L:]
        self.w = tuple(weights[k].numpy() for k in range(1, L))  # W_k: rows are units of k
        self.bias = tuple(b.numpy() for b in biases)
        den, lo, hi, olo, ohi = units
        self.divide = den is not None
        self.lo = tuple(t.numpy() for t in lo)
        self.hi = tuple(t.numpy() for t in hi)
        self.ones = tuple(np.ones(n, self.ndt) for n in net_sizes[1:-1])
        self.olo, self.ohi = self.ndt(olo), self.ndt(ohi)

    def states(self, rows: int) -> tuple[Tensor, ...]:
        """Uninitialised free-layer states of ``rows`` samples, one (rows, n_k) per layer."""
        return tuple(torch.empty(rows, int(n), dtype=self.dtype) for n in self.sizes[1:])


def relax(
    plan: Plan,
    transposed: list[Tensor],
    den: list[Tensor] | None,
    base1: np.ndarray,
    batch: int,
    state: list[Tensor] | None,
    scale: Tensor,
    offset: Tensor,
    *,
    sweeps: int,
    tol: float,
) -> tuple[list[Tensor], int, float]:
    """Relax ``batch`` samples (all tiles) of a layered network; returns (state, sweeps, residual).

    ``plan``: the network's :class:`Plan`; ``transposed``: ``W_kᵀ`` contiguous for k = 1 ..
    L−1; ``den``: per hidden layer the divisor of its drive (None: none); ``base1``:
    :func:`chunked` input drive (whole chunks, reused cyclically by the tiles, or
    all ``batch`` rows); ``scale``, ``offset``: (batch, n_L) output operator
    ``s_L = clamp((s_{L−1} W_{L−1} + b_{L−1})·scale + offset, out_lo, out_hi)`` (strided views,
    e.g. expanded, are read in place).
    """
    p = plan
    out = p.states(batch)
    init = tuple(o.numpy() for o in out) if state is None else tuple(_np(s) for s in state)
    weights = _weight_args(p, transposed, den)
    with numba_threads(-(-batch // LANES)) as threads, _slp():
        done, residual = _relax(
            init, state is not None, tuple(o.numpy() for o in out), p.L, p.sizes, p.offs,
            base1, base1.shape[0], *weights, scale.numpy(), offset.numpy(), p.olo, p.ohi,
            sweeps, float(tol), threads > 1,
        )  # fmt: skip
    return list(out), int(done), float(residual)


def relax_phases(
    plan: Plan,
    transposed: list[Tensor],
    den: list[Tensor] | None,
    bases: tuple[np.ndarray, np.ndarray],
    batch: int,
    tiles: int,
    free_operator: tuple[Tensor, Tensor],
    operator: tuple[Tensor, Tensor],
    *,
    free_sweeps: int,
    sweeps: int,
    tol: float,
) -> tuple[tuple[list[Tensor], int, float], tuple[list[Tensor], int, float]]:
    """The free relaxation of ``batch`` samples, then ``tiles`` nudged copies of it side by side
    from its equilibrium, in one compiled call; returns ((state, sweeps, residual) of the free
    phase, the same of the nudged tiles). ``bases``: the :func:`chunked` input drive of each
    (as ``base1`` of :func:`relax`); ``free_operator``, ``operator``: each phase's output
    ``(scale, offset)``, (batch, n_L) and (tiles·batch, n_L). A diverged free phase returns
    its NaN residual and 0 nudged sweeps."""
    p = plan
    free, nudged = p.states(batch), p.states(tiles * batch)
    weights = _weight_args(p, transposed, den)
    with numba_threads(-(-tiles * batch // LANES)) as threads, _slp():
        fd, fr, nd, nr = _relax_phases(
            tuple(o.numpy() for o in free), tuple(o.numpy() for o in nudged), p.L, p.sizes,
            p.offs, bases[0], bases[1], *weights, free_operator[0].numpy(),
            free_operator[1].numpy(), operator[0].numpy(), operator[1].numpy(), p.olo, p.ohi,
            free_sweeps, sweeps, float(tol), threads > 1,
        )  # fmt: skip
    return (list(free), int(fd), float(fr)), (list(nudged), int(nd), float(nr))


def _weight_args(p: Plan, transposed: list[Tensor], den: list[Tensor] | None) -> tuple:
    """``(wt, w, bias, den, lo, hi, divide)`` of the compiled sweep, numpy views."""
    dens = p.ones if den is None else tuple(_np(d) for d in den)
    return tuple(_np(t) for t in transposed), p.w, p.bias, dens, p.lo, p.hi, p.divide
