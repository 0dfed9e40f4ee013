"""Cost model: Tellegen, linearity in the counts, sources for every constant, baselines."""

import importlib.util
import math

import pytest
import torch

from npusim.cost import (
    GPUS,
    PHONE_NPU,
    TERMS,
    CostConstants,
    claims_check,
    constants_from_spec,
    dissipated_power,
    floors,
    forward_flops,
    npu_cost,
    source_power,
    training_flops,
)
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
        led.update([8, 6, 3], 4, 50)
    return led


def test_energy_is_linear_in_counts():
    c = CostConstants()
    one, three = npu_cost(small_ledger(1), c), npu_cost(small_ledger(3), c)
    for p in one.energy_j:
        for t in TERMS:
            assert three.energy_j[p][t] == pytest.approx(3 * one.energy_j[p][t], rel=1e-12)
    led = small_ledger(1)
    e = npu_cost(led, c).energy_j["free"]
    assert e["array"] == pytest.approx(led.count("macs", "free") * c.analog_mac_j)
    assert e["adc"] == pytest.approx(led.count("adc", "free") * c.adc_j)
    assert e["dac"] == pytest.approx(led.count("dac", "free") * c.dac_j)
    up = npu_cost(led, c).energy_j["update"]
    assert up["programming"] == pytest.approx(50 * c.pulse_j)
    assert up["digital"] == pytest.approx(led.count("digital_ops", "update") * c.digital_op_j)
    double = c.replace(adc_walden_fom_j=2 * c.adc_walden_fom_j)
    assert npu_cost(led, double).energy_j["free"]["adc"] == pytest.approx(2 * e["adc"])


def test_circuit_power_replaces_per_mac_energy():
    led = small_ledger(1)
    led.add_circuit_power("free", torch.full((4,), 1e-6, dtype=F64))
    c = CostConstants()
    e = npu_cost(led, c).energy_j["free"]["array"]
    assert e == pytest.approx(4 * 1e-6 * 10 * c.t_sweep_s)  # Σ P × sweeps × t_sweep


def test_every_constant_has_a_source():
    for name, d in CostConstants().sources().items():
        assert isinstance(d["source"], str) and d["source"].strip(), name
        assert d["unit"] is not None, name
    for g in GPUS.values():
        for key in ("board_power_w", "dense_peak_flops", "utilisation", "mem_j_per_byte"):
            assert g.sources[key].strip()
    for key in ("int8_ops_per_j", "fp16_flops_per_j", "peak_int8_ops", "utilisation"):
        assert PHONE_NPU.sources[key].strip()
    for term, (value, src) in floors(CostConstants()).items():
        assert value >= 0 and src.strip(), term


def test_constants_from_chip_spec():
    chip = pytest.importorskip("npusim.chip")
    c = constants_from_spec(chip.ChipSpec())
    assert c.pulse_j == chip.ChipSpec().energy.program_pulse
    assert "chip preset" in c.sources()["pulse_j"]["source"]
    with pytest.raises(ValueError, match="unknown cost constants"):
        CostConstants().replace(bogus=1.0)


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
    c = CostConstants()
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
    c = CostConstants()
    e = npu_cost(led, c).energy_j["inference"]["array"]
    assert e == pytest.approx(2e-6 * 10 * 5 * c.t_sweep_s)
