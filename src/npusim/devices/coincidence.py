"""In-array updates: stochastic pulse trains whose coincidences program the devices.

The resistive processing unit (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016) updates a
crossbar without forming the outer product anywhere: each row ``i`` fires a pulse in each of
``BL`` time slots with probability ``p_i`` and each column ``j`` with probability ``q_j``; a
device sees a programming pulse only when its row and column pulse in the same slot (a
coincidence), so it receives a Binomial(BL, p_i·q_j) number of pulses, whose mean is
``BL·p_i·q_j`` and variance ``BL·p_i·q_j·(1 − p_i·q_j)``. The pulse's sign is the product of the
row's and column's polarities.

For a desired update ``Δw_ij = η·a_i·b_j`` on devices whose pulse moves a weight by ``Δw``, the
gains follow Gokmen & Vlasov's update management (the row and column trains share the
probability range): with peaks ``m_a = max|a|``, ``m_b = max|b|`` and ``G = η·m_a·m_b/(BL·Δw)``,
each coincidence fires ``k = max(1, ⌈G⌉)`` pulses and ``p_i = c·|a_i|/m_a``,
``q_j = c·|b_j|/m_b`` with ``c = √(G/k)`` (≤ 1), so the expected change is exactly
``k·Δw·BL·p_i·q_j = η·a_i·b_j``. ``k > 1`` only where the learning rate asks for more than BL
device steps per device and sample; a coincidence then lasts ``k`` pulse widths.

For a resistive network (Kendall et al., arXiv:2006.01981, 2020) each device holds its own
desired change (from the voltages across it in the two nudged phases) and converts it to
pulses locally over the same ``BL`` slots: Binomial(BL, |v|/BL) pulses of the sign of ``v``
for a desired ``v`` pulses (at most ``BL``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from npusim.devices.kernel import _MIX1, _hash, program_device, stream_key

DEFAULT_PULSE_TRAIN = 10  # slots per train: BL = 10 (Gokmen & Vlasov, Front. Neurosci. 10:333,
# 2016, Sec. "Results" and Fig. 2: BL = 10 trains reach the floating-point baseline on MNIST)


@dataclass
class Trains:
    """Pulse trains of one outer-product update, ``samples`` applied one after another.

    ``rows``: (samples, BL, n_in) in {−1, 0, 1}, a row's pulse (with its polarity) per slot;
    ``cols``: (samples, BL, n_out) in {−k, 0, k}, a column's pulse times its polarity and the
    pulses per coincidence ``k`` of that sample; ``per_coincidence``: (samples,) ``k``.
    ``rows[s]ᵀ @ cols[s]`` is sample ``s``'s signed pulse count per device.
    """

    rows: Tensor
    cols: Tensor
    per_coincidence: Tensor

    @property
    def slots(self) -> int:
        """Line-slots driven: BL × (rows + columns) per sample."""
        s, bl, n_in = self.rows.shape
        return s * bl * (n_in + self.cols.shape[2])

    @property
    def slot_cycles(self) -> int:
        """Time of the trains in pulse widths: BL × k per sample (samples in sequence)."""
        return int(self.rows.shape[1] * self.per_coincidence.sum())

    def coincidences(self) -> tuple[int, int]:
        """(coincidences, device pulses): Σ over samples and slots of fired rows × fired
        columns, and the same weighted by the pulses per coincidence."""
        r = self.rows.abs().sum(2)
        c = (self.cols != 0).sum(2).to(r.dtype)
        per_sample = (r * c).sum(1)
        return int(per_sample.sum()), int((per_sample * self.per_coincidence).sum())


def pulse_trains(
    a: Tensor, b: Tensor, eta: float, unit: float, bl: int, g: np.random.Generator
) -> Trains:
    """Stochastic trains for ``Δw = η·a_sᵀ b_s`` per sample ``s`` on devices of step ``unit``.

    ``a``: (samples, n_in) row values; ``b``: (samples, n_out) column values (held analog
    values; any units, η converts them); ``eta``: weight change per unit of ``a·b``;
    ``unit``: weight change of one device pulse; ``bl``: slots per train (see the module
    docstring for the gains). A sample whose ``a`` or ``b`` is all zero fires nothing.
    """
    if bl < 1:
        raise ValueError(f"a pulse train needs at least 1 slot, got {bl}")
    if not (unit > 0 and math.isfinite(unit)):
        raise ValueError(f"the pulse unit must be a finite number > 0, got {unit}")
    a = a.to(torch.float32)
    b = b.to(torch.float32)
    ma = a.abs().amax(1)
    mb = b.abs().amax(1)
    gain = abs(eta) * ma * mb / (bl * unit)
    k = gain.ceil().clamp(min=1.0)
    c = (gain / k).sqrt()
    p = a.abs() * (c / ma.clamp(min=1e-30))[:, None]
    q = b.abs() * (c / mb.clamp(min=1e-30))[:, None]
    n, n_in, n_out = a.shape[0], a.shape[1], b.shape[1]
    u = torch.from_numpy(g.random((n, bl, n_in + n_out), dtype=np.float32))
    rows = (u[:, :, :n_in] < p[:, None, :]).to(torch.float32)
    cols = (u[:, :, n_in:] < q[:, None, :]).to(torch.float32)
    rows.mul_(torch.sign(a)[:, None, :])
    cols.mul_((torch.sign(b) * math.copysign(1.0, eta) * k[:, None])[:, None, :])
    return Trains(rows, cols, torch.where(gain > 0, k, torch.zeros_like(k)))


def local_pulses(v: Tensor, bl: int, g: np.random.Generator) -> Tensor:
    """Signed pulse counts for desired ``v`` pulses per device, converted locally over ``bl``
    slots: Binomial(bl, min(|v|/bl, 1)) with the sign of ``v`` (mean ``v`` while |v| ≤ bl),
    drawn by inverting the binomial distribution with one uniform per device."""
    if bl < 1:
        raise ValueError(f"a pulse train needs at least 1 slot, got {bl}")
    p = (v.abs().to(torch.float32) / bl).clamp_(max=1.0)
    u = torch.from_numpy(g.random(tuple(v.shape), dtype=np.float32))
    q = 1.0 - p
    ratio = p / q.clamp(min=1e-30)
    pmf = q.pow(bl)
    cdf = pmf.clone()
    n = torch.zeros_like(p)
    for k in range(bl):  # n = #{k < bl : u > cdf(k)}
        n += u > cdf
        pmf.mul_(ratio * ((bl - k) / (k + 1)))
        cdf += pmf
    n = torch.where(p >= 1.0, torch.full_like(n, float(bl)), n)
    return n.mul_(torch.sign(v))


_KERNEL_ARGS = """seed: the stream seed; first: the program counter of sample 0 (sample s uses
    the stream of program ``first + s`` of tensor ``tensor``); mode, rec, c1, bank, scale, w,
    noisy, endurance as :func:`npusim.devices.kernel.apply_dense`. One call programs a whole
    batch, samples in order on every device. Returns the pulses fired."""


@njit(inline="always", cache=True)
def _program_device(f, n, key, mode, rec, c1, bank, scale, w, noisy, endurance) -> int:
    """Fire a whole signed count ``n`` into the device(s) of weight ``f``, with the same
    physics and write-noise stream as :mod:`npusim.devices.kernel`; returns pulses fired."""
    h = _hash(key, f) ^ _MIX1
    return program_device(f, n, h, mode, rec, c1, bank, scale, w, noisy, endurance)


_CHUNKS = 64  # rows are handed to threads in this many blocks (scratch buffers per block)


@njit(parallel=True, cache=True)
def apply_trains(
    rows, cols, seed, first, tensor, mode, rec, c1, bank, scale, w, noisy, endurance
) -> int:
    """Program sample after sample the coincidence counts ``rows[s]ᵀ cols[s]`` (rows: (S, BL,
    n_in), cols: (S, BL, n_out) float32) into the devices. Per sample and slot the fired
    columns are listed once; a row that fires sums its coincidences over the slots and
    programs only the devices they touched. Rows are independent devices, so they run in
    parallel, each taking the samples in order."""
    n_s, bl, n_in = rows.shape
    n_out = cols.shape[2]
    fired = np.empty((n_s, bl, n_out), np.int64)
    n_fired = np.zeros((n_s, bl), np.int64)
    keys = np.empty(n_s, np.uint64)
    for s in range(n_s):
        keys[s] = stream_key(seed, first + s, tensor)
        for q in range(bl):
            m = 0
            for c in range(n_out):
                if cols[s, q, c] != 0:
                    fired[s, q, m] = c
                    m += 1
            n_fired[s, q] = m
    size = (n_in + _CHUNKS - 1) // _CHUNKS
    per_chunk = np.zeros(_CHUNKS, np.int64)
    for ch in prange(_CHUNKS):
        x = np.zeros(n_out, np.float32)
        stamp = np.zeros(n_out, np.int64)
        touched = np.empty(n_out, np.int64)
        done = 0
        for r in range(ch * size, min(n_in, (ch + 1) * size)):
            for s in range(n_s):
                row_id = r * n_s + s + 1
                t = 0
                for q in range(bl):
                    a = rows[s, q, r]
                    if a == 0:
                        continue
                    for m in range(n_fired[s, q]):
                        c = fired[s, q, m]
                        if stamp[c] != row_id:
                            stamp[c] = row_id
                            x[c] = 0.0
                            touched[t] = c
                            t += 1
                        x[c] += a * cols[s, q, c]
                for j in range(t):
                    c = touched[j]
                    if x[c] != 0:
                        done += _program_device(
                            r * n_out + c, x[c], keys[s], mode, rec, c1, bank, scale, w, noisy,
                            endurance,
                        )  # fmt: skip
        per_chunk[ch] = done
    return per_chunk.sum()


@njit(parallel=True, cache=True)
def apply_counts(
    counts, seed, first, tensor, mode, rec, c1, bank, scale, w, noisy, endurance
) -> int:
    """Program sample after sample whole pulse counts ``counts[s]`` ((S, n_in, n_out)
    float32) into the devices (rows in parallel, each taking the samples in order)."""
    n_s, n_in, n_out = counts.shape
    keys = np.empty(n_s, np.uint64)
    for s in range(n_s):
        keys[s] = stream_key(seed, first + s, tensor)
    size = (n_in + _CHUNKS - 1) // _CHUNKS
    per_chunk = np.zeros(_CHUNKS, np.int64)
    for ch in prange(_CHUNKS):
        done = 0
        for r in range(ch * size, min(n_in, (ch + 1) * size)):
            for s in range(n_s):
                for c in range(n_out):
                    n = counts[s, r, c]
                    if n != 0:
                        done += _program_device(
                            r * n_out + c, n, keys[s], mode, rec, c1, bank, scale, w, noisy,
                            endurance,
                        )  # fmt: skip
        per_chunk[ch] = done
    return per_chunk.sum()


apply_trains.__doc__ += "\n\n    " + _KERNEL_ARGS
apply_counts.__doc__ += "\n\n    " + _KERNEL_ARGS
