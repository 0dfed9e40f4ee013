"""npusim.deploy: tiling, the noise families' statistics, drift compensation, fit and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from npusim.chip import load_chip
from npusim.deploy import DeployError, deploy, fit_report, undeploy
from npusim.deploy.layers import _quantize
from npusim.deploy.noise import noise_for, one_over_f_growth

YEAR = 3.15576e7


def small_ideal(rows: int = 7, cols: int = 5, **extra):
    return load_chip("ideal").replace(**{"array.rows": rows, "array.cols": cols, **extra})


@pytest.mark.parametrize("shape", [(23, 11), (5, 3), (64, 40), (7, 5), (1, 1)])
def test_tiled_linear_equals_digital_product_on_ideal_chip(shape):
    torch.manual_seed(0)
    k, n = shape
    lin = nn.Linear(k, n)
    chip = small_ideal()
    a = deploy(lin, chip)
    x = torch.randn(9, k)
    with torch.no_grad():
        torch.testing.assert_close(a(x), lin(x), rtol=1e-5, atol=1e-6)
    layer = a
    assert layer.row_blocks == math.ceil(k / 7) and layer.col_blocks == math.ceil(n / 5)
    assert fit_report(a, chip).arrays == 2 * math.ceil(k / 7) * math.ceil(n / 5)


def test_tiled_conv_equals_digital_conv_on_ideal_chip():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, (2, 3), dilation=2)
    )
    a = deploy(model, small_ideal(rows=10, cols=4))  # K = 27 and 24: 3 row blocks each
    x = torch.randn(2, 3, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(a(x), model(x), rtol=1e-5, atol=1e-6)


def test_partial_sums_of_row_blocks_are_converted_per_array_then_added():
    torch.manual_seed(2)
    lin = nn.Linear(20, 6)
    chip = small_ideal(rows=8, cols=4, **{"converters.adc_bits": 4, "converters.dac_bits": 0})
    x = torch.randn(50, 20)
    a = deploy(lin, chip, calibration=x)
    lo, hi = a.adc_range
    wt = lin.weight.detach().t()
    want = (
        sum(
            _quantize(x[:, r : r + 8] @ wt[r : r + 8], 4, lo, hi, ste=False)
            for r in range(0, 20, 8)
        )
        + lin.bias.detach()
    )
    with torch.no_grad():
        torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)
        assert (a(x) - lin(x)).abs().max() > 1e-3  # the 4-bit ADC does change the result


def test_undeploy_gives_back_the_digital_model():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    back = undeploy(deploy(model, load_chip("pcm")))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert type(back[0]) is nn.Conv2d and type(back[2]) is nn.Linear


def test_unsupported_layer_is_named_and_left_digital_only_when_asked():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.LSTM(4, 4)))
    with pytest.raises(DeployError, match=r"'1\.0' \(LSTM\).*digital_fallback"):
        deploy(model, load_chip("pcm"))
    a = deploy(model, load_chip("pcm"), digital_fallback=True)
    assert isinstance(a[1][0], nn.LSTM)


def test_a_model_too_large_for_the_chip_says_what_it_needs():
    chip = load_chip("pcm").replace(**{"array.tiles": 10})
    with pytest.raises(DeployError, match="needs 32 arrays .* has 10"):
        deploy(nn.Linear(512, 512), chip)  # 4 x 4 blocks, two arrays each


# ---- noise families: sampled statistics against their equations ------------------------------
def test_pcm_programming_noise_matches_nandakumar_polynomial():
    noise = noise_for(load_chip("pcm"))
    assert noise.name == "pcm"
    gen = torch.Generator().manual_seed(0)
    for g_rel in (0.1, 0.5, 0.9):
        y = noise.write(torch.full((200_000,), g_rel), gen)
        sigma_us = -1.1731 * g_rel**2 + 1.9650 * g_rel + 0.2635  # Nandakumar et al. 2019
        assert abs(float(y.std()) * 25.0 / sigma_us - 1) < 0.01
        assert abs(float(y.mean()) - g_rel) < 4 * sigma_us / 25.0 / math.sqrt(200_000)


def test_pcm_drift_exponent_and_log_log_slope():
    noise = noise_for(load_chip("pcm"))
    gen = torch.Generator().manual_seed(1)
    g_us = 0.05  # low state: neither clip of the fits is active
    y_t = torch.full((100_000,), g_us / 25.0)
    nu = noise.drift_nu(y_t, gen)
    mu = -0.0155 * math.log(g_us) + 0.0244
    sd = -0.0125 * math.log(g_us) - 0.0059
    assert abs(float(nu.mean()) - mu) < 4 * sd / math.sqrt(1e5)
    assert abs(float(nu.std()) / sd - 1) < 0.02
    times = torch.logspace(math.log10(noise.t0), math.log10(YEAR), 9)
    log_g = torch.stack([noise.drifted(y_t, nu, float(t)).log().mean() for t in times])
    slope = torch.linalg.lstsq(
        torch.stack([times.log(), torch.ones(9)], 1), log_g.unsqueeze(1)
    ).solution[0]
    assert abs(float(slope) + mu) < 0.002  # d ln G / d ln t = -E[nu]


def test_pcm_read_noise_grows_as_one_over_f():
    noise = noise_for(load_chip("pcm"))
    y = torch.full((4,), 0.4)
    t_r = 250e-9
    for t in (3600.0, YEAR):
        want = 0.4 * min(0.0088 / 10.0**0.65, 0.2) * math.sqrt(math.log((t + t_r) / (2 * t_r)))
        assert torch.allclose(noise.read_std(y, y, t), torch.full((4,), want), rtol=1e-5)


def test_chip_family_statistics_from_the_rram_preset():
    chip = load_chip("rram")
    d = chip.device
    noise = noise_for(chip)
    assert noise.name == "chip"
    gen = torch.Generator().manual_seed(2)
    y_min = d.g_min / d.g_max
    step = (1 - y_min) / d.n_states
    y = noise.write(torch.full((200_000,), 0.5), gen)
    assert abs(float(y.std()) / (step * math.sqrt(1 / 12 + d.write_noise**2)) - 1) < 0.01
    nu = noise.drift_nu(torch.full((200_000,), 0.5), gen)
    assert abs(float(nu.mean()) - d.drift_nu) < 4 * d.drift_nu_std / math.sqrt(2e5)
    assert abs(float(nu.std()) / d.drift_nu_std - 1) < 0.02
    t0, t_r = d.drift_t0, chip.timing.read_time
    r0 = float(noise.read_std(torch.ones(1), torch.ones(1), t0))
    r1 = float(noise.read_std(torch.ones(1), torch.ones(1), YEAR))
    assert r0 == pytest.approx(d.read_noise * (1 - y_min), rel=1e-6)
    want = math.sqrt(math.log((YEAR + t_r) / (2 * t_r)) / math.log((t0 + t_r) / (2 * t_r)))
    assert r1 / r0 == pytest.approx(want, rel=1e-6)
    assert one_over_f_growth(YEAR, t_r, t0) == pytest.approx(want)


def test_stuck_fractions_and_verify_rounds():
    chip = load_chip("rram").replace(
        **{"device.stuck_min_fraction": 0.03, "device.stuck_max_fraction": 0.05}
    )
    gen = torch.Generator().manual_seed(3)
    mask = noise_for(chip).stuck_mask((400_000,), gen)
    assert float((mask == 1).float().mean()) == pytest.approx(0.03, abs=0.002)
    assert float((mask == 2).float().mean()) == pytest.approx(0.05, abs=0.002)
    clean = chip.replace(**{"device.stuck_min_fraction": 0.0, "device.stuck_max_fraction": 0.0})
    sigma = noise_for(clean).program_std(torch.zeros(1)).item()
    p = math.erfc(1 / math.sqrt(2))  # P(|N(0, s)| > s)
    for rounds in (0, 1, 2):
        nz = noise_for(clean, verify_iterations=rounds, verify_tolerance=sigma)
        y = nz.program(torch.full((400_000,), 0.5), gen)
        outside = float(((y - 0.5).abs() > sigma).float().mean())
        assert outside == pytest.approx(p ** (rounds + 1), rel=0.05)


def test_read_noise_is_frozen_per_time_with_the_model_variance():
    torch.manual_seed(4)
    lin = nn.Linear(100, 50)
    a = deploy(lin, load_chip("pcm"), ir_drop=False, drift_compensation=False)
    p, noise = a._prog, a.settings.noise
    t = 86400.0
    w1, _ = a.effective(t)
    w2, _ = a.effective(t)
    y = noise.drifted(p.y_prog, p.nu, t)
    var = noise.read_std(y, p.y_target, t) ** 2
    scale = p.w_max / (noise.y_max - noise.y_min)
    want = 2 * (var[0] + var[1])[..., :50].sum() * scale**2  # two draws, two devices a weight
    got = ((w1 - w2) ** 2).sum()
    assert float(got / want) == pytest.approx(1.0, rel=0.05)


def test_drift_compensation_restores_the_mean_scale():
    """Least-squares scale of the read weights against the digital ones, mean of 4
    programmings: compensated after a year it is the scale right after programming (to 2%);
    uncompensated it has drifted by (t / t0)^-nu, nu ~ 0.049 at most PCM states."""
    torch.manual_seed(5)
    lin = nn.Linear(128, 64)
    w = lin.weight.detach().t()

    def scale(w_eff: torch.Tensor) -> float:
        return float((w_eff[0] * w).sum() / (w * w).sum())

    for comp in (False, True):
        s0, s1 = [], []
        for seed in range(4):
            a = deploy(
                lin,
                load_chip("pcm"),
                ir_drop=False,
                read_noise=False,
                drift_compensation=comp,
                seed=seed,
            )
            w_eff, alpha = a.effective(YEAR)
            s1.append(scale(w_eff if alpha is None else w_eff * alpha.unsqueeze(1)))
            s0.append(scale(a.effective(0.0)[0]))
        ratio = sum(s1) / sum(s0)
        if comp:
            assert ratio == pytest.approx(1.0, abs=0.02)
        else:
            assert ratio == pytest.approx((YEAR / 20.0) ** -0.049, rel=0.1)


def test_inference_bill_counts_and_prices_in_closed_form():
    from npusim.deploy.bill import inference_bill

    chip = load_chip("pcm")
    a = deploy(nn.Sequential(nn.Linear(200, 130), nn.ReLU()), chip)
    b = inference_bill(a, chip, torch.rand(1, 200))
    ev, e, t = b["events"], chip.energy, chip.timing
    assert b["arrays"] == 8  # 2 x 2 blocks of 128 x 128, pairs
    assert ev["device_reads"] == 2 * 200 * 130 and ev["array_reads"] == 4
    assert ev["dac"] == 200 * 2 and ev["adc"] == 130 * 2
    assert ev["digital_ops"] == 130 * (1 + 2 + 1) + 130  # sums, compensation, bias; ReLU
    assert b["energy_j"]["array"] == pytest.approx(2 * 200 * 130 * e.read_device)
    assert b["energy_j"]["adc"] == pytest.approx(260 * e.adc_fom * 2**8)
    assert b["energy_j"]["dram"] == pytest.approx(200 * e.dram_per_byte)
    lat = t.read_time + ev["digital_ops"] / (t.clock * t.digital_lanes)
    assert b["latency_s"] == pytest.approx(lat)
    assert b["energy_j"]["static"] == pytest.approx(e.static_power * 8 * lat)
    assert b["utilisation"] == pytest.approx(2 * 200 * 130 / (8 * 128 * 128))
    h100 = b["baselines"]["H100 SXM"]
    assert h100["energy_j"]["compute"] == pytest.approx(b["flops"] * 700 / (989.4e12 * 0.4))


def test_replicated_conv_arrays_trade_area_for_latency_and_static_energy():
    from npusim.deploy.bill import inference_bill

    chip = load_chip("rram")
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(1024, 256))
    a = deploy(model, chip)  # the linear layer's 32 arrays leak while the conv reads 256 times
    x = torch.rand(1, 1, 16, 16)
    one, rep = inference_bill(a, chip, x), inference_bill(a, chip, x, replicate=True)
    k = rep["layers"][0]["replicas"]
    assert k > 1 and rep["arrays"] == 2 * k + 32
    assert rep["latency_s"] < one["latency_s"] and rep["total_area_m2"] > one["total_area_m2"]
    assert rep["energy_j"]["static"] < one["energy_j"]["static"]
    for term in ("array", "dac", "adc", "digital"):
        assert rep["energy_j"][term] == one["energy_j"][term]
