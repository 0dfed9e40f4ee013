"""`npusim edge`: streams (closed forms), the class-incremental stream and the replay buffer,
energy per update from the ledger's counts × the chip's constants, adaptation against the
frozen chip on a seeded small case, edge.json and one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from npusim.chip import load_chip
from npusim.cli.main import main
from npusim.core.phases import Phase
from npusim.data.datasets import load_dataset
from npusim.edge import (
    ReplayBuffer,
    Shift,
    buffer_capacity_bytes,
    learn_on_edge,
    lifetime_s,
    make_stream,
)
from npusim.edge.streams import elastic, rotate_scale, sensor_noise, smooth_field
from npusim.runtime import Ledger, TrainConfig, Trainer
from npusim.runtime.config import ConfigError
from npusim.runtime.run import train_run

FIVE = [0, 1, 2, 3, 4]


def _train(folder, **extra):
    cfg = TrainConfig(dataset="digits", hidden=[16], epochs=3, chip="rram", **extra)
    train_run(cfg, folder, ledger=Ledger(), progress=False, log=lambda s: None)
    return folder


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    """A small rram run on every digit (digits, 64-16-10, 3 epochs, seed 0)."""
    return _train(tmp_path_factory.mktemp("edge") / "all")


@pytest.fixture(scope="module")
def run_five(tmp_path_factory):
    """The same run on the digits 0-4 only."""
    return _train(tmp_path_factory.mktemp("edge") / "five", classes=FIVE)


# ---- streams -----------------------------------------------------------------------------------
def test_stream_transforms_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 8 * 8, generator=g)
    n = len(x)
    # no rotation, unit scale, no displacement: the images themselves
    same = rotate_scale(x, (8, 8), torch.zeros(n), torch.ones(n))
    assert torch.allclose(same, x, atol=1e-6)
    assert torch.allclose(elastic(x, (8, 8), torch.zeros(n, 8, 8, 2)), x, atol=1e-6)
    # a quarter turn of a square image moves every pixel exactly: torch.rot90
    quarter = rotate_scale(x, (8, 8), torch.full((n,), math.pi / 2), torch.ones(n))
    turned = torch.rot90(x.view(n, 8, 8), 1, (1, 2)).reshape(n, -1)
    flipped = torch.rot90(x.view(n, 8, 8), -1, (1, 2)).reshape(n, -1)
    assert min((quarter - turned).abs().max(), (quarter - flipped).abs().max()) < 1e-5
    # a displacement of one pixel width (2/8 normalised units) shifts the image by one pixel
    shift = torch.zeros(n, 8, 8, 2)
    shift[..., 0] = 2 / 8
    moved = elastic(x, (8, 8), shift).view(n, 8, 8)
    assert torch.allclose(moved[:, :, :-1], x.view(n, 8, 8)[:, :, 1:], atol=1e-6)
    assert moved[:, :, -1].abs().max() < 1e-6  # zero outside
    # noise: without per-sample noise it is the clipped fixed pattern
    pattern = torch.linspace(-0.5, 0.5, 64)
    assert torch.equal(sensor_noise(x, pattern, 0.0, g), (x + pattern).clamp(0, 1))
    # a smoothed field has the RMS displacement asked for (fraction of the width)
    field = smooth_field(3, (28, 28), 0.15, 0.1, g)
    rms = field.pow(2).sum(-1).mean((1, 2)).sqrt() / 2
    assert torch.allclose(rms, torch.full((3,), 0.1), rtol=1e-5)


def test_streams_are_seeded_and_shifted():
    data = load_dataset("digits")
    a = make_stream("writer", data, None, 50, seed=3)
    b = make_stream("writer", data, None, 50, seed=3)
    c = make_stream("writer", data, None, 50, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.new_x, b.new_x)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(a.old_x, data.x_test)  # the original distribution, unchanged
    for name in ("rotate", "writer", "noise"):  # the held-out new set is the test split, moved
        s = make_stream(name, data, None, 10, seed=0)
        assert torch.equal(s.new_y, data.y_test)
        assert (s.new_x - data.x_test).abs().mean() > 0.05, name
        assert s.x.min() >= 0 and s.x.max() <= 1


def test_class_incremental_stream_labels_and_replay_buffer_size():
    data = load_dataset("digits")
    s = make_stream("classes", data, FIVE, 1000, seed=1)  # more than the split holds: cycled
    assert len(s.y) == 1000 and set(s.y.tolist()) == {5, 6, 7, 8, 9}
    assert set(s.new_y.tolist()) == {5, 6, 7, 8, 9} and set(s.old_y.tolist()) == set(FIVE)
    assert len(s.new_y) + len(s.old_y) == len(data.y_test)
    assert set(s.pool_y.tolist()) == set(FIVE)
    buf = ReplayBuffer.draw(s.pool_x, s.pool_y, 37, seed=1)
    assert len(buf) == 37 and set(buf.y.tolist()) <= set(FIVE)
    assert len({tuple(r) for r in buf.x.tolist()}) == len(torch.unique(buf.x, dim=0))
    assert buf.bytes == 37 * (64 + 1)  # one byte per pixel code and one per label
    seen = [int(buf.next()[1]) for _ in range(74)]
    assert seen[:37] == buf.y.tolist() and seen[37:] == seen[:37]  # in turn
    # the ISAAC tile buffer: 64 KiB per 96 arrays, 1024 arrays -> 11 buffers
    assert buffer_capacity_bytes(load_chip("rram")) == 11 * 64 * 1024


def test_classes_option_trains_on_a_subset():
    tr = Trainer(TrainConfig(dataset="digits", hidden=[8], classes=[2, 7]))
    for split in ("train", "val", "test"):
        assert set(tr.data.split(split)[1].tolist()) == {2, 7}
    assert tr.model.sizes[-1] == 10  # one output per class of the dataset
    from npusim.cli.main import build_parser
    from npusim.cli.options import config_from_args

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--classes", "0-4"]))
    assert cfg.classes == FIVE
    assert config_from_args(parser.parse_args(["train", "--classes", "0-2,7"])).classes == [
        0, 1, 2, 7,
    ]  # fmt: skip
    with pytest.raises(SystemExit):  # not a list of integers
        parser.parse_args(["train", "--classes", "zero-4"])
    with pytest.raises(ConfigError, match="2 to 10 integers"):  # an empty range
        config_from_args(parser.parse_args(["train", "--classes", "4-0"]))
    with pytest.raises(ConfigError, match="each class once"):
        TrainConfig(dataset="digits", classes=[2, 2]).resolved()
    with pytest.raises(ConfigError, match="classes"):
        TrainConfig(dataset="digits", classes=[3, 10]).resolved()


def test_lifetime_closed_form():
    before, after = torch.tensor([0, 40, 7]), torch.tensor([10, 50, 7])
    # 10 updates at 2 updates/s: the first two devices take 2 pulses/s, the third none
    mean, first = lifetime_s(before, after, 10, 2.0, endurance=100)
    assert first == pytest.approx((100 - 50) / 2.0)
    assert mean == pytest.approx((90 + 50 + 93) / 3 / (4 / 3))
    assert lifetime_s(before, after, 10, 2.0, math.inf) == (math.inf, math.inf)


# ---- energy, accuracy, files -------------------------------------------------------------------
def test_energy_per_update_is_the_ledgers_counts_times_the_chips_constants(run_five):
    res = learn_on_edge(
        run_five, "classes", 0.02, samples=24, replay=5, every=8, seed=0, baselines=False
    )
    spec = load_chip("rram")
    e, a, t, d = spec.energy, spec.array, spec.timing, spec.device
    led = Ledger.from_dict(res["ledger"])
    count = {c: sum(led.count(c, p) for p in led.phases) for c in led.totals()}
    g_mid = (d.g_min + d.g_max) / 2
    amplifiers_w = e.amplifier_power * spec.amplifier.per_array / a.cols  # per column
    arrays = math.ceil(64 / a.rows) * math.ceil(16 / a.cols) + 1  # 64x16 and 16x10 tiles
    dynamic = (
        count["macs"] * a.read_voltage**2 * g_mid * t.settle_tau
        + count["device_reads"] * e.read_device
        + count["node_sweeps"] * t.settle_tau * amplifiers_w
        + count["dac"] * e.dac_fom * 2**spec.converters.dac_bits
        + count["adc"] * e.adc_fom * 2**spec.converters.adc_bits
        + (count["pulses"] - count["reset_pulses"]) * e.program_pulse
        + count["reset_pulses"] * e.reset_pulse
        + count["digital_ops"] * e.digital_mac
        + count["fp32_ops"] * e.digital_fp32_op
        + count["bytes_tile"] * e.sram_per_byte
        + count["bytes_mem"] * e.dram_per_byte
    )
    static = e.static_power * arrays * res["time_per_update_s"] * 24
    assert res["energy_per_update_j"] == pytest.approx((dynamic + static) / 24, rel=1e-9)
    assert res["energy_per_update_breakdown_j"]["static"] == pytest.approx(static / 24)
    # the ledger counted the stream and its replays, and nothing else
    n_steps = 24 + 24
    assert count["samples"] == n_steps and count["updates"] == n_steps
    assert led.count("bytes_mem", Phase.FREE) == 24 * 64  # only stream samples come off chip
    assert res["replay"]["replayed"] == 24 and res["replay"]["sram_bytes"] == 5 * 65
    assert res["replay"]["fill_energy_j"] == pytest.approx(5 * 65 * e.sram_per_byte)
    # its pulses are the devices' pulses during the stream
    assert count["pulses"] > 0
    per_device = res["pulses_per_device_per_update"]["mean"]
    devices = 2 * (64 * 16 + 16 * 10)  # differential pairs
    assert per_device * devices * 24 == pytest.approx(count["pulses"], rel=1e-9)
    # the rate: the power budget over the energy, capped by the time per update
    rate = min(0.02 / res["energy_per_update_j"], 1 / res["time_per_update_s"])
    assert res["updates_per_s"] == pytest.approx(rate)
    curve = res["curve"]
    assert curve["samples"] == [0, 8, 16, 24] and curve["energy_per_update_j"][0] is None
    mean_interval = sum(curve["energy_per_update_j"][1:]) / 3
    assert mean_interval == pytest.approx(res["energy_per_update_j"], rel=1e-6)


def test_frozen_chip_is_below_the_adapting_chip(run_all):
    """Digits rotated 25-45 degrees and shrunk: 300 samples at batch 1 lift the rram chip's
    accuracy on held-out rotated digits at least 15 points above the frozen chip's."""
    res = learn_on_edge(run_all, "rotate", 0.02, samples=300, seed=0, lr_scale=0.1)
    frozen = res["baselines"]["frozen_chip"]["curve"]["accuracy_new"][-1]
    assert frozen == res["accuracy_new_start"]
    assert res["accuracy_new"] >= frozen + 0.15, (frozen, res["curve"]["accuracy_new"])
    phone = res["baselines"]["phone_npu_backprop"]
    assert phone["accuracy_new"] >= frozen + 0.15  # backprop adapts too
    assert phone["energy_per_update_j"] > 0 and phone["updates_per_s"] > 0


def test_an_in_array_run_learns_on_the_edge_with_in_array_updates(run_all, tmp_path):
    """A run trained with --outer-product coincidence keeps forming its updates in the array on
    the edge: no per-parameter scale-and-quantise (a digital update's fp32 operation per
    parameter), so less energy per update than the digital run; the backprop baseline still
    runs (digitally)."""
    coinc = _train(tmp_path / "coinc", outer_product="coincidence")
    params = 64 * 16 + 16 + 16 * 10 + 10
    digital = learn_on_edge(run_all, "noise", 0.02, samples=10, baselines=False)
    res = learn_on_edge(coinc, "noise", 0.02, samples=10)
    led, led_d = Ledger.from_dict(res["ledger"]), Ledger.from_dict(digital["ledger"])
    assert led.update_mode == "coincidence" and led_d.update_mode == "digital"
    assert led_d.count("fp32_ops", Phase.UPDATE) >= 10 * params
    assert led.count("fp32_ops", Phase.UPDATE) < params
    assert led.count("pulse_slots", Phase.UPDATE) > 0
    assert res["energy_per_update_j"] < digital["energy_per_update_j"]
    assert "phone_npu_backprop" in res["baselines"]


def test_cli_writes_edge_json_and_plots(run_five, tmp_path, capsys):
    out = tmp_path / "edge"
    code = main(
        ["edge", str(run_five), "--stream", "classes", "--power", "20mW", "--samples", "20",
         "--replay", "10", "--out", str(out), "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    res = json.loads((out / "edge.json").read_text())
    for key in ("energy_per_update_j", "updates_per_s", "lifetime_years", "accuracy_new",
                "accuracy_old", "forgetting", "pulses_per_device_per_update"):  # fmt: skip
        assert key in res, key
    c = res["curve"]
    assert len(c["samples"]) == len(c["accuracy_new"]) == len(c["accuracy_old"]) == 11
    assert res["power_w"] == pytest.approx(0.02) and res["replay"]["samples"] == 10
    assert res["lifetime_years"] > 0 and res["energy_per_update_j"] > 0
    for png in ("edge_accuracy.png", "edge_energy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mJ per 1,000 updates" in capsys.readouterr().out


@pytest.mark.parametrize("power", ["20 mW", "0.02W", "20mW", "2e-2 W"])
def test_power_units_parse(power):
    from npusim.cli.edge_command import power_arg

    assert power_arg(power) == pytest.approx(0.02)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stream", "spin"], "invalid choice: 'spin'"),
        (["--power", "20 mV"], "wrong unit 'mV'"),
        (["--power", "20"], "wrong unit 'none'"),
        (["--power", "0 W"], "expected a power > 0"),
        (["--replay", "-3"], "expected an integer >= 0"),
        (["--samples", "0"], "expected an integer >= 1"),
    ],
)
def test_bad_options_are_one_error_line(run_five, tmp_path, capsys, args, message):
    base = {"--stream": "classes", "--power": "20mW"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["edge", str(run_five), "--out", str(tmp_path / "o")]
    for flag, value in base.items():
        argv += [flag, value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_runs_are_one_error_line(run_all, run_five, tmp_path, capsys):
    cases = [
        ([str(tmp_path), "--stream", "rotate"], "no checkpoint.pt"),
        ([str(run_all), "--stream", "classes"], "trained on all of them"),
        ([str(run_five), "--stream", "classes", "--replay", "100000"], "--replay 100000"),
    ]
    for argv, message in cases:
        code = main(["edge", *argv, "--power", "20mW", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o" / "edge.json").exists()


def test_replay_larger_than_the_chips_buffer_is_refused():
    from npusim.edge import EdgeError
    from npusim.edge.replay import check_buffer_fits

    x, y = torch.zeros(2000, 64), torch.zeros(2000, dtype=torch.long)
    small = load_chip("rram").replace(**{"array.tiles": 8})  # one buffer of 64 KiB
    assert buffer_capacity_bytes(small) // 65 == 1008  # samples of 64 + 1 B
    check_buffer_fits(ReplayBuffer.draw(x, y, 1008, seed=0), small)
    with pytest.raises(EdgeError, match="at most 1008 samples"):
        check_buffer_fits(ReplayBuffer.draw(x, y, 1009, seed=0), small)
    with pytest.raises(EdgeError, match="--replay 2001"):
        ReplayBuffer.draw(x, y, 2001, seed=0)


def test_shift_settings_are_reported():
    for name in ("rotate", "writer", "noise"):
        assert Shift(name, (8, 8), 0).settings()
    assert Shift("classes", (8, 8), 0).settings() == {}
