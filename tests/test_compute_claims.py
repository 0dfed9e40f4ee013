"""The compute claims check: equal-area and equal-power scaling in closed form, the needed
assumptions recomputed through the latency model, the CLI's report.json and its errors."""

from __future__ import annotations

import json
import math

import pytest

from npusim.chip import load_chip
from npusim.cost import H100_SXM, PHONE_NPU, npu_area, per_sample
from npusim.cost.baselines import forward_flops, training_flops
from npusim.cost.compute_claims import compute_claims, scaled_throughput
from npusim.cost.constants import CostError
from npusim.runtime.ledger import Ledger

RRAM = load_chip("rram")
SIZES = [300, 200, 10]


def ledger(sweeps: int = 12, batch: int = 8) -> Ledger:
    led = Ledger(logical_sizes=SIZES)
    for _ in range(3):
        led.relax("free", SIZES, batch, sweeps)
        led.relax("nudged+", SIZES, batch, 4)
        led.relax("nudged-", SIZES, batch, 4)
        led.update(SIZES, batch, 5000)
    return led


def test_scaled_throughput_closed_form():
    budget = {"area_m2": 800e-6, "power_w": 700.0}
    s = scaled_throughput(2e-6, 1e-6, 2e-6, budget)  # 2 µs, 1 µJ, 2 mm²: 0.5 W
    assert s["one_unit"] == pytest.approx(5e5)
    assert s["copies_equal_area"] == pytest.approx(400)
    assert s["equal_area"] == pytest.approx(400 * 5e5)
    assert s["copies_equal_power"] == pytest.approx(1400)
    assert s["equal_power"] == pytest.approx(1400 * 5e5) == pytest.approx(700 / 1e-6)


def test_equal_area_and_equal_power_ratios_against_the_gpu_and_phone():
    led = ledger()
    cc = compute_claims(led, RRAM, target_ratio=100, batch=8)
    ps = per_sample(led, RRAM)
    area = sum(npu_area(SIZES, RRAM).values())
    gpu, phone = H100_SXM.cost(SIZES, 8), PHONE_NPU.cost(SIZES, RRAM.energy.dram_per_byte)
    for kind, flops in (("train", training_flops(SIZES)), ("inference", forward_flops(SIZES))):
        e, t = sum(ps[kind]["energy_j"].values()), ps[kind]["time_s"]
        ge, gt = sum(gpu[kind]["energy_j"].values()), gpu[kind]["time_s"]
        pe, pt = sum(phone[kind]["energy_j"].values()), phone[kind]["time_s"]
        r = cc["ratios"][kind]
        # equal area: the NPU unit copied over the GPU's die; the GPU is one unit of itself
        assert r["equal_area"]["vs_gpu"] == pytest.approx(H100_SXM.die_area_m2 * gt / (area * t))
        # equal power: throughput = power budget / energy per sample, so the ratio is E_gpu/E
        assert r["equal_power"]["vs_gpu"] == pytest.approx(ge / e)
        assert r["equal_power"]["vs_phone"] == pytest.approx(pe / e)
        assert r["equal_area"]["vs_phone"] == pytest.approx(PHONE_NPU.area_m2 * pt / (area * t))
        assert r["one_unit"]["vs_gpu"] == pytest.approx(gt / t)
        npu = cc["systems"]["NPU"][kind]
        assert npu["ops_per_s"]["one_unit"] == pytest.approx(flops / t)
        assert npu["power_w"] == pytest.approx(e / t)
        c = cc["copies_needed"][kind]
        assert c["copies"] == pytest.approx(100 * t / gt)
        assert c["area_m2"] == pytest.approx(c["copies"] * area)


def test_the_settle_time_needed_gives_the_target_through_the_latency_model():
    """A settle-bound chip (slow settling, many sweeps): the settle_tau the check solves for,
    put back into the chip and priced again, gives the target ratio at equal area."""
    slow = RRAM.replace(**{"timing.settle_tau": 1e-5})
    led = ledger(sweeps=200)
    area = sum(npu_area(SIZES, slow).values())
    gt = H100_SXM.cost(SIZES, 8)["train"]["time_s"]

    def ratio(spec):
        return H100_SXM.die_area_m2 * gt / (area * per_sample(led, spec)["train"]["time_s"])

    now = ratio(slow)
    target = 20 * now
    cc = compute_claims(led, slow, target_ratio=target, batch=8)
    row = cc["needed"]["train"]["equal_area"]["timing.settle_tau"]
    need = row["needed_alone"]
    assert need is not None and need < 1e-5
    assert ratio(slow.replace(**{"timing.settle_tau": need})) == pytest.approx(target, rel=1e-6)
    assert ratio(slow.replace(**{"timing.settle_tau": need * 1.01})) < target
    assert row["verdict"].startswith("ok") == (need >= row["limit"])
    # a target out of reach by programming speed alone is infinite ("not enough alone")
    rows = cc["needed"]["train"]["equal_area"]
    assert rows["timing.pulse_width"]["needed_alone"] is None
    assert rows["timing.pulse_width"]["verdict"].startswith("NO")
    # at equal power the ratio is the energy ratio: already met targets say so
    met = compute_claims(led, slow, target_ratio=1e-9, batch=8)
    assert all(
        v["verdict"] == "met already" for v in met["needed"]["train"]["equal_power"].values()
    )


def test_refuses_a_target_out_of_range():
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(CostError, match="finite number > 0"):
            compute_claims(ledger(), RRAM, target_ratio=bad)


def write_run(path) -> None:
    led = ledger()
    path.mkdir(exist_ok=True)
    (path / "results.json").write_text(
        json.dumps({"ledger": led.to_dict(), "config": {"chip": "rram"}})
    )


def test_report_target_compute_adds_compute_claims(tmp_path, capsys):
    from npusim.cli.main import main

    write_run(tmp_path)
    assert main(["report", str(tmp_path), "--target-compute", "100"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    cc = data["compute_claims"]
    assert cc["target_ratio"] == 100 and set(cc["ratios"]) == {"train", "inference"}
    assert {p["name"] for p in cc["published"]} >= {"IBM HERMES (64-core PCM)", "Mythic M1076"}
    assert all(p["source"] for p in cc["published"])
    assert (tmp_path / "compute_claims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "Compute claim" in out and "What 100×" in out


@pytest.mark.parametrize("bad", ["0", "-5", "nan", "inf"])
def test_bad_target_compute_is_one_line_error(tmp_path, capsys, bad):
    from npusim.cli.main import main

    write_run(tmp_path)
    assert main(["report", str(tmp_path), f"--target-compute={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("npusim: error:") and "--target-compute" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "report.json").exists()


def test_a_conv_network_s_ops_are_its_arrays_flops():
    from npusim.core.interfaces import ArrayShape

    arr = [
        ArrayShape(25, 8, 576, 784, 4608, False, 0),
        ArrayShape(200, 16, 64, 1152, 1024, False, 1, ff_ops_in=4608),
        ArrayShape(1024, 10, 1, 1024, 10, True, 1),
    ]
    led = Ledger(logical_sizes=[784, 10])
    for blk in (0, 1):
        for phase in ("free", "nudged+", "nudged-"):
            led.relax(phase, arr, 8, 6, block=blk)
    led.update(arr, 8, 0)
    fwd = 576 * (2 * 25 * 8 + 8) + 64 * (2 * 200 * 16 + 16) + (2 * 1024 * 10 + 10)
    cc = compute_claims(led, RRAM, target_ratio=100, batch=8)
    assert cc["systems"]["NPU"]["train"]["ops"] == 3 * fwd
    assert cc["systems"]["NPU"]["inference"]["ops"] == fwd
    assert cc["systems"]["NPU"]["train"]["area_m2"] == pytest.approx(
        sum(npu_area(arr, RRAM).values())
    )
    gt = H100_SXM.cost(arr, 8)["train"]["time_s"]
    assert cc["systems"][H100_SXM.name]["train"]["time_s"] == pytest.approx(gt)
