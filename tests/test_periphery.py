"""The chip's converters in the loop: inputs through DACs, equilibria and outputs through ADCs."""

from __future__ import annotations

import pytest
import torch

from npusim.chip import ChipSpec, spec_to_toml
from npusim.circuits import DeepHopfield
from npusim.devices.converters import Periphery, periphery_for, quantize
from npusim.learning.estimators import EqProp
from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer, error_rate


def _conv(**changes):
    return ChipSpec().replace(**{f"converters.{k}": v for k, v in changes.items()}).converters


def test_periphery_only_where_signals_are_converted_and_normalised():
    assert periphery_for(_conv(dac_bits=0, adc_bits=0), True) is None
    assert periphery_for(_conv(adc_bits=8), False) is None  # DRN node voltages
    p = periphery_for(_conv(dac_bits=4, adc_bits=3, adc_lo=0.0, adc_hi=1.0), True)
    x = torch.rand(5, 7, generator=torch.Generator().manual_seed(0))
    assert len(p.inputs(x).unique()) <= 16
    read = p.read([x, x * 0.5])
    assert all(torch.equal(r, quantize(s, 3, 0.0, 1.0)) for r, s in zip(read, [x, x * 0.5]))
    assert torch.equal(p.read_output(x), quantize(x, 3, 0.0, 1.0))


def test_eqprop_learns_from_equilibria_as_the_adc_reads_them():
    g = torch.Generator().manual_seed(1)
    model = DeepHopfield([12, 9, 4], seed=2)
    x, t = torch.rand(6, 12, generator=g), torch.eye(4)[torch.randint(0, 4, (6,), generator=g)]
    periphery = Periphery(_conv(adc_bits=2, adc_lo=0.0, adc_hi=1.0))
    exact = EqProp(beta=0.5, sweeps=20)(model, x, t)
    read = EqProp(beta=0.5, sweeps=20, read=periphery.read)(model, x, t)
    plus, minus = exact.phases["nudged+"].state, exact.phases["nudged-"].state
    expected = model.grad_difference(x, periphery.read(plus), periphery.read(minus), 1.0)
    for got, want in zip(read.grads, expected, strict=True):
        dense = got.dense() if hasattr(got, "dense") else got
        want = want.dense() if hasattr(want, "dense") else want
        assert torch.allclose(dense, want, atol=1e-6)
    ideal0 = exact.grads[0].dense()
    assert not torch.allclose(read.grads[0].dense(), ideal0, atol=1e-3)


def test_trainer_reads_through_the_chip_converters(tmp_path):
    spec = ChipSpec().replace(**{"converters.adc_bits": 1, "converters.dac_bits": 2})
    path = tmp_path / "coarse.toml"
    path.write_text(spec_to_toml(spec))
    cfg = TrainConfig(dataset="digits", hidden=[64], lrs=[0.2, 0.1], epochs=2)
    exact = Trainer(cfg)
    for _ in range(2):
        exact.run_epoch()
    coarse = Trainer(TrainConfig(**{**cfg.__dict__, "chip": str(path)}))
    assert coarse.periphery is not None and coarse.estimator.read is not None
    assert exact.periphery is None and exact.estimator.read is None
    x, y = exact.data.split("test")
    sweeps, batch = exact.cfg.inference_sweeps, exact.cfg.eval_batch
    ideal = error_rate(exact.model, x, y, sweeps, batch)
    # by hand: inputs on 4 DAC levels in [0, 1], outputs on 2 ADC levels in [-1, 1]
    out = exact.model.output(exact.model.relax(quantize(x, 2, 0.0, 1.0), sweeps=sweeps).state)
    by_hand = (quantize(out, 1, -1.0, 1.0).argmax(1) != y).float().mean().item()
    coarse_err = error_rate(exact.model, x, y, sweeps, batch, coarse.periphery)
    assert coarse_err == pytest.approx(by_hand, abs=1e-6)
    assert ideal < 0.15 and coarse_err > ideal + 0.1


def _drn_chip(gain: float) -> ChipSpec:
    from npusim.chip import load_chip

    return load_chip("rram").replace(**{"amplifier.gain": gain})


def test_drn_node_voltages_reach_the_adc_through_the_amplifier_gain():
    from npusim.circuits import DeepResistive

    net = DeepResistive([6, 4, 3], input_gain=480.0, seed=0)
    spec = _drn_chip(2.4e7)  # output 1 -> 2.4e7 V/A x 20 uS / 480 = 1.0 of the ADC range
    gains = net.read_gains(spec)
    a = spec.amplifier.gain * spec.device.g_max / 480.0
    assert a == pytest.approx(1.0)
    assert torch.equal(gains[0], torch.tensor([a, a, -a, -a]))  # excitatory, inhibitory halves
    assert torch.equal(gains[1], torch.full((3,), a))
    p = periphery_for(spec.converters, net.normalised_states, gains)
    assert p is not None and periphery_for(spec.converters, False) is None
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    state = net.relax(x, sweeps=50).state
    read = p.read(state)
    for r, s, g in zip(read, state, gains, strict=True):
        assert torch.allclose(r, quantize(s * g, 8, 0.0, 1.0) / g)
    assert bool((read[0][:, 2:] <= 0).all()) and bool((read[0][:, :2] >= 0).all())
    half = periphery_for(_drn_chip(1.2e7).converters, False, net.read_gains(_drn_chip(1.2e7)))
    assert not torch.equal(half.read(state)[1], read[1])  # the gain sets the read-out


def test_a_drn_amplifier_gain_below_one_adc_level_is_an_error_naming_the_gain():
    from npusim.chip import ChipSpecError
    from npusim.circuits import DeepResistive

    net = DeepResistive([6, 4, 3], input_gain=480.0, seed=0)
    with pytest.raises(ChipSpecError, match=r"amplifier.gain = 10000 V/A.*about 2.4e\+07 V/A"):
        net.read_gains(_drn_chip(1e4))  # the rram preset's gain is sized for DHN column sums
