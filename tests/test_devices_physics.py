"""Each device non-ideality, checked statistically against its definition (seeds fixed)."""

from __future__ import annotations

import math

import pytest
import torch

from npusim.chip import ChipSpec
from npusim.devices import DeviceSynapses, pulsed, quantize

LINEAR = {  # an ideal-ish linear device; each test switches on one effect
    "device.n_states": 100,
    "device.g_min": "1 uS",
    "device.g_max": "101 uS",
    "device.rounding": "deterministic",
    "device.scheme": "bidirectional",
    "device.refresh": False,
}


def device(**changes):
    return ChipSpec().replace(**{**LINEAR, **{f"device.{k}": v for k, v in changes.items()}}).device


def single_devices(dev, n=40_000, w0=0.5, seed=0):
    """``n`` non-negative weights, one device each, all starting at w = w0 (normalised)."""
    p = torch.full((n // 200, 200), w0)
    syn = DeviceSynapses(dev, [p], [False], seed)
    return syn, p


def pulse(syn, p, pulses: float):
    """Ask for ``pulses`` nominal steps on every device (deterministic counts)."""
    syn.apply([p], [torch.full_like(p, pulses * syn.step0 * syn.scale[0])])


def steps(syn, before):
    """Change of each device's conductance, in nominal steps."""
    return (syn.y[0][:, 0] - before[:, 0]) / syn.step0


def test_write_noise_std_matches_definition():
    syn, p = single_devices(device(write_noise=0.5))
    before = syn.y[0].clone()
    pulse(syn, p, 1.0)
    d = steps(syn, before)
    assert d.mean().item() == pytest.approx(1.0, abs=0.01)
    assert d.std().item() == pytest.approx(0.5, rel=0.03)
    # n pulses in one update: noise grows as sqrt(n)
    before = syn.y[0].clone()
    pulse(syn, p, 4.0)
    assert steps(syn, before).std().item() == pytest.approx(0.5 * 2, rel=0.03)


def test_soft_bounds_step_depends_on_state():
    dev = device(nonlinearity_up=1.0, nonlinearity_down=1.0)
    bank = pulsed.sample_bank(dev, 8, torch.Generator().manual_seed(0))
    lo, hi = bank[1, 1, pulsed.LO], bank[1, 1, pulsed.HI]
    step = (hi - lo).item() / dev.n_states
    for y, up, down in [(lo, 2 * step, 0.0), ((lo + hi) / 2, step, step), (hi, 0.0, 2 * step)]:
        assert pulsed.step_size(bank[1, 1], y).item() == pytest.approx(up, abs=1e-7)
        assert pulsed.step_size(bank[1, 0], y).item() == pytest.approx(down, abs=1e-7)


def test_bounds_are_never_crossed_and_stuck_devices_never_move():
    dev = device(write_noise=2.0, d2d_bounds=0.1, stuck_min_fraction=0.05, stuck_max_fraction=0.05)
    w = torch.rand(100, 400, generator=torch.Generator().manual_seed(1)) - 0.5
    syn = DeviceSynapses(dev, [w], [True], seed=3)
    frozen = syn.model[0] == pulsed.FROZEN
    assert frozen.float().mean().item() == pytest.approx(0.1, abs=0.01)
    y0 = syn.y[0].clone()
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        syn.apply([w], [torch.randn(w.shape, generator=g) * 30 * syn.step0 * syn.scale[0]])
        rows = syn._rows(syn.model[0], 1)
        assert bool((syn.y[0] >= rows[..., pulsed.LO]).all())
        assert bool((syn.y[0] <= rows[..., pulsed.HI]).all())
    assert torch.equal(syn.y[0][frozen], y0[frozen])
    assert (syn.y[0] != y0)[~frozen].float().mean().item() > 0.95
    assert torch.equal(w, syn.scale[0] * (syn.y[0][:, 0] - syn.y[0][:, 1]).view_as(w))


def test_stochastic_rounding_is_unbiased():
    syn, p = single_devices(device(rounding="stochastic"), n=100_000)
    for ask in (0.3, -0.7, 1.25):
        before = syn.y[0].clone()
        pulse(syn, p, ask)
        d = steps(syn, before)
        sem = d.std().item() / math.sqrt(d.numel())
        assert abs(d.mean().item() - ask) < 4 * sem + 1e-4
        assert set(d.round().unique().tolist()) <= {math.floor(ask), math.ceil(ask)}
    det, q = single_devices(device())
    before = det.y[0].clone()
    pulse(det, q, 0.3)
    assert torch.equal(det.y[0], before)  # deterministic rounding drops sub-pulse updates


def test_asymmetry_ratio_up_over_down():
    syn, p = single_devices(device(asymmetry=2.0))
    before = syn.y[0].clone()
    pulse(syn, p, 1.0)
    up = steps(syn, before)
    before = syn.y[0].clone()
    pulse(syn, p, -1.0)
    down = -steps(syn, before)
    assert (up.mean() / down.mean()).item() == pytest.approx(2.0, rel=1e-3)
    assert ((up + down) / 2).mean().item() == pytest.approx(1.0, rel=1e-3)


def test_device_to_device_spread_of_step_and_bounds():
    syn, p = single_devices(device(d2d_step=0.3, d2d_bounds=0.05), n=60_000)
    before = syn.y[0].clone()
    pulse(syn, p, 1.0)
    d = steps(syn, before)
    assert d.std().item() / d.mean().item() == pytest.approx(0.3, rel=0.05)
    bank = syn.bank[1:, 1]
    span = 1 - syn.dev.g_min / syn.dev.g_max
    assert (bank[:, pulsed.HI].std() / span).item() == pytest.approx(0.05, rel=0.05)
    # the same seed builds the same chip, another seed another one
    again, _ = single_devices(syn.dev, n=60_000)
    other, _ = single_devices(syn.dev, n=60_000, seed=1)
    assert torch.equal(again.model[0], syn.model[0]) and torch.equal(again.bank, syn.bank)
    assert not torch.equal(other.model[0], syn.model[0])


def test_drift_exponent_recovered_by_log_log_fit():
    dev = device(drift_nu=0.05, drift_nu_std=0.01, drift_t0="20 s")
    syn, p = single_devices(dev, n=20_000)
    w0 = syn.read(0.0)[0]
    assert torch.equal(w0, p)  # no read noise, no drift before t0
    ts = torch.tensor([2e2, 2e3, 2e4, 2e5, 2e6])
    logs = torch.stack([torch.log(syn.read(float(t))[0] / w0).flatten() for t in ts])
    x = torch.log(ts / 20.0)
    slope = ((x - x.mean())[:, None] * logs).sum(0) / ((x - x.mean()) ** 2).sum()
    assert (-slope).mean().item() == pytest.approx(0.05, abs=5e-4)
    assert (-slope).std().item() == pytest.approx(0.01, rel=0.05)


def test_read_noise_std():
    syn, p = single_devices(device(read_noise=0.02), n=40_000)
    w = syn.read(0.0, torch.Generator().manual_seed(0))[0]
    span = 1 - syn.dev.g_min / syn.dev.g_max
    assert ((w - p) / syn.scale[0]).std().item() == pytest.approx(0.02 * span, rel=0.03)
    assert not torch.equal(w, syn.read(0.0, torch.Generator().manual_seed(1))[0])


def test_endurance_freezes_worn_devices():
    syn, p = single_devices(device(endurance=5), n=2_000)
    for _ in range(4):
        pulse(syn, p, 2.0)
    assert bool((syn.model[0] == pulsed.FROZEN).all())
    frozen_y = syn.y[0].clone()
    pulse(syn, p, -3.0)
    assert torch.equal(syn.y[0], frozen_y)
    assert syn.pulse_stats()["stuck_devices"] == 2_000


def test_quantize_levels_range_and_clipping():
    x = torch.linspace(-2, 3, 10_001)
    q = quantize(x, 3, 0.0, 1.0)
    assert q.min().item() == 0.0 and q.max().item() == 1.0
    assert len(q.unique()) == 8
    inside = (x >= 0) & (x <= 1)
    assert (q[inside] - x[inside]).abs().max().item() <= 0.5 / 7 + 1e-6
    assert torch.equal(quantize(x, 0, 0.0, 1.0), x)  # ideal converter
    with pytest.raises(ValueError):
        quantize(x, 4, 1.0, 1.0)
