"""Fused converter kernels of analog inference (numba, one thread: on a shared machine a second
thread pool beside torch's spins against it, so the matmuls keep the cores).

One pass each instead of a chain of tensor operations: :func:`dac_codes` rounds inputs to DAC
codes; :func:`adc_accumulate` adds output noise to every array's partial sums (in ADC LSBs),
takes the nearest level of a symmetric range (``floor + 1/2``), scales by the LSB and the
array's drift-compensation factor, and adds the row blocks' partial sums and the bias — the
same arithmetic as the tensor path of :mod:`npusim.deploy.layers`. Off the CPU (``--device
cuda``) both are the equivalent tensor operations on the inputs' device (the same numbers up
to float32 rounding order). :func:`normal_bank` holds the output noise's standard normals.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

_BANK_SIZE = 1 << 23
_BANK: dict[torch.device, Tensor] = {}


def normal_bank(device: torch.device | str = "cpu") -> Tensor:
    """The bank of 2²³ standard normals of output noise (drawn once on the CPU from a fixed
    seed; a copy per device)."""
    device = torch.device(device)
    if device not in _BANK:
        cpu = torch.device("cpu")
        if cpu not in _BANK:
            _BANK[cpu] = torch.randn(_BANK_SIZE, generator=torch.Generator().manual_seed(0x0B5E))
        _BANK[device] = _BANK[cpu].to(device)
    return _BANK[device]


def quantize(x: Tensor, bits: int, lo: float, hi: float, ste: bool) -> Tensor:
    """Clip to [lo, hi] and round to 2**bits levels (``bits`` 0: unchanged); with ``ste`` the
    gradient passes straight through (hardware-aware training)."""
    if bits <= 0:
        return x
    lsb = (hi - lo) / (2**bits - 1)
    if ste:
        q = torch.round((x.detach().clamp(lo, hi) - lo) / lsb) * lsb + lo
        return x + (q - x.detach())
    return torch.clamp(x, lo, hi).sub_(lo).div_(lsb).round_().mul_(lsb).add_(lo)


@njit(cache=True, fastmath=True)
def _dac(x: np.ndarray, inv_lsb: float, top: float, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.float32(round(x[i, j] * inv_lsb))
            out[i, j] = min(max(v, np.float32(0.0)), np.float32(top))


@njit(cache=True, fastmath=True)
def _adc(
    y: np.ndarray,
    bank: np.ndarray,
    start: int,
    sd: float,
    lo: float,
    hi: float,
    scale: np.ndarray,
    offset: np.ndarray,
    out: np.ndarray,
) -> None:
    b_n, r_n, p_n, q_n = y.shape
    ps, qs = scale.shape[1] > 1, scale.shape[2] > 1
    sd32, lo32, hi32 = np.float32(sd), np.float32(lo), np.float32(hi)
    for b in range(b_n):
        for p in range(p_n):
            sp = p if ps else 0
            row = out[b, p]
            for r in range(r_n):
                src = y[b, r, p]
                noise = bank[start + ((b * r_n + r) * p_n + p) * q_n :]
                sc_row, of_row = scale[r, sp], offset[r, sp]
                for q in range(q_n):
                    sq = q if qs else 0
                    v = src[q] + sd32 * noise[q]
                    v = min(max(np.floor(v), lo32), hi32) * sc_row[sq] + of_row[sq]
                    row[q] = v if r == 0 else row[q] + v


def dac_codes(x: Tensor, inv_lsb: float, bits: int, fused: bool | None = None) -> Tensor:
    """``clamp(round(x / lsb), 0, 2**bits − 1)`` (float32), one fused pass (``fused``: the
    numba kernel; default on the CPU only, else tensor operations)."""
    if not (x.device.type == "cpu" if fused is None else fused):
        return torch.round(x.detach() * inv_lsb).clamp_(0.0, float(2**bits - 1))
    x2 = x.detach().contiguous().reshape(x.shape[0], -1)
    out = torch.empty_like(x2)
    _dac(x2.numpy(), float(inv_lsb), float(2**bits - 1), out.numpy())
    return out.view(x.shape)


def adc_accumulate(
    y: Tensor,
    bits: int,
    sd: float,
    bank: Tensor,
    start: int,
    scale: Tensor,
    offset: Tensor,
    fused: bool | None = None,
) -> Tensor:
    """Partial sums ``y`` (B, R, P, Q) in ADC LSBs -> Σ_r (level(y + sd·noise) · scale +
    offset), shape (B, P, Q). ``scale``/``offset`` (R, 1 or P, 1 or Q); ``bank[start:]`` the
    standard normals, consumed in ``y``'s memory order; ``bits`` > 0. ``fused``: the numba
    kernel (default on the CPU only; else tensor operations on ``y``'s device)."""
    if bits <= 0:
        raise ValueError("adc_accumulate needs an ADC (bits > 0)")
    y = y.detach().contiguous()
    b, _, p, q = y.shape
    half = 2.0 ** (bits - 1)
    lo, hi = -half, half - 1
    if not (y.device.type == "cpu" if fused is None else fused):  # as tensor operations
        if sd > 0:
            y = y + sd * bank[start : start + y.numel()].view(y.shape)
        return torch.addcmul(offset, y.floor().clamp_(lo, hi), scale).sum(1)
    out = torch.empty(b, p, q, dtype=y.dtype)
    _adc(
        y.numpy(),
        bank.numpy(),
        int(start),
        float(sd),
        lo,
        hi,
        scale.detach().float().contiguous().numpy(),
        offset.detach().float().contiguous().numpy(),
        out.numpy(),
    )
    return out
