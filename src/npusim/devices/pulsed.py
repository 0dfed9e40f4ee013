"""Pulsed memristive device physics, as pure functions over tensors of devices.

Conductance is normalised by the nominal g_max: y = G / g_max, nominal range
[r, 1] with r = g_min / g_max. A device with bounds [lo, hi], step sizes
(up, dn) and nonlinearities (nlu, nld) moves by one pulse as
(u = (y - lo) / (hi - lo)):

    up:    dy = +up * (1 + nlu * (1 - 2u))
    down:  dy = -dn * (1 + nld * (2u - 1))

so nl = 0 is a linear device (hard bounds) and nl = 1 the soft-bounds model
(the step vanishes at the bound it moves towards). With ``nonlinearity_exponent`` r > 0
the factor (1 - 2u) becomes g_r(u) = (2 e^(-r u) - 1 - e^(-r)) / (1 - e^(-r)) (down:
g_r(1 - u)), an exponential step (aihwkit's ExpStepDevice) with the same values at the
bounds. :mod:`npusim.devices.kernel` applies these steps to whole arrays. A device model
per direction is three numbers: dy = n * (a + b * f(y)) for n pulses of one sign (first
order in the step), f(y) = y when the rate c is 0 and exp(c y) otherwise. Cycle-to-cycle noise adds
``noise * sqrt(|n|) * xi`` (independent per pulse, std ``noise``), and the
result is clipped to [lo, hi]. After programming G(t) = G(t0) (t/t0)^(-nu).

A chip's devices draw their parameters from a *bank* of sampled device models
(device-to-device variation): ``bank[m, dir]`` holds (a, b, noise, lo, hi, c)
for model m and direction dir (0 = down, 1 = up); each device stores only its
16-bit model index. Model 0 is a frozen device (stuck or worn out).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.chip.spec import DeviceSpec

A, B, NOISE, LO, HI, RATE = range(6)
FROZEN = 0
BANK_SIZE = 4096


def nominal_range(dev: DeviceSpec) -> tuple[float, float, float]:
    """(y_lo, y_hi, nominal step) in normalised conductance for a device spec."""
    r = dev.g_min / dev.g_max
    return r, 1.0, (1.0 - r) / dev.n_states


def _spread(shape: tuple[int, ...], rel_std: float, gen: torch.Generator) -> Tensor:
    """Multiplicative device-to-device factor 1 + rel_std * N(0,1), kept >= 0.05."""
    if rel_std == 0.0:
        return torch.ones(shape)
    return (1.0 + rel_std * torch.randn(shape, generator=gen)).clamp_(min=0.05)


def sample_bank(dev: DeviceSpec, size: int, gen: torch.Generator) -> Tensor:
    """Draw ``size`` device models (device-to-device variation); returns (size, 2, 8).

    Row 0 is the frozen model (no movement, bounds [0, inf)).
    """
    shape = (size,)
    y_lo, y_hi, step0 = nominal_range(dev)
    span = y_hi - y_lo
    lo = (y_lo + span * dev.d2d_bounds * torch.randn(shape, generator=gen)).clamp_(min=0.0)
    hi = y_hi + span * dev.d2d_bounds * torch.randn(shape, generator=gen)
    hi = torch.maximum(hi, lo + 4 * step0)
    step = step0 * _spread(shape, dev.d2d_step, gen)
    asym = dev.asymmetry * _spread(shape, dev.d2d_asymmetry, gen)
    up = step * 2 * asym / (1 + asym)
    dn = step * 2 / (1 + asym)
    nl_spread = _spread(shape, dev.d2d_nonlinearity, gen)
    nlu = (dev.nonlinearity_up * nl_spread).clamp_(0.0, 1.0)
    nld = (dev.nonlinearity_down * nl_spread).clamp_(0.0, 1.0)
    noise_rel = dev.write_noise * _spread(shape, dev.d2d_write_noise, gen)
    k = 2.0 / (hi - lo)
    bank = torch.zeros(size, 2, 8)
    r = dev.nonlinearity_exponent
    if r == 0.0:
        # down: dy = n (a + b y), n < 0; step magnitude dn (1 - nld + 2 nld (y - lo)/(hi - lo))
        bank[:, 0, A] = dn * (1 - nld) - dn * nld * k * lo
        bank[:, 0, B] = dn * nld * k
        # up: step magnitude up (1 + nlu - 2 nlu (y - lo)/(hi - lo))
        bank[:, 1, A] = up * (1 + nlu) + up * nlu * k * lo
        bank[:, 1, B] = -up * nlu * k
    else:  # exponential: (1 + nl g_r(u)) = 1 - nl K + nl 2 / (1 - e^-r) e^(-r u)
        er = math.exp(-r)
        kk, w = (1 + er) / (1 - er), hi - lo
        bank[:, 0, A] = dn * (1 - nld * kk)
        bank[:, 0, B] = dn * nld * 2 * er / (1 - er) * torch.exp(-r * lo / w)
        bank[:, 0, RATE] = r / w
        bank[:, 1, A] = up * (1 - nlu * kk)
        bank[:, 1, B] = up * nlu * 2 / (1 - er) * torch.exp(r * lo / w)
        bank[:, 1, RATE] = -r / w
    bank[:, 0, NOISE] = noise_rel * dn
    bank[:, 1, NOISE] = noise_rel * up
    bank[:, :, LO] = lo.unsqueeze(1)
    bank[:, :, HI] = hi.unsqueeze(1)
    bank[FROZEN] = 0.0
    bank[FROZEN, :, HI] = torch.finfo(torch.float32).max
    return bank


def step_size(bank_rows: Tensor, y: Tensor) -> Tensor:
    """Step magnitude a + b f(y) of one pulse (normalised conductance), for gathered (..., 8)
    rows of one direction (f(y) = y for a rate c of 0, else exp(c y))."""
    rate = bank_rows[..., RATE]
    f = torch.where(rate == 0, y, torch.exp(rate * y))
    return bank_rows[..., A] + bank_rows[..., B] * f


def symmetry_point(down: Tensor, up: Tensor, iters: int = 40) -> Tensor:
    """Conductance (normalised) where a device's up and down steps are equal, for gathered
    (..., 8) bank rows of its two directions, by bisection on [lo, hi]; a bound when the
    steps never cross (the device drifts to that bound under random pulses)."""
    lo, hi = down[..., LO].clone(), down[..., HI].clone()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        up_larger = step_size(up, mid) > step_size(down, mid)
        lo = torch.where(up_larger, mid, lo)
        hi = torch.where(up_larger, hi, mid)
    return 0.5 * (lo + hi)


def initial_state(
    dev: DeviceSpec, d: Tensor, up: Tensor, down0: Tensor, signed: bool, noise: Tensor | None
) -> Tensor:
    """Program-and-verify states (normalised conductance, (n, devices)) for weights ``d`` (n,)
    in units of the tensor's weight scale: one device holds ``d`` (unsigned); a pair holds it
    as ``y0 - y1`` placed by ``dev.scheme`` (one-sided: both from the higher floor; reference:
    device 1 at the middle of the common window, or at device 0's symmetry point; otherwise
    symmetric about the middle). ``up``: (n, devices, 8) bank rows of the up direction;
    ``down0``: (n, 8) device 0's down rows; ``noise``: (n, devices) unit variates of one
    step's write noise (residual error of the verify loop), or None. Clipped to the bounds."""
    lo, hi = up[..., LO], up[..., HI]
    if not signed:
        y = d.unsqueeze(1).clone()
    elif dev.scheme == "one_sided":
        base = torch.maximum(lo[:, 0], lo[:, 1])
        y = torch.stack([base + d.clamp(min=0), base + (-d).clamp(min=0)], 1)
    elif dev.scheme == "reference":
        mid = 0.5 * (torch.maximum(lo[:, 0], lo[:, 1]) + torch.minimum(hi[:, 0], hi[:, 1]))
        if dev.reference_point == "symmetry":  # weight 0 at the device's own symmetry point
            sym = symmetry_point(down0, up[:, 0])  # (zero-shifting)
            mid = torch.minimum(torch.maximum(sym, lo[:, 1]), hi[:, 1])
        y = torch.stack([mid + d, mid], 1)
    else:
        mid = 0.5 * (torch.maximum(lo[:, 0], lo[:, 1]) + torch.minimum(hi[:, 0], hi[:, 1]))
        y = torch.stack([mid + 0.5 * d, mid - 0.5 * d], 1)
    if noise is not None:
        y.addcmul_(noise, up[..., NOISE])
    return torch.minimum(torch.maximum(y, lo), hi)


def drift(y: Tensor, nu: Tensor, t: float, t0: float) -> Tensor:
    """G(t) = G0 * (t / t0)^(-nu) for t > t0; unchanged (a copy) for t <= t0."""
    if t <= t0:
        return y.clone()
    return y * torch.pow(torch.tensor(t / t0, dtype=y.dtype), -nu)


def sample_drift_nu(dev: DeviceSpec, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Per-device drift exponents nu ~ N(drift_nu, drift_nu_std), kept >= 0."""
    nu = dev.drift_nu + dev.drift_nu_std * torch.randn(shape, generator=gen)
    return nu.clamp_(min=0.0)
