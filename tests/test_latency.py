"""The latency model's closed forms on small chips (npusim.cost.latency)."""

from __future__ import annotations

import math

import pytest

from npusim.chip import load_chip
from npusim.cost import npu_cost, per_sample
from npusim.cost.latency import phase_parts, phase_times, programming_time, train_latency
from npusim.runtime.ledger import Ledger

RRAM = load_chip("rram")


def chip(**dotted):
    return RRAM.replace(**dotted)


def relaxed(sizes, batch=4, sweeps=10, phase="free", every_sweep=False) -> Ledger:
    led = Ledger(convert_every_sweep=every_sweep)
    led.relax(phase, sizes, batch, sweeps)
    return led


def test_one_tile_settles_then_reads_out():
    """One 100x50 layer on one 128x128 array: B samples x (S settle steps + one read-out)."""
    led = relaxed([100, 50], batch=4, sweeps=10)
    fast = chip(**{"timing.settle_tau": 2e-9, "timing.read_time": 1e-7})
    t = fast.timing
    # read-time bound: 50 conversions on 8 ADCs at 1.28 GS/s take 6.25 / 1.28e9 s < 100 ns
    assert phase_times(led, fast)["free"] == pytest.approx(4 * 10 * 2e-9 + 4 * t.read_time)
    # conversion bound: the same conversions at 1 MS/s
    slow = fast.replace(**{"timing.adc_rate": 1e6})
    assert phase_times(led, slow)["free"] == pytest.approx(4 * 10 * 2e-9 + 4 * 50 / 8 / 1e6)


def test_k_tiles_convert_in_parallel():
    """A layer of 32k outputs on k column tiles (32 columns each) converts in the time of one
    tile of 32 columns, k times faster than one wide tile with the same ADCs; settling is the
    same (the arrays settle together)."""
    base = {"timing.adc_rate": 1e6, "array.adcs_per_array": 4, "timing.read_time": 1e-12}
    one_narrow = phase_parts(relaxed([64, 32]), "free", chip(**base, **{"array.cols": 32}))
    for k in (2, 3, 5):
        sizes = [64, 32 * k]
        tiled = phase_parts(relaxed(sizes), "free", chip(**base, **{"array.cols": 32}))
        wide = phase_parts(relaxed(sizes), "free", chip(**base, **{"array.cols": 32 * k}))
        assert tiled.readout == pytest.approx(one_narrow.readout)
        assert tiled.readout == pytest.approx(4 * 32 / (4 * 1e6))
        assert wide.readout == pytest.approx(k * tiled.readout)
        assert tiled.settle == wide.settle == pytest.approx(4 * 10 * RRAM.timing.settle_tau)


def test_halving_adcs_doubles_the_conversion_part_when_conversion_bound():
    led = relaxed([100, 128], batch=3, sweeps=5)
    bound = chip(**{"timing.adc_rate": 1e6})
    for a in (16, 8, 4):
        full = phase_parts(led, "free", bound.replace(**{"array.adcs_per_array": a}))
        half = phase_parts(led, "free", bound.replace(**{"array.adcs_per_array": a // 2}))
        assert half.readout == pytest.approx(2 * full.readout)
        assert full.readout == pytest.approx(3 * 128 / (a * 1e6))
        assert half.settle == full.settle
    # read-time bound: fewer ADCs change nothing until their conversions outlast read_time
    fast = chip(**{"timing.adc_rate": 1e12})
    assert (
        phase_parts(led, "free", fast).readout
        == phase_parts(led, "free", fast.replace(**{"array.adcs_per_array": 4})).readout
        == pytest.approx(3 * RRAM.timing.read_time)
    )


def test_every_sweep_conversion_adds_a_read_out_to_each_sweep():
    led = relaxed([100, 50, 10], batch=2, sweeps=7, every_sweep=True)
    spec = chip(**{"timing.adc_rate": 1e6})
    # every free layer converts each sweep: 50 outputs on one array's 8 ADCs is the busiest
    per_sweep = RRAM.timing.settle_tau + max(RRAM.timing.read_time, 50 / 8 / 1e6)
    parts = phase_parts(led, "free", spec)
    assert parts.settle + parts.readout == pytest.approx(2 * 7 * per_sweep)


def update_ledger(pulses: list[int], sizes=(300, 200, 10)) -> Ledger:
    led = Ledger()
    led.relax("free", list(sizes), 1, 1)
    led.update(list(sizes), 1, pulses)
    return led


def test_rows_programmed_at_once():
    """pulses x pulse_width / (rows written at once x columns), layers in parallel."""
    led = update_ledger([60000, 2000])  # 300x200 on 3x2 tiles, 200x10 on 2x1 tiles
    pw = RRAM.timing.pulse_width
    for r in (1, 2, 8, 64):
        spec = chip(**{"array.rows_per_write": r})
        # layer 0: 3 row tiles x r rows (at most its 300 rows) x 200 columns
        t0 = 60000 * pw / (min(3 * r, 300) * 200)
        t1 = 2000 * pw / (min(2 * r, 200) * 10)
        assert programming_time(led, spec) == pytest.approx(max(t0, t1))
    one, four = (programming_time(led, chip(**{"array.rows_per_write": r})) for r in (1, 4))
    assert one == pytest.approx(4 * four)
    # every row at once: the pulses per cell, whatever the array height
    every = chip(**{"array.rows_per_write": 128})
    assert programming_time(led, every) == pytest.approx(max(60000 / 60000, 2000 / 2000) * pw)
    assert programming_time(led, chip(**{"array.rows_per_write": 65536})) == pytest.approx(
        programming_time(led, every)
    )


def training_ledger(batch: int, batches: int) -> Ledger:
    led = Ledger()
    sizes = [300, 200, 10]
    for _ in range(batches):
        led.relax("free", sizes, batch, 12)
        led.relax("nudged+", sizes, batch, 4)
        led.relax("nudged-", sizes, batch, 4)
        led.update(sizes, batch, 3000)
    return led


@pytest.mark.parametrize("clock", [1.2e9, 1e7])  # relaxation-bound, then digital-bound
def test_outer_products_pipeline_behind_the_next_relaxation(clock):
    """N samples, U updates: wall time N·max(a, d) + U·min(a, d) + U·u."""
    spec = chip(**{"timing.clock": clock})
    led = training_ledger(batch=8, batches=3)
    n, u = 24, 3
    rate = spec.timing.digital_lanes * clock
    a = sum(phase_parts(led, p, spec).busy for p in ("free", "nudged+", "nudged-")) / n
    d = led.count("digital_ops", "update") / rate / n
    upd = led.count("fp32_ops", "update") / rate + programming_time(led, spec)
    wall = n * max(a, d) + u * min(a, d) + upd
    assert (a > d) == (clock > 1e8)
    assert sum(phase_times(led, spec).values()) == pytest.approx(wall)
    got = per_sample(led, spec)["train"]
    assert got["time_s"] == pytest.approx(wall / n)
    # one sample's own path: its relaxations, its outer product, its batch's update
    assert got["latency_s"] == pytest.approx(a + d + upd / u)
    assert train_latency(led, spec) == got["latency_s"]


def test_batch_of_one_has_no_overlap():
    spec = chip(**{"timing.clock": 1e7})
    led = training_ledger(batch=1, batches=5)
    got = per_sample(led, spec)["train"]
    assert got["time_s"] == pytest.approx(got["latency_s"])
    serial = sum(phase_parts(led, p, spec).busy for p in ("free", "nudged+", "nudged-", "update"))
    assert got["time_s"] == pytest.approx(serial / 5)


def test_inference_latency_and_static_energy_follow_the_time():
    led = training_ledger(batch=4, batches=2)
    led.relax("inference", [300, 200, 10], 6, 9)
    spec = chip(**{"timing.adc_rate": 1e6})
    t = phase_parts(led, "inference", spec)
    # inference reads only the output layer: 10 values on one array's 8 ADCs
    assert t.readout == pytest.approx(6 * max(RRAM.timing.read_time, 10 / 8 / 1e6))
    got = per_sample(led, spec)["inference"]
    assert got["time_s"] == got["latency_s"] == pytest.approx(t.busy / 6)
    cost = npu_cost(led, spec)
    arrays = 3 * 2 + 2 * 1
    for p, s in cost.time_s.items():
        assert cost.energy_j[p]["static"] == pytest.approx(spec.energy.static_power * arrays * s)
    assert math.isclose(sum(cost.time_s.values()), sum(phase_times(led, spec).values()))


def test_programming_time_of_conv_arrays_uses_their_rows_and_cols():
    from npusim.core.interfaces import ArrayShape

    arr = [ArrayShape(300, 20, 576, 784, 11520, False), ArrayShape(200, 10, 1, 11520, 10, True)]
    led = Ledger()
    led.relax("free", arr, 1, 1)
    led.update(arr, 1, [60000, 2000])
    pw, spec = RRAM.timing.pulse_width, chip(**{"array.rows_per_write": 2})
    # a convolution's weights are written once, whatever its 576 uses: 3 row tiles x 2 rows
    t0 = 60000 * pw / (min(3 * 2, 300) * 20)
    t1 = 2000 * pw / (min(2 * 2, 200) * 10)
    assert programming_time(led, spec) == pytest.approx(max(t0, t1))


def test_a_convolution_settles_one_position_after_another() -> None:
    """Settle steps: per block, sweeps × the uses of its most-used array; blocks in sequence."""
    from npusim.core.interfaces import ArrayShape
    from npusim.cost.latency import settle_steps

    arrays = [
        ArrayShape(25, 8, 784, 784, 6272, False, 0),
        ArrayShape(72, 16, 196, 1568, 3136, False, 1, ff_ops_in=1568),
        ArrayShape(144, 16, 196, 3136, 3136, True, 1),
        ArrayShape(3136, 10, 1, 3136, 10, False, 2),
    ]
    led = Ledger()
    for k, sweeps in enumerate([1, 7, 1]):
        led.relax("free", arrays, 2, sweeps, block=k)
    assert settle_steps(led, "free") == 2 * 1 * 784 + 2 * 7 * 196 + 2 * 1 * 1
    dense = Ledger()
    dense.relax("free", [784, 100, 10], 3, 15)
    assert settle_steps(dense, "free") == dense.count("sweeps", "free") == 45
