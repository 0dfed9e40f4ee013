"""Pulsed memristive device physics, as pure functions over tensors of devices.

Conductance is normalised by the nominal g_max: y = G / g_max, nominal range
[r, 1] with r = g_min / g_max. A device with bounds [lo, hi], step sizes
(up, dn) and nonlinearities (nlu, nld) moves by one pulse as
(u = (y - lo) / (hi - lo)):

    up:    dy = +up * (1 + nlu * (1 - 2u))
    down:  dy = -dn * (1 + nld * (2u - 1))

so nl = 0 is a linear device (hard bounds) and nl = 1 the soft-bounds model
(the step vanishes at the bound it moves towards). :mod:`npusim.devices.kernel` applies these
steps to whole arrays. Both are linear in y, so
a device model per direction is two numbers: dy = n * (a + b * y) for n
pulses of one sign (first order in the step). Cycle-to-cycle noise adds
``noise * sqrt(|n|) * xi`` (independent per pulse, std ``noise``), and the
result is clipped to [lo, hi]. After programming G(t) = G(t0) (t/t0)^(-nu).

A chip's devices draw their parameters from a *bank* of sampled device models
(device-to-device variation): ``bank[m, dir]`` holds (a, b, noise, lo, hi)
for model m and direction dir (0 = down, 1 = up); each device stores only its
16-bit model index. Model 0 is a frozen device (stuck or worn out).
"""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.chip.spec import DeviceSpec

A, B, NOISE, LO, HI = range(5)
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
    # down: dy = n * (a + b y) with n < 0; step magnitude dn (1 - nld + 2 nld (y - lo)/(hi - lo))
    bank[:, 0, A] = dn * (1 - nld) - dn * nld * k * lo
    bank[:, 0, B] = dn * nld * k
    bank[:, 0, NOISE] = noise_rel * dn
    # up: step magnitude up (1 + nlu - 2 nlu (y - lo)/(hi - lo))
    bank[:, 1, A] = up * (1 + nlu) + up * nlu * k * lo
    bank[:, 1, B] = -up * nlu * k
    bank[:, 1, NOISE] = noise_rel * up
    bank[:, :, LO] = lo.unsqueeze(1)
    bank[:, :, HI] = hi.unsqueeze(1)
    bank[FROZEN] = 0.0
    bank[FROZEN, :, HI] = torch.finfo(torch.float32).max
    return bank


def step_size(bank_rows: Tensor, y: Tensor) -> Tensor:
    """Step magnitude a + b * y of one pulse, for gathered (..., 8) rows of one direction."""
    return bank_rows[..., A] + bank_rows[..., B] * y


def drift(y: Tensor, nu: Tensor, t: float, t0: float) -> Tensor:
    """G(t) = G0 * (t / t0)^(-nu) for t > t0; unchanged (a copy) for t <= t0."""
    if t <= t0:
        return y.clone()
    return y * torch.pow(torch.tensor(t / t0, dtype=y.dtype), -nu)


def sample_drift_nu(dev: DeviceSpec, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Per-device drift exponents nu ~ N(drift_nu, drift_nu_std), kept >= 0."""
    nu = dev.drift_nu + dev.drift_nu_std * torch.randn(shape, generator=gen)
    return nu.clamp_(min=0.0)
