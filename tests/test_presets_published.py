"""The published-parameter presets reproduce their sources' pulse responses.

Each preset's nominal device (device-to-device spreads off) is compared with the closed-form
step size versus conductance of the aihwkit device model it cites, as a fraction of the
conductance window, at 49 states across the window:

* ``rram-gong2018``: aihwkit SoftBounds (ReRamSBPresetDevice), w in [-0.75, 1.25], dw_min
  0.002: up dw_min (1 - w / w_max), down dw_min (1 - w / w_min).
* ``rram-es``: aihwkit ExpStep (ReRamESPresetDevice), w in [-1, 1], dw_min 0.00135, up_down
  0.259359, gamma 5, a = b = -0.5, A_up -1.18445, A_down -0.081404.
* ``pcm-nandakumar``: aihwkit ExpStep (PCMPresetDevice), w in [0, 2], dw_min 0.01, SET
  only, gamma 2.5, a = -1, b = 0, A_up -27.235.
* ``ecram-tang2018``: aihwkit LinearStep (EcRamPresetDevice), w in [-0.8276, 1.1724],
  dw_min 0.002, gamma_up 0.1153, gamma_down 0.5085.

Stated tolerance: 1% relative, except pcm-nandakumar, 4% (its pulse count is an integer,
14 for the fit's 13.6).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from npusim.chip import ChipSpec, load_chip
from npusim.devices import DeviceSynapses, pulsed

OFF = {
    "device.d2d_step": 0.0,
    "device.d2d_bounds": 0.0,
    "device.d2d_asymmetry": 0.0,
    "device.d2d_nonlinearity": 0.0,
    "device.d2d_write_noise": 0.0,
    "device.write_noise": 0.0,
    "device.stuck_min_fraction": 0.0,
    "device.stuck_max_fraction": 0.0,
}
U = torch.linspace(0.02, 0.98, 49)


def _sb(u: Tensor) -> tuple[Tensor, Tensor]:
    w, dw = -0.75 + 2 * u, 0.002
    return dw * (1 - w / 1.25) / 2, dw * (1 - w / -0.75) / 2


def _es(u: Tensor) -> tuple[Tensor, Tensor]:
    w, dw, b = -1 + 2 * u, 0.00135, 0.259359
    z = 2 * -0.5 * w / 2 - 0.5
    up = dw * (1 + b) * (1 + 1.18445 * torch.exp(5 * z))
    down = dw * (1 - b) * (1 + 0.081404 * torch.exp(-5 * z))
    return up / 2, down / 2


def _pcm(u: Tensor) -> tuple[Tensor, None]:
    w = 2 * u
    z = 2 * -1.0 * w / 2
    return 0.01 * (1 + 27.235 * torch.exp(2.5 * z)) / 2, None


def _ecram(u: Tensor) -> tuple[Tensor, Tensor]:
    w_min, w_max, dw = -0.8276, 1.1724, 0.002
    w = w_min + 2 * u
    return dw * (1 - 0.1153 * w / w_max) / 2, dw * (1 - 0.5085 * w / w_min) / 2


SOURCES = {
    "rram-gong2018": (_sb, 0.01),
    "rram-es": (_es, 0.01),
    "pcm-nandakumar": (_pcm, 0.04),
    "ecram-tang2018": (_ecram, 0.01),
}


def _nominal(name: str) -> ChipSpec:
    return load_chip(name).replace(**OFF)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_step_size_versus_conductance_matches_the_source(name: str) -> None:
    spec = _nominal(name)
    bank = pulsed.sample_bank(spec.device, 4, torch.Generator().manual_seed(0))
    lo, hi = float(bank[1, 1, pulsed.LO]), float(bank[1, 1, pulsed.HI])
    y = lo + U * (hi - lo)
    up = pulsed.step_size(bank[1, 1].expand(len(U), 8), y) / (hi - lo)
    down = pulsed.step_size(bank[1, 0].expand(len(U), 8), y) / (hi - lo)
    want_up, want_down = SOURCES[name][0](U)
    tol = SOURCES[name][1]
    assert torch.allclose(up, want_up, rtol=tol, atol=0), (up / want_up).tolist()
    if want_down is not None:
        assert torch.allclose(down, want_down, rtol=tol, atol=0), (down / want_down).tolist()


@pytest.mark.parametrize("name", ["rram-es", "pcm-nandakumar"])
def test_the_kernel_fires_the_exponential_step(name: str) -> None:
    """One programmed pulse moves a device by the closed-form step at its state."""
    spec = _nominal(name).replace(**{"device.refresh": False, "device.rounding": "deterministic"})
    w = torch.linspace(-0.5, 0.5, 64).reshape(8, 8)
    syn = DeviceSynapses(spec.device, [w], [True], seed=0)
    y0 = syn.y[0].clone()
    syn.program(0, torch.ones(8, 8))
    dy = (syn.y[0] - y0)[:, 0]
    rows = syn._rows(syn.model[0][:, :1], 1)[:, 0]
    want = pulsed.step_size(rows, y0[:, 0]).clamp(max=(rows[:, pulsed.HI] - y0[:, 0]))
    assert torch.allclose(dy, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name, u_sym", [("rram-gong2018", 0.375), ("ecram-tang2018", 0.4138)])
def test_weight_zero_sits_at_the_symmetry_point(name: str, u_sym: float) -> None:
    """The reference device is the programmed device's symmetry point: aihwkit's w = 0."""
    spec = _nominal(name)
    syn = DeviceSynapses(spec.device, [torch.zeros(4, 4)], [True], seed=0)
    lo, hi = spec.device.g_min / spec.device.g_max, 1.0
    u = (syn.y[0] - lo) / (hi - lo)
    assert torch.allclose(u, torch.full_like(u, u_sym), atol=2e-3)


def test_published_presets_cite_every_device_key() -> None:
    for name in SOURCES:
        dev = load_chip(name).device
        assert "aihwkit" in dev.sources["n_states"]
        assert not math.isnan(dev.n_states)
