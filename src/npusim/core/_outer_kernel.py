"""Compiled ``p += leftᵀ right`` for :meth:`npusim.core.outer.OuterProduct.add_to`.

The arithmetic is MKL's for a float32 ``addmm_`` whose output has 16 or more columns (checked
element for element, ranks 1 to 128, 1 and 2 threads): per element the rank terms are summed in
order, the first a product and each further one a fused multiply-add, and the sum is added to
``p`` last. Rows of ``left`` that are zero add nothing and are skipped (an image's blank pixels:
most of the input layer's rows), as is the whole row of ``p`` when all its terms are zero.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.extending import intrinsic

_ZERO = np.float32(0.0)  # the kernel runs on float32 (no widening in the clamp)


@intrinsic
def _fma(typingctx, a, b, c):  # pragma: no cover - compiled
    """``a·b + c`` rounded once (LLVM's ``llvm.fma``)."""
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, parallel=True)
def add_outer(p, left, right, nonneg, sums, parts):  # pragma: no cover - compiled
    """``p += leftᵀ right`` in place, then ``max(p, 0)`` if ``nonneg``; ``sums`` (empty or
    ``p``'s column count): also ``sums[j] = Σ_i p[i, j]`` of the result, summed over rows in
    order (as ``ones @ p``). ``parts``: row blocks run on numba's threads (the first block
    keeps the column sums as it goes; then each further block's rows are added in order by the
    thread that wrote them, which holds them in its cache: read from another core they cost
    up to 1.4 ms for a 1568×1024 ``p`` where the cores share no cache)."""
    m = p.shape[0]
    want = sums.shape[0] > 0
    for j in range(sums.shape[0]):  # a loop, not ``sums[:] = 0``: no implicit parallel region
        sums[j] = 0.0
    if parts <= 1:
        _rows(p, left, right, nonneg, sums, 0, m, want)
        return
    for b in prange(parts):
        _rows(p, left, right, nonneg, sums, b * m // parts, (b + 1) * m // parts, want and b == 0)
    if want:
        for t in range(1, parts):  # block t after block t−1 (the order of ``ones @ p``)
            for b in prange(parts):  # static schedule: iteration b on block b's thread
                if b == t:
                    _add_rows(p, sums, b * m // parts, (b + 1) * m // parts)


@njit(cache=True)
def _add_rows(p, sums, i0, i1):  # pragma: no cover - compiled
    """``sums += p[i]`` for rows ``i0 .. i1−1`` in order."""
    for i in range(i0, i1):
        row = p[i]
        for j in range(p.shape[1]):
            sums[j] += row[j]


@njit(cache=True)
def _rows(p, left, right, nonneg, sums, i0, i1, want):  # pragma: no cover - compiled
    """:func:`add_outer` on rows ``i0 .. i1−1`` (column sums into ``sums`` if ``want``)."""
    rank = left.shape[0]
    n = right.shape[1]
    ks = np.empty(rank, np.int64)
    acc = np.empty(n, p.dtype)
    for i in range(i0, i1):
        cnt = 0
        for k in range(rank):
            if left[k, i] != 0.0:
                ks[cnt] = k
                cnt += 1
        row = p[i]
        if cnt == 0:
            if nonneg:
                for j in range(n):
                    v = row[j]
                    row[j] = _ZERO if v < _ZERO else v
        elif cnt <= 4:  # in registers: one pass over the row
            k0, k1, k2, k3 = ks[0], ks[min(1, cnt - 1)], ks[min(2, cnt - 1)], ks[min(3, cnt - 1)]
            a0, a1, a2, a3 = left[k0, i], left[k1, i], left[k2, i], left[k3, i]
            r0, r1, r2, r3 = right[k0], right[k1], right[k2], right[k3]
            for j in range(n):
                v = a0 * r0[j]
                if cnt > 1:
                    v = _fma(a1, r1[j], v)
                if cnt > 2:
                    v = _fma(a2, r2[j], v)
                if cnt > 3:
                    v = _fma(a3, r3[j], v)
                v = row[j] + v
                if nonneg:
                    v = 0.0 if v < 0.0 else v
                row[j] = v
        else:
            a, r = left[ks[0], i], right[ks[0]]
            for j in range(n):
                acc[j] = a * r[j]
            q = 1
            while q + 4 <= cnt:  # four terms per pass over the row, in order
                k0, k1, k2, k3 = ks[q], ks[q + 1], ks[q + 2], ks[q + 3]
                a0, a1, a2, a3 = left[k0, i], left[k1, i], left[k2, i], left[k3, i]
                r0, r1, r2, r3 = right[k0], right[k1], right[k2], right[k3]
                for j in range(n):
                    v = _fma(a1, r1[j], _fma(a0, r0[j], acc[j]))
                    acc[j] = _fma(a3, r3[j], _fma(a2, r2[j], v))
                q += 4
            for t in range(q, cnt):
                a, r = left[ks[t], i], right[ks[t]]
                for j in range(n):
                    acc[j] = _fma(a, r[j], acc[j])
            if nonneg:
                for j in range(n):
                    v = row[j] + acc[j]
                    row[j] = _ZERO if v < _ZERO else v
            else:
                for j in range(n):
                    row[j] = row[j] + acc[j]
        if want:
            for j in range(n):
                sums[j] += row[j]


@njit(cache=True)
def transpose_into(dst, src):  # pragma: no cover - compiled
    """``dst[j, i] = src[i, j]`` for 2-D ``src`` (m, n) and ``dst`` (n, m); for a narrow side
    (n or m of a few dozen at most: each pass over ``src`` reads one column)."""
    m, n = src.shape
    for j in range(n):
        d = dst[j]
        for i in range(m):
            d[i] = src[i, j]


@njit(cache=True, inline="always")
def _clamp(v, nonneg):  # pragma: no cover - compiled
    return (_ZERO if v < _ZERO else v) if nonneg else v
