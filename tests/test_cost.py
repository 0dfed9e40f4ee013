"""Cost model: Tellegen, linearity in the counts, sources for every constant, baselines."""

import importlib.util
import math

import pytest
import torch

from npusim.chip import load_chip
from npusim.cost import (
    GPUS,
    PHONE_NPU,
    TERMS,
    PhysicalLimits,
    claims_check,
    constants_table,
    dissipated_power,
    floors,
    forward_flops,
    npu_area,
    npu_cost,
    phase_time,
    source_power,
    training_flops,
)
from npusim.cost.constants import adc_j, analog_mac_j, dac_j
from npusim.runtime.ledger import Ledger

F64 = torch.float64


def relax_drn(weights, biases, v_in, lo, hi, nudge=None, iters=20000):
    """Exact block-coordinate steady state of a small DRN (float64), optional nudge current
    ``nudge(v_out) -> (g_extra, i_extra)`` modelled as a conductance to a target voltage."""
    L = len(weights)
    v = [v_in] + [torch.zeros(v_in.shape[0], w.shape[1], dtype=F64) for w in weights]
    for _ in range(iters):
        old = [x.clone() for x in v]
        for k in list(range(1, L + 1, 2)) + list(range(2, L + 1, 2)):
            num = v[k - 1] @ weights[k - 1] + biases[k - 1]
            den = weights[k - 1].sum(0).expand_as(num).clone()
            if k < L:
                num = num + v[k + 1] @ weights[k].t()
                den = den + weights[k].sum(1)
            elif nudge is not None:
                g_n, t = nudge
                num, den = num + g_n * t, den + g_n
            x = num / den
            v[k] = torch.maximum(torch.minimum(x, hi[k - 1]), lo[k - 1]) if k < L else x
        if max(float((a - b).abs().max()) for a, b in zip(v, old, strict=True)) < 1e-15:
            break
    return v


def random_drn(seed=0, sizes=(8, 6, 6, 3), batch=5):
    g = torch.Generator().manual_seed(seed)
    weights = [
        1e-6 + 9e-6 * torch.rand(a, b, generator=g, dtype=F64)
        for a, b in zip(sizes[:-1], sizes[1:], strict=False)
    ]
    biases = [1e-6 * (torch.rand(b, generator=g, dtype=F64) - 0.5) for b in sizes[1:]]
    x = torch.rand(batch, sizes[0] // 2, generator=g, dtype=F64)
    v_in = torch.cat([x, -x], 1)
    lo, hi = [], []
    for n in sizes[1:-1]:
        h = n // 2
        lo.append(torch.cat([torch.zeros(h), torch.full((n - h,), -math.inf)]).to(F64))
        hi.append(torch.cat([torch.full((h,), math.inf), torch.zeros(n - h)]).to(F64))
    return weights, biases, v_in, lo, hi


def test_tellegen_free_steady_state():
    weights, biases, v_in, lo, hi = random_drn()
    v = relax_drn(weights, biases, v_in, lo, hi)
    p_diss, p_src = dissipated_power(weights, v), source_power(weights, biases, v)
    assert (p_diss > 0).all()
    assert torch.allclose(p_diss, p_src, rtol=1e-6, atol=0)
    assert any(bool((x == 0).any()) for x in v[1:-1])  # some diodes conduct


def test_tellegen_with_nudge_current():
    weights, biases, v_in, lo, hi = random_drn(seed=1)
    g_n, target = 2e-6, torch.full((v_in.shape[0], 3), 0.3, dtype=F64)
    v = relax_drn(weights, biases, v_in, lo, hi, nudge=(g_n, target))
    nudge_i = g_n * (target - v[-1])  # current the nudging source injects (A)
    p_diss = dissipated_power(weights, v)
    # the nudge is a voltage source behind a conductance: it delivers V_t·I, the conductance
    # burns I²/g_n; node-level injection I·V_out is what the network sees
    p_src = source_power(weights, biases, v, extra_currents=[None, None, nudge_i])
    assert torch.allclose(p_diss, p_src, rtol=1e-6, atol=0)


def test_dissipated_power_matches_elementwise_sum():
    weights, _, v_in, lo, hi = random_drn(seed=2, batch=2)
    v = [v_in] + [torch.randn(2, w.shape[1], dtype=F64) for w in weights]
    direct = sum(
        (w[None] * (a[:, :, None] - b[:, None, :]) ** 2).sum((1, 2))
        for w, a, b in zip(weights, v[:-1], v[1:], strict=True)
    )
    assert torch.allclose(dissipated_power(weights, v), direct, rtol=1e-12)


def test_drn_from_circuits_agrees():
    resistive = pytest.importorskip("npusim.circuits.resistive")
    net = resistive.DeepResistive([4, 6, 3], dtype=F64, seed=3)
    x = torch.rand(3, 4, dtype=F64)
    state = net.relax(x, sweeps=3000, tol=1e-15).state
    layers = [net.input_layer(x), *state]
    p = dissipated_power(net.weights, layers)
    assert torch.allclose(p, source_power(net.weights, net.biases, layers), rtol=1e-6)


def small_ledger(reps=1):
    led = Ledger()
    for _ in range(reps):
        led.relax("free", [8, 6, 3], 4, 10)
        led.relax("nudged+", [8, 6, 3], 4, 3)
        led.relax("nudged-", [8, 6, 3], 4, 3)
        led.update([8, 6, 3], 4, 50, reset_pulses=8)
    return led


RRAM = load_chip("rram")


def test_energy_is_linear_in_counts():
    c = RRAM
    one, three = npu_cost(small_ledger(1), c), npu_cost(small_ledger(3), c)
    for p in one.energy_j:
        for t in TERMS:
            assert three.energy_j[p][t] == pytest.approx(3 * one.energy_j[p][t], rel=1e-12)
    led = small_ledger(1)
    e = npu_cost(led, c).energy_j["free"]
    assert analog_mac_j(c) == pytest.approx(0.2**2 * 11e-6 * 1e-9)  # V_r² G_mid settle_tau
    assert e["array"] == pytest.approx(led.count("macs", "free") * analog_mac_j(c))
    assert e["read"] == pytest.approx(4 * (8 * 6 + 6 * 3) * c.energy.read_device)
    assert e["adc"] == pytest.approx(led.count("adc", "free") * c.energy.adc_fom * 2**8)
    assert e["dac"] == pytest.approx(led.count("dac", "free") * c.energy.dac_fom * 2**8)
    amps = c.amplifier.per_array / c.array.cols
    neurons = led.count("node_sweeps", "free") * c.timing.settle_tau * amps
    assert e["neurons"] == pytest.approx(neurons * c.energy.amplifier_power)
    up = npu_cost(led, c).energy_j["update"]
    assert up["programming"] == pytest.approx(
        42 * c.energy.program_pulse + 8 * c.energy.reset_pulse
    )
    assert up["digital"] == pytest.approx(led.count("digital_ops", "update") * c.energy.digital_mac)
    assert up["fp32"] == pytest.approx(led.count("fp32_ops", "update") * c.energy.digital_fp32_op)
    double = c.replace(**{"energy.adc_fom": 2 * c.energy.adc_fom})
    assert npu_cost(led, double).energy_j["free"]["adc"] == pytest.approx(2 * e["adc"])
    dearer_reset = c.replace(**{"energy.reset_pulse": 3 * c.energy.reset_pulse})
    assert npu_cost(led, dearer_reset).energy_j["update"]["programming"] == pytest.approx(
        up["programming"] + 2 * 8 * c.energy.reset_pulse
    )


def test_ideal_converters_are_priced_at_eight_bits():
    ideal = load_chip("ideal")
    assert ideal.converters.adc_bits == 0
    assert adc_j(ideal) == pytest.approx(ideal.energy.adc_fom * 256)
    assert dac_j(ideal) == pytest.approx(ideal.energy.dac_fom * 256)
    four = RRAM.replace(**{"converters.adc_bits": 4})
    assert adc_j(four) == pytest.approx(RRAM.energy.adc_fom * 16)


def test_no_chip_means_the_ideal_preset():
    led = small_ledger(1)
    assert npu_cost(led).energy_j == npu_cost(led, load_chip("ideal")).energy_j
    assert npu_cost(led, "rram").energy_j == npu_cost(led, RRAM).energy_j


def test_latency_reads_read_time_adc_rate_clock_and_lanes():
    led = small_ledger(1)
    t = RRAM.timing
    settle = 4 * 10 * t.settle_tau
    # one read-out per relaxation (4 samples) lasts read_time; ADC conversions at adc_rate
    # (8 ADCs per column tile) are faster here
    assert 4 * t.read_time > 4 * 6 / (8 * t.adc_rate)
    assert phase_time(led, "free", RRAM) == pytest.approx(settle + 4 * t.read_time)
    slow_adc = RRAM.replace(**{"timing.adc_rate": 1e3})  # conversions now set the pace
    assert phase_time(led, "free", slow_adc) == pytest.approx(settle + 4 * 6 / (8 * 1e3))
    rate = t.digital_lanes * t.clock
    prog = max(led.count("pulses", "update", k) * t.pulse_width / n for k, n in enumerate([6, 3]))
    # the 8-bit outer products hide behind the next sample's relaxation but the batch's last
    # (1 of 4 samples); the fp32 scale-and-quantise and the programming follow the batch
    exposed = led.count("digital_ops", "update") / 4
    assert phase_time(led, "update", RRAM) == pytest.approx(
        prog + (exposed + led.count("fp32_ops", "update")) / rate
    )


def test_area_counts_every_placed_block():
    sizes = [300, 200, 10]  # 3x2 + 2x1 = 8 arrays of 128x128
    area = npu_area(sizes, RRAM)
    e = RRAM.energy
    assert area["arrays"] == pytest.approx(8 * e.array_area)
    assert area["adc"] == pytest.approx(8 * RRAM.array.adcs_per_array * e.adc_area)
    assert area["dac"] == pytest.approx(8 * 128 * e.dac_area)
    assert area["neurons"] == pytest.approx(8 * RRAM.amplifier.per_array * e.amplifier_area)
    assert area["digital"] == pytest.approx(e.digital_area)


def test_circuit_power_replaces_per_mac_energy():
    led = small_ledger(1)
    led.add_circuit_power("free", torch.full((4,), 1e-6, dtype=F64))
    e = npu_cost(led, RRAM).energy_j["free"]
    assert e["array"] == pytest.approx(4 * 1e-6 * 10 * RRAM.timing.settle_tau)  # Σ P × sweeps × t
    t_int = RRAM.energy.read_device / (0.2**2 * 11e-6)  # 22 fJ at 0.2 V, 11 uS: 50 ns
    assert t_int == pytest.approx(50e-9)
    assert e["read"] == pytest.approx(1e-6 * 4 * t_int)  # P × read-outs × integration


def test_every_constant_has_a_unit_and_a_source():
    for chip in ("ideal", "rram", "pcm", "ecram"):
        table = constants_table(load_chip(chip))
        for name, d in table.items():
            assert isinstance(d["source"], str) and d["source"].strip(), name
            assert "not cited" not in d["source"], (chip, name)
            assert d["unit"] is not None, name
        assert table["energy.reset_pulse"]["value"] == load_chip(chip).energy.reset_pulse
        assert "temperature_k" in table and "analog_mac_j" in table
    for g in GPUS.values():
        for key in ("board_power_w", "dense_peak_flops", "utilisation", "mem_j_per_byte"):
            assert g.sources[key].strip()
    for key in ("int8_ops_per_j", "fp16_flops_per_j", "peak_int8_ops", "utilisation"):
        assert PHONE_NPU.sources[key].strip()
    for term, (value, src) in floors(RRAM).items():
        assert value >= 0 and src.strip(), term
    assert set(floors(RRAM)) == set(TERMS)
    with pytest.raises(ValueError, match="unknown physical limits"):
        PhysicalLimits().replace(bogus=1.0)


def test_gpu_and_phone_baselines():
    sizes = [784, 1024, 10]
    fwd = 2 * (784 * 1024 + 1024 * 10) + 1024 + 10
    assert forward_flops(sizes) == fwd and training_flops(sizes) == 3 * fwd
    h100 = GPUS["h100"]
    cost = h100.cost(sizes, batch=32)
    assert cost["train"]["energy_j"]["compute"] == pytest.approx(3 * fwd * 700 / (989.4e12 * 0.4))
    from npusim.cost.baselines import training_bytes

    assert training_bytes(sizes, 32, 2, cache_bytes=50e6) == 784 * 2  # fits in L2: input only
    big = [8192, 8192, 8192]  # 268 MB of bf16 parameters: streamed from HBM every step
    assert training_bytes(big, 32, 2, cache_bytes=50e6) > 6 * 2 * 8192 * 8192 * 2 / 32
    phone = PHONE_NPU.cost(sizes)
    assert phone["inference"]["energy_j"]["compute"] == pytest.approx(fwd / 11.59e12)


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is not None, reason="NVML present")
def test_measured_mode_explains_missing_nvml():
    from npusim.cost import measure_energy_j

    with pytest.raises(RuntimeError, match="nvidia-ml-py"):
        measure_energy_j(lambda: None)


def test_claims_check_arithmetic():
    c = RRAM
    out = claims_check({"array": 1.0, "adc": 0.5}, {"macs": 1.0, "adc": 1.0}, 10.0, 8.0, c)
    assert out["budget_j_per_sample"] == pytest.approx(1.25)
    assert out["terms"]["array"]["must_fall_by_alone"] == pytest.approx(1 / 0.75)
    assert out["terms"]["adc"]["must_fall_by_alone"] == pytest.approx(2.0)
    assert out["all_terms_must_fall_by"] == pytest.approx(1.2)
    assert out["gpu_must_rise_by"] == pytest.approx(8 / (10 / 1.5))
    hard = claims_check({"array": 1.0, "adc": 0.5}, {"macs": 1.0, "adc": 1.0}, 10.0, 100.0, c)
    assert math.isinf(hard["terms"]["array"]["must_fall_by_alone"])
    tiny = claims_check({"array": 1e-9}, {"macs": 1e9}, 1e-9, 1e6, c)
    assert tiny["terms"]["array"]["verdict"].startswith("NO")


def test_inference_uses_the_free_phase_power():
    led = small_ledger(1)
    led.add_circuit_power("free", 2e-6, samples=1)
    led.relax("inference", [8, 6, 3], 10, 5)
    e = npu_cost(led, RRAM).energy_j["inference"]["array"]
    assert e == pytest.approx(2e-6 * 10 * 5 * RRAM.timing.settle_tau)


def conv_ledger() -> Ledger:
    """A two-block network with convolutions (see tests/test_ledger.py), one training batch."""
    from npusim.core.interfaces import ArrayShape

    arr = [
        ArrayShape(25, 8, 576, 784, 4608, False, 0),
        ArrayShape(72, 8, 576, 4608, 4608, True, 0),
        ArrayShape(200, 16, 64, 1152, 1024, False, 1, ff_ops_in=4608),
        ArrayShape(1024, 10, 1, 1024, 10, True, 1),
    ]
    led = Ledger(logical_sizes=[784, 10])
    for blk, sweeps in ((0, 9), (1, 5)):
        led.relax("free", arr, 4, sweeps, block=blk)
        led.relax("nudged+", arr, 4, 3, block=blk)
        led.relax("nudged-", arr, 4, 3, block=blk)
    led.update(arr, 4, 0)
    return led


def test_a_conv_ledger_prices_its_arrays_and_baselines():
    from npusim.cost.baselines import logical_arrays, param_count, training_bytes
    from npusim.cost.npu import arrays_in_use, inference_ledger

    led = conv_ledger()
    arr = led.arrays
    assert logical_arrays(led) == arr  # not a layered network: the baselines run its arrays
    fwd = (
        576 * (2 * 25 * 8 + 8)
        + 576 * (2 * 72 * 8 + 8)
        + 64 * (2 * 200 * 16 + 16)
        + 1 * (2 * 1024 * 10 + 10)
    )  # Σ uses·(2·rows·cols + cols)
    assert forward_flops(arr) == fwd and training_flops(arr) == 3 * fwd
    params = (25 * 8 + 8) + (72 * 8 + 8) + (200 * 16 + 16) + (1024 * 10 + 10)
    assert param_count(arr) == params
    acts = 4608 + 4608 + 1024 + 10  # Σ out_units
    assert training_bytes(arr, 32, 2, cache_bytes=0) == pytest.approx(
        784 * 2 + (6 * params * 2 + 2 * acts * 2 * 32) / 32
    )
    cost = GPUS["h100"].cost(arr, batch=32)
    assert cost["train"]["flops"] == 3 * fwd and cost["inference"]["flops"] == fwd
    assert PHONE_NPU.cost(arr)["train"]["flops"] == 3 * fwd
    # 128x128 tiles: 25x8, 72x8 one each, 200x16 two, 1024x10 eight
    assert arrays_in_use(arr, RRAM) == 12
    assert npu_area(arr, RRAM)["arrays"] == pytest.approx(12 * RRAM.energy.array_area)
    c = npu_cost(led, RRAM)
    assert c.area_m2 == npu_area(arr, RRAM)
    assert c.energy_j["free"]["static"] == pytest.approx(
        RRAM.energy.static_power * 12 * c.time_s["free"]
    )
    inf = inference_ledger(led)  # one sample through each block in turn
    assert inf.inference_samples == 1 and inf.count("relaxations", "inference") == 2
    assert inf.count("sweeps", "inference") == round(led.mean_sweeps("free")) * 2
    assert inf.layers["inference"]["adc"] == [0, 4608, 0, 10]


def test_a_layered_ledger_runs_the_baselines_on_its_logical_sizes():
    from npusim.core.interfaces import dense_arrays
    from npusim.cost.baselines import logical_arrays

    led = Ledger(logical_sizes=[4, 6, 3])
    led.relax("free", [8, 6, 3], 1, 1)  # a DRN: its input duplicated on the chip
    assert logical_arrays(led) == dense_arrays([4, 6, 3])
    assert forward_flops(logical_arrays(led)) == forward_flops([4, 6, 3])
