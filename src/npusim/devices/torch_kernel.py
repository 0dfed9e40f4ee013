"""The programming kernel in pure torch: the same pulses on any torch device (e.g. CUDA).

A vectorised twin of :mod:`npusim.devices.kernel` (read its docstring for the model): every
weight's count is rounded at once, the pulsed weights are gathered, programmed and scattered
back. Random numbers are the numba kernel's counter-based ones, splitmix64 of
``key + flat_index * golden``, emulated on int64 tensors (a product wraps modulo 2^64 as in
uint64; a logical right shift is an arithmetic shift and a mask; constants above 2^63 are
their two's-complement int64 values). Arithmetic is float32 in the kernel's order; ``exp``
and ``sqrt`` are taken in float64 and rounded to float32 (the correctly rounded values, as
libm's ``expf`` and the CPU's ``sqrtss`` give; torch's float32 vector versions may be an ulp
off), so on CPU this kernel reproduces the numba kernel's pulse counts, device
states, pulse counters and weights exactly (``tests/test_torch_kernel.py``).

Records are the (numel, 4) int32 tensors of :class:`npusim.devices.synapses.DeviceSynapses`:
float32 ``y0, y1`` in columns 0-1, int16 ``m0, m1`` in column 2, int32 ``c0`` in column 3.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from npusim.devices.kernel import BIDIRECTIONAL, ONE_SIDED
from npusim.devices.pulsed import FROZEN, HI, LO, NOISE, RATE


def as_int64(c: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``c`` (0 <= c < 2^64)."""
    c = int(c)
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = as_int64(0x9E3779B97F4A7C15)
_MIX1 = as_int64(0xBF58476D1CE4E5B9)
_MIX2 = as_int64(0x94D049BB133111EB)
_NORMAL_SCALE = float(np.float32(1.0 / 37837.23))


def _srl(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 ``z`` by ``s`` bits (as uint64 ``z >> s``)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix(z: Tensor) -> Tensor:
    """splitmix64 finaliser on int64 tensors (bit-identical to ``kernel._mix`` on uint64)."""
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def hash_flat(key: int, flat: Tensor) -> Tensor:
    """``kernel._hash``: the hash of weights at flat indices ``flat`` (int64) under ``key``."""
    return mix(flat * _GOLDEN + as_int64(key))


def uniform24(h: Tensor) -> Tensor:
    """``kernel._uniform24``: (top 24 bits of ``h`` + 1/2) / 2^24, float32."""
    return (_srl(h, 40).to(torch.float32) + 0.5) * 2.0**-24


def normal(h: Tensor) -> Tensor:
    """``kernel._normal``: Irwin-Hall(4) of the four 16-bit words of ``h``, float32."""
    s = (h & 0xFFFF) + (_srl(h, 16) & 0xFFFF) + (_srl(h, 32) & 0xFFFF) + _srl(h, 48)
    return (s.to(torch.float32) - 131070.0) * _NORMAL_SCALE


def _program(y: Tensor, n: Tensor, rows: Tensor, bank: Tensor, xi: Tensor) -> Tensor:
    """``kernel._program`` for many devices: ``n`` pulses at states ``y`` (float32), bank
    rows ``rows`` (int64), write-noise variates ``xi``; clipped to the rows' bounds."""
    b = bank[rows]
    rate = b[:, RATE]
    e = torch.exp((rate * y).double()).to(torch.float32)
    f = torch.where(rate == 0, y, e)
    out = y + n * (b[:, 0] + b[:, 1] * f)
    out = out + xi * b[:, NOISE] * torch.sqrt(n.abs().double()).to(torch.float32)
    return torch.minimum(torch.maximum(out, b[:, LO]), b[:, HI])


def _counts(
    x: Tensor, key: int, stochastic: bool, acc: Tensor | None, live: Tensor | None
) -> Tensor:
    """Rounded counts (float32, flat) of desired pulses ``x`` (flat); with ``acc`` the whole
    pulses of ``acc + x`` (rows outside ``live``, a flat mask, keep their ``acc``)."""
    if acc is not None:
        v = acc + x
        n = torch.trunc(v)
        if live is not None:
            n = torch.where(live, n, 0.0)
            v = torch.where(live, v, acc)
        acc.copy_(v - n)
        return n
    if stochastic:
        flat = torch.arange(x.numel(), device=x.device)
        return torch.floor(x + uniform24(hash_flat(key, flat)))
    return torch.floor(x + 0.5)


def _fire(
    n: Tensor, f: Tensor, key: int, mode: int, rec: Tensor, c1: Tensor, bank: Tensor,
    scale: float, w: Tensor, noisy: bool, endurance: int, cols: int,
) -> Tensor:  # fmt: skip
    """Program whole counts ``n`` (float32) into the weights at flat indices ``f`` (int64);
    returns the pulses issued per row (int64). Device 1 is programmed only where the mode
    sends it pulses (ONE_DEVICE: never)."""
    rows = rec.shape[0] // max(cols, 1)
    pulses = torch.zeros(rows, dtype=torch.int64, device=rec.device)
    if f.numel() == 0:
        return pulses
    r = rec[f]
    yv, mv = r.view(torch.float32), r.view(torch.int16)
    y0, y1, c0, c1f = yv[:, 0], yv[:, 1], r[:, 3], c1[f]
    m0, m1 = mv[:, 4].long(), mv[:, 5].long()
    h = hash_flat(key, f) ^ _MIX1
    count = n.abs().long()
    d1 = n < 0 if mode == ONE_SIDED else torch.zeros_like(n, dtype=torch.bool)
    n0 = torch.where(d1, -n, n)
    xi = normal(mix(h)) if noisy else torch.zeros_like(n)
    new0 = _program(y0, n0, m0 + (n0 > 0).long(), bank, xi)
    if mode == ONE_SIDED:  # a depression potentiates device 1 instead
        on0, on1, n1, row1, xi1 = ~d1, d1, n0, m1 + 1, xi
    elif mode == BIDIRECTIONAL:
        xi1 = normal(mix(h ^ _MIX2)) if noisy else xi
        on0, on1, n1, row1 = torch.ones_like(d1), torch.ones_like(d1), -n, m1 + (n < 0).long()
    else:
        on0, on1, n1, row1, xi1 = ~d1, d1, n0, m1, xi
    new1 = _program(y1, n1, row1, bank, xi1) if mode in (ONE_SIDED, BIDIRECTIONAL) else y1
    c0n = torch.where(on0, c0.long() + count, c0.long()).to(torch.int32)
    c1n = torch.where(on1, c1f.long() + count, c1f.long()).to(torch.int32)
    y0n, y1n = torch.where(on0, new0, y0), torch.where(on1, new1, y1)
    mv[:, 4] = torch.where(on0 & (c0n >= endurance), FROZEN, mv[:, 4])
    mv[:, 5] = torch.where(on1 & (c1n >= endurance), FROZEN, mv[:, 5])
    yv[:, 0], yv[:, 1], r[:, 3] = y0n, y1n, c0n
    rec[f] = r
    c1[f] = c1n
    w[f] = torch.tensor(scale, dtype=torch.float32, device=w.device) * (y0n - y1n)
    fired = count * (on0.long() + on1.long())
    return pulses.index_add_(0, torch.div(f, cols, rounding_mode="floor"), fired)


def apply_dense(
    x: Tensor, key: int, stochastic: bool, mode: int, rec: Tensor, c1: Tensor, bank: Tensor,
    scale: float, w: Tensor, noisy: bool, endurance: int, acc: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Program desired pulses ``x`` (rows, cols) float32 into the devices, in place; returns
    the pulses issued per row (rows,) int64.

    key: the update's stream key (``kernel.stream_key``, uint64 as a Python int); rec:
    (numel, 4) int32 records; c1: (numel,) int32 pulses of device 1; bank: (bank rows, 8)
    float32 device models; scale: weight per unit of y0 - y1; w: (numel,) float32 weights,
    written back for pulsed devices; mode, endurance as ``kernel.apply_dense``; acc: None
    (round ``x``) or a (numel,) float32 digital accumulator in pulses (fire ``trunc(acc +
    x)``, keep the rest). All tensors on one torch device.
    """
    rows, cols = x.shape
    n = _counts(x.reshape(-1), key, stochastic, acc, None)
    f = torch.nonzero(n).squeeze(1)
    return _fire(n[f], f, key, mode, rec, c1, bank, scale, w, noisy, endurance, cols)


def apply_outer(
    left: Tensor, right: Tensor, key: int, stochastic: bool, mode: int, rec: Tensor,
    c1: Tensor, bank: Tensor, scale: float, w: Tensor, noisy: bool, endurance: int,
    acc: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Program desired pulses ``leftᵀ right`` (left (rank, rows), right (rank, cols) float32),
    as :func:`apply_dense`; a row whose ``left`` column is all zero is skipped. The product is
    summed over the rank in order, in float32, as the numba kernel does."""
    rows, cols = left.shape[1], right.shape[1]
    x = torch.zeros(rows, cols, dtype=torch.float32, device=left.device)
    for q in range(left.shape[0]):  # the rank (a batch), in the numba kernel's order
        x += left[q].unsqueeze(1) * right[q].unsqueeze(0)
    live = (left != 0).any(0)
    x = torch.where(live.unsqueeze(1), x, 0.0).reshape(-1)
    live_flat = live.unsqueeze(1).expand(rows, cols).reshape(-1)
    n = _counts(x, key, stochastic, acc, live_flat)
    n = torch.where(live_flat, n, 0.0)
    f = torch.nonzero(n).squeeze(1)
    return _fire(n[f], f, key, mode, rec, c1, bank, scale, w, noisy, endurance, cols)
