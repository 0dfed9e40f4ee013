"""Synapse arrays: the ideal path is exact; pulse accounting, refresh and checkpoints."""

from __future__ import annotations

import pytest
import torch

from npusim.chip import ChipSpec, load_chip
from npusim.devices import DeviceSynapses, IdealSynapses, make_synapses, pulsed


class Outer:
    """A factored update left^T right, as the core's optimiser hands it over."""

    def __init__(self, left, right):
        self.left, self.right = left, right

    def add_to(self, p):
        p.addmm_(self.left.t(), self.right)


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(30, 40, generator=g) - 0.5, torch.rand(40, 5, generator=g), torch.zeros(40)]


def test_ideal_is_exactly_add():
    g = torch.Generator().manual_seed(1)
    params, ref = _params(), _params()
    syn = make_synapses(load_chip("ideal"), params, [True, False, True], seed=0)
    assert isinstance(syn, IdealSynapses)
    for _ in range(5):
        left, right = torch.randn(4, 30, generator=g), torch.randn(4, 40, generator=g)
        deltas = [Outer(left, right), torch.randn(40, 5, generator=g), torch.randn(40, generator=g)]
        syn.apply(params, deltas)
        ref[0].addmm_(left.t(), right)
        ref[1].add_(deltas[1]).clamp_(min=0.0)
        ref[2].add_(deltas[2])
    for p, r in zip(params, ref):
        assert torch.equal(p, r)
    assert syn.pulse_stats()["pulses_total"] == 0
    assert torch.equal(syn.read(3.15e7)[0], params[0])


def _device(**changes):
    base = {"device.rounding": "deterministic", "device.refresh": False, "device.n_states": 50}
    return ChipSpec().replace(**{**base, **{f"device.{k}": v for k, v in changes.items()}}).device


@pytest.mark.parametrize("scheme, per_device", [("bidirectional", (3, 3)), ("reference", (3, 0))])
def test_pulse_counts_equal_closed_form(scheme, per_device):
    params = _params()
    syn = DeviceSynapses(_device(scheme=scheme), params, [True, False, True], seed=0)
    assert syn.y[2] is None and syn.device_counts(2) is None  # biases: digital periphery
    w_step = syn.step0 * syn.scale[0] * (2 if scheme == "bidirectional" else 1)
    k = torch.randint(-3, 4, (30, 40), generator=torch.Generator().manual_seed(0)).float()
    before = syn.pulse_stats()["pulses_total"]
    bias_delta = torch.full((40,), 0.25)
    bias_before = params[2].clone()
    syn.apply(params, [k * w_step, torch.zeros(40, 5), bias_delta])
    counts = syn.device_counts(0).view(30, 40, 2)
    for dev, expected in enumerate(per_device):
        assert torch.equal(counts[..., dev], (k.abs() * expected / 3).int())
    total = int(k.abs().sum()) * sum(per_device) // 3
    stats = syn.pulse_stats()
    assert stats["pulses_total"] - before == total
    assert stats["pulses_max"] == max(per_device)
    assert stats["pulses_mean"] == pytest.approx(total / stats["devices"])
    assert torch.equal(params[2], bias_before + bias_delta)


@pytest.mark.parametrize("scheme", ["bidirectional", "one_sided", "reference"])
def test_refresh_preserves_the_weight(scheme):
    dev = _device(scheme=scheme, refresh=True, refresh_level=0.8, refresh_interval=1)
    w = (torch.rand(50, 60, generator=torch.Generator().manual_seed(4)) - 0.5) * 0.2
    syn = DeviceSynapses(dev, [w], [True], seed=1)
    rows = syn._rows(syn.model[0], 1)
    lo, hi = rows[..., pulsed.LO], rows[..., pulsed.HI]
    # push every pair up by the same amount: common mode near the top, same weights
    y = syn.y[0]
    shift = (hi - y).min(1).values.clamp(min=0) * 0.99
    y += shift.unsqueeze(1)
    frozen = (syn.model[0] == pulsed.FROZEN).any(1)
    w_before = syn.scale[0] * (y[:, 0] - y[:, 1])
    syn.refresh()
    assert syn.refreshes > 0 and syn.refresh_pulses > 0
    w_after = syn.scale[0] * (syn.y[0][:, 0] - syn.y[0][:, 1])
    assert torch.allclose(w_after, w_before, atol=1e-6)
    u = (syn.y[0] - lo) / (hi - lo)
    refreshed = syn.device_counts(0).sum(1) > 0
    assert refreshed.sum().item() == syn.refreshes
    assert not bool(refreshed[frozen].any())
    assert bool((u[refreshed] < 0.8 + 1e-6).all())  # headroom after refresh
    assert torch.equal(w.flatten()[refreshed], w_after[refreshed])  # params follow the chip


def test_one_sided_devices_only_potentiate_between_refreshes():
    dev = _device(scheme="one_sided", rounding="stochastic", write_noise=0.3, n_states=200)
    w = torch.zeros(40, 50)
    syn = DeviceSynapses(dev, [w], [True], seed=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        y0 = syn.y[0].clone()
        syn.apply([w], [torch.randn(w.shape, generator=g) * 3 * syn.step0 * syn.scale[0]])
        assert bool((syn.y[0] >= y0 - 1e-7).all())


def test_state_dict_resumes_exactly():
    spec = load_chip("rram").replace(**{"device.refresh_interval": 3, "device.endurance": 40})
    g = torch.Generator().manual_seed(5)
    updates = [
        [
            Outer(torch.randn(4, 30, generator=g), torch.randn(4, 40, generator=g) * 0.01),
            torch.randn(40, 5, generator=g) * 0.01,
            torch.randn(40, generator=g),
        ]
        for _ in range(10)
    ]
    a_params = _params()
    a = make_synapses(spec, a_params, [True, False, True], seed=7)
    for u in updates[:5]:
        a.apply(a_params, u)
    state = {k: v for k, v in a.state_dict().items()}
    saved_params = [p.clone() for p in a_params]
    for u in updates[5:]:
        a.apply(a_params, u)
    b_params = _params()
    b = make_synapses(spec, b_params, [True, False, True], seed=7)
    for p, s in zip(b_params, saved_params):
        p.copy_(s)
    b.load_state_dict(state)
    for u in updates[5:]:
        b.apply(b_params, u)
    for pa, pb in zip(a_params, b_params):
        assert torch.equal(pa, pb)
    assert a.pulse_stats() == b.pulse_stats()
    for ya, yb in zip(a.y, b.y):
        assert (ya is None and yb is None) or torch.equal(ya, yb)
    with pytest.raises(ValueError, match="different chip"):
        make_synapses(spec, _params(), [True, False, True], seed=8).load_state_dict(state)


def test_read_writes_into_out_and_keeps_programmed_state():
    params = _params()
    syn = make_synapses(load_chip("pcm"), params, [True, False, True], seed=0)
    programmed = [p.clone() for p in params]
    out = [torch.empty_like(p) for p in params]
    got = syn.read(3.15e7, torch.Generator().manual_seed(0), out=out)
    for o, w in zip(out, got):
        assert torch.equal(o, w)
    assert torch.equal(got[2], programmed[2])
    assert not torch.equal(got[0], programmed[0])
    for p, q in zip(params, programmed):
        assert torch.equal(p, q)  # reading does not disturb the chip


@pytest.mark.parametrize("model", ["dhn", "drn"])
def test_ideal_chip_reproduces_the_core_bit_for_bit(model):
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.train import Trainer

    cfg = TrainConfig(dataset="digits", model=model, hidden=[16], epochs=1, seed=3)
    core = Trainer(cfg)
    chip = Trainer(cfg)
    chip.synapses = make_synapses(load_chip("ideal"), chip.model.params(), chip.model.signed, 3)
    assert isinstance(chip.synapses, IdealSynapses)
    core.data.x_train, core.data.y_train = core.data.x_train[:200], core.data.y_train[:200]
    chip.data.x_train, chip.data.y_train = core.data.x_train, core.data.y_train
    core.train_epoch()
    chip.train_epoch()
    for a, b in zip(core.model.params(), chip.model.params()):
        assert torch.equal(a, b)
