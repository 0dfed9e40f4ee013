"""Fused programming kernel: pulse counts, device physics and weight write-back in one pass.

An update ``x`` (in pulses, one row per active crossbar row) is rounded to integer pulse
counts and every pulsed device is programmed in place, row by row, in parallel over rows
(numba). Per row, one streaming pass rounds the 1,024-odd counts and compacts the nonzero
ones; a second pass programs those devices and writes their weight. Only pulsed devices'
records are touched, so the work is one read of ``x`` plus the pulsed records.

Randomness is counter-based: h = splitmix64(key + flat index x golden ratio), so results do
not depend on the number of threads, and resuming needs only the update counter. Stochastic
rounding adds the uniform (top 24 bits of h + 1/2) / 2^24 (bias < 2^-25 pulse). Write noise
is the Irwin-Hall sum of the four 16-bit words of splitmix64(h ^ c1) (the programmed device;
device 1 of a bidirectional pair uses splitmix64(h ^ c1 ^ c2)), scaled to zero mean and unit
variance.

Record of one weight (16 bytes, :data:`RECORD`): ``y0, y1`` conductance / g_max of its
device(s), ``m0, m1`` bank row of each device's down step (its up step is the next row;
0 = frozen), ``c0`` pulses received by device 0. Device 1's pulses live in a separate array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numpy as np
import torch
from numba import njit, prange

from npusim.devices.pulsed import FROZEN, HI, LO, NOISE, RATE

F = TypeVar("F", bound=Callable[..., Any])

RECORD = np.dtype([("y0", "<f4"), ("y1", "<f4"), ("m0", "<i2"), ("m1", "<i2"), ("c0", "<i4")])

ONE_DEVICE, BIDIRECTIONAL, ONE_SIDED = 0, 1, 2  # who a signed count n programs (see apply)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW16 = np.uint64(0xFFFF)


@njit(inline="always", cache=True)
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64 finaliser: a bijective 64-bit hash."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


MAX_TENSORS = 256  # parameter tensors of one chip with their own random streams


@njit(cache=True)
def stream_key(seed: int, update: int, tensor: int) -> np.uint64:
    """Key of the random stream of one update of one tensor (0 <= tensor < MAX_TENSORS)."""
    inner = _mix(np.uint64(update) * np.uint64(MAX_TENSORS) + np.uint64(tensor))
    return _mix(np.uint64(seed) ^ inner)


@njit(inline="always", cache=True)
def _hash(key: np.uint64, flat: int) -> np.uint64:
    return _mix(key + np.uint64(flat) * _GOLDEN)


@njit(inline="always", cache=True)
def _uniform24(h: np.uint64) -> np.float32:
    """(k + 1/2) / 2^24 from the top 24 bits of ``h``: uniform on a grid in (0, 1)."""
    return (np.float32(h >> np.uint64(40)) + np.float32(0.5)) * np.float32(2.0**-24)


@njit(inline="always", cache=True)
def _normal(h: np.uint64) -> np.float32:
    """Irwin-Hall(4) of the four 16-bit words of ``h``: mean 0, variance 1."""
    s = (h & _LOW16) + ((h >> np.uint64(16)) & _LOW16)
    s += ((h >> np.uint64(32)) & _LOW16) + (h >> np.uint64(48))
    # four uniforms on {0..65535}: mean 131070, variance 4 (2^32 - 1) / 12
    return (np.float32(s) - np.float32(131070.0)) * np.float32(1.0 / 37837.23)


@njit(inline="always", cache=True)
def _program(y: np.float32, n: np.float32, row: int, bank, xi: np.float32) -> np.float32:
    """``n`` pulses (sign of the bank row's direction) on a device at ``y``; clipped to bounds."""
    rate = bank[row, RATE]
    f = y if rate == 0 else np.exp(rate * y)  # linear, or exponential step
    out = y + n * (bank[row, 0] + bank[row, 1] * f)
    out += xi * bank[row, NOISE] * np.sqrt(abs(n))
    lo, hi = bank[row, LO], bank[row, HI]
    return min(max(out, lo), hi)


_CHUNKS = 64  # rows are handed to threads in this many blocks (scratch buffers per block)


@njit(inline="always", cache=True)
def program_device(f, n, h, mode, rec, c1, bank, scale, w, noisy, endurance) -> int:
    """Fire a whole signed count ``n`` into the device(s) of weight ``f`` and write its weight;
    ``h``: the device's hash for this update (its write noise is drawn from ``_mix(h)``, device
    1's from ``_mix(h ^ _MIX2)``). Returns the pulses fired."""
    pulses = int(abs(n))
    d1 = n < 0 if mode == ONE_SIDED else False
    n0 = -n if d1 else n
    xi = _normal(_mix(h)) if noisy else np.float32(0.0)
    rc = rec[f]
    if d1:  # one-sided depression: potentiate device 1 instead
        rc.y1 = _program(rc.y1, n0, rc.m1 + 1, bank, xi)
        c1[f] += pulses
        if c1[f] >= endurance:
            rc.m1 = FROZEN
    else:
        rc.y0 = _program(rc.y0, n0, rc.m0 + (1 if n0 > 0 else 0), bank, xi)
        rc.c0 += pulses
        if rc.c0 >= endurance:
            rc.m0 = FROZEN
        if mode == BIDIRECTIONAL:
            xi1 = _normal(_mix(h ^ _MIX2)) if noisy else np.float32(0.0)
            rc.y1 = _program(rc.y1, -n, rc.m1 + (0 if n > 0 else 1), bank, xi1)
            c1[f] += pulses
            if c1[f] >= endurance:
                rc.m1 = FROZEN
            pulses *= 2
    w[f] = scale * (rc.y0 - rc.y1)
    return pulses


@njit(inline="always", cache=True)
def _program_row(
    x, base, key, stochastic, mode, rec, c1, bank, scale, w, noisy, endurance, at, cnt, hs, acc
):
    """Round one row's desired pulses ``x`` and program its pulsed devices (flat ``base + c``).

    at, cnt, hs: scratch of the row's length (hs: the rounding's hash of each device). acc:
    empty, or a (numel,) float32 digital accumulator (in pulses): then ``acc += x`` and the
    whole pulses ``trunc(acc)`` are fired and taken off ``acc`` (mixed-precision transfer).
    Returns the pulses issued in the row.
    """
    cols = x.shape[0]
    k = 0
    accumulate = acc.shape[0] > 0
    # counts first, in branch-free loops the compiler vectorises; then compacted
    if accumulate:
        for c in range(cols):
            v = acc[base + c] + x[c]
            n = np.float32(np.trunc(v))
            acc[base + c] = v - n
            cnt[c] = n
    elif stochastic:
        for c in range(cols):
            h = _hash(key, base + c)
            hs[c] = h
            cnt[c] = np.floor(x[c] + _uniform24(h))
    else:
        for c in range(cols):
            cnt[c] = np.floor(x[c] + np.float32(0.5))
    for c in range(cols):  # cnt[k] is written at k <= c, after cnt[c] was read
        n = cnt[c]
        at[k] = base + c
        cnt[k] = n
        hs[k] = hs[c]
        k += n != 0
    total = 0
    for j in range(k):  # program the pulsed devices
        f = at[j]
        h = (hs[j] if stochastic and not accumulate else _hash(key, f)) ^ _MIX1
        total += program_device(f, cnt[j], h, mode, rec, c1, bank, scale, w, noisy, endurance)
    return total


_ARGS_DOC = """rec: records of all weights (flat, :data:`RECORD`); c1: (numel,) int32 pulses of
    device 1; bank: (rows, 8) float32 device models; scale: weight per unit of y0 - y1 (a
    weight of one device keeps y1 = 0); w: (numel,) float32 weights, written back for pulsed
    devices; pulses: (rows,) int64 output, pulses issued per row. ``mode``: ONE_DEVICE
    (device 0 gets n), BIDIRECTIONAL (device 0 gets n, device 1 gets -n), ONE_SIDED (device
    0 gets n > 0, device 1 gets -n > 0 as potentiation). A device whose count reaches
    ``endurance`` is frozen. acc: empty (round ``x``), or a (numel,) float32 digital
    accumulator in pulses (fire ``trunc(acc + x)``, keep the rest)."""


@njit(parallel=True, cache=True)
def apply_dense(
    x, key, stochastic, mode, rec, c1, bank, scale, w, noisy, endurance, pulses, acc
) -> None:
    """Program desired pulses ``x`` (rows, cols) float32 into the devices, in place."""
    rows, cols = x.shape
    size = (rows + _CHUNKS - 1) // _CHUNKS
    for ch in prange(_CHUNKS):
        at, cnt = np.empty(cols, np.int64), np.empty(cols, np.float32)
        hs = np.empty(cols, np.uint64)
        for r in range(ch * size, min(rows, (ch + 1) * size)):
            pulses[r] = _program_row(
                x[r], r * cols, key, stochastic, mode, rec, c1, bank, scale, w, noisy,
                endurance, at, cnt, hs, acc,
            )  # fmt: skip


@njit(parallel=True, cache=True)
def apply_outer(
    left, right, key, stochastic, mode, rec, c1, bank, scale, w, noisy, endurance, pulses, acc
) -> None:
    """Program desired pulses ``leftᵀ right`` into the devices, in place, row by row.

    left: (rank, rows), right: (rank, cols) float32; a row whose ``left`` column is all
    zero gets no pulses and is skipped.
    """
    rank, rows = left.shape
    cols = right.shape[1]
    size = (rows + _CHUNKS - 1) // _CHUNKS
    for ch in prange(_CHUNKS):
        x = np.empty(cols, np.float32)
        at, cnt = np.empty(cols, np.int64), np.empty(cols, np.float32)
        hs = np.empty(cols, np.uint64)
        for r in range(ch * size, min(rows, (ch + 1) * size)):
            active = False
            for q in range(rank):
                active |= left[q, r] != 0
            pulses[r] = 0
            if active:  # an inactive row costs a scan of its ``left`` column only
                x[:] = 0.0
                for q in range(rank):
                    a = left[q, r]
                    if a != 0:
                        for c in range(cols):
                            x[c] += a * right[q, c]
                pulses[r] = _program_row(
                    x, r * cols, key, stochastic, mode, rec, c1, bank, scale, w, noisy,
                    endurance, at, cnt, hs, acc,
                )  # fmt: skip


apply_dense.__doc__ += "\n\n    " + _ARGS_DOC
apply_outer.__doc__ += "\n\n    " + _ARGS_DOC


def set_threads(n: int) -> None:
    """Use ``n`` threads in the kernel (capped at numba's pool size)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def on_torch_threads(method: F) -> F:
    """Run ``method``'s kernels on torch's thread count, and keep that count: numba's OpenMP
    pool, started by its first parallel call, shares torch's runtime and resets torch's count
    to the pool size (a 1-thread default beside a busy neighbour would silently become 2)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        set_threads(threads)
        try:
            return method(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]


@njit(parallel=True, cache=True)
def refresh_pairs(
    key, mode, level, step0, rec, c1, bank, scale, w, noisy, endurance, chunk_pairs, chunk_pulses
) -> None:
    """Re-program saturated, healthy pairs to the same weight with headroom, in place.

    Saturated: ONE_SIDED, either device above ``level`` of its window; BIDIRECTIONAL, both
    above ``level`` or both below 1 - level; ONE_DEVICE (a programmed device and a fixed
    reference), the programmed device beyond either level while centring the pair gives it
    headroom. New states: ONE_SIDED, both devices RESET to their floor (1 pulse each) and SET
    to ``base + max(±d, 0)`` (base: the higher floor, d = y0 - y1); otherwise both moved to
    ``mid ± d / 2`` around the middle of the common window (ceil(|move| / step0) pulses each).
    Each target gets one step's write noise. chunk_pairs, chunk_pulses: (chunks,) int64
    outputs, pairs refreshed and pulses spent per chunk of the records.
    """
    n = rec.shape[0]
    chunks = chunk_pairs.shape[0]
    size = (n + chunks - 1) // chunks
    for ch in prange(chunks):
        pairs, spent = 0, 0
        for f in range(ch * size, min(n, (ch + 1) * size)):
            rc = rec[f]
            if rc.m0 == FROZEN or rc.m1 == FROZEN:
                continue
            r0, r1 = rc.m0 + 1, rc.m1 + 1
            lo0, hi0, lo1, hi1 = bank[r0, LO], bank[r0, HI], bank[r1, LO], bank[r1, HI]
            u0, u1 = (rc.y0 - lo0) / (hi0 - lo0), (rc.y1 - lo1) / (hi1 - lo1)
            d = rc.y0 - rc.y1
            if mode == ONE_SIDED:
                hit = u0 >= level or u1 >= level
            elif mode == BIDIRECTIONAL:
                hit = (u0 >= level and u1 >= level) or (u0 <= 1 - level and u1 <= 1 - level)
            else:
                hit = (u0 >= level or u0 <= 1 - level) and abs(d) < (2 * level - 1) * (hi0 - lo0)
            if not hit:
                continue
            if mode == ONE_SIDED:
                base = max(lo0, lo1)
                t0, t1 = base + max(d, 0), base + max(-d, 0)
                e0 = 1 + int(np.ceil(max(t0 - lo0, 0) / step0))
                e1 = 1 + int(np.ceil(max(t1 - lo1, 0) / step0))
            else:
                mid = 0.5 * (max(lo0, lo1) + min(hi0, hi1))
                t0, t1 = mid + 0.5 * d, mid - 0.5 * d
                e0 = int(np.ceil(abs(t0 - rc.y0) / step0))
                e1 = int(np.ceil(abs(t1 - rc.y1) / step0))
            if noisy:
                h = _hash(key, f)
                t0 += _normal(_mix(h)) * bank[r0, NOISE]
                t1 += _normal(_mix(h ^ _MIX2)) * bank[r1, NOISE]
            rc.y0, rc.y1 = min(max(t0, lo0), hi0), min(max(t1, lo1), hi1)
            rc.c0 += e0
            c1[f] += e1
            if rc.c0 >= endurance:
                rc.m0 = FROZEN
            if c1[f] >= endurance:
                rc.m1 = FROZEN
            w[f] = scale * (rc.y0 - rc.y1)
            pairs += 1
            spent += e0 + e1
        chunk_pairs[ch] = pairs
        chunk_pulses[ch] = spent
