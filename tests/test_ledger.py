"""Ledger counts equal closed-form counts; persistence and merging are exact."""

import json
import time

import pytest

from npusim.runtime.ledger import Ledger

SIZES = [5, 7, 3]
B, S = 4, 6


def params(sizes):
    return [a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False)]


def test_relax_counts_match_closed_form():
    led = Ledger()
    led.relax("free", SIZES, B, S)
    assert led.layers["free"]["macs"] == [B * S * 5 * 7, B * S * 2 * 7 * 3]
    assert led.count("macs", "free") == B * S * (5 * 7 + 2 * 7 * 3)
    assert led.layers["free"]["node_sweeps"] == [B * S * 7, B * S * 3]
    assert led.layers["free"]["dac"] == [B * 5, 0]
    assert led.layers["free"]["adc"] == [B * 7, B * 3]
    assert led.count("bytes_mem", "free") == B * 5
    assert led.count("samples", "free") == B and led.count("sweeps", "free") == B * S
    # one read-out per relaxation: every cell conducts for one integration
    assert led.layers["free"]["device_reads"] == [B * 5 * 7, B * 7 * 3]
    led.relax("nudged+", SIZES, B, 2)
    assert led.layers["nudged+"]["dac"] == [B * 5, B * 3]
    assert led.count("fp32_ops", "nudged+") == 2 * B * 3  # output error and × beta
    assert led.count("digital_ops", "nudged+") == 0
    assert led.count("samples", "nudged+") == 0  # a nudged phase re-uses the same samples
    led.relax("inference", SIZES, B, S)
    assert led.layers["inference"]["adc"] == [0, B * 3]
    assert led.layers["inference"]["device_reads"] == [B * 5 * 7, B * 7 * 3]
    assert led.count("digital_ops", "inference") == B * 3
    assert led.training_samples == B and led.inference_samples == B
    assert led.mean_sweeps("free") == S


def test_convert_every_sweep_counts():
    led = Ledger(convert_every_sweep=True, word_bytes=2)
    led.relax("free", SIZES, B, S)
    assert led.layers["free"]["adc"] == [B * S * 7, B * S * 3]
    assert led.layers["free"]["dac"] == [B * S * 7 + B * 5, B * S * 3]
    assert led.count("bytes_tile", "free") == 2 * (led.count("adc") + led.count("dac"))
    assert led.layers["free"]["device_reads"] == [B * S * 5 * 7, B * S * 7 * 3]


def test_update_counts_and_pulses():
    led = Ledger()
    led.update(SIZES, B, 0)  # ideal device: one pulse-equivalent per parameter
    assert led.layers["update"]["pulses"] == params(SIZES)
    assert led.layers["update"]["digital_ops"] == [p * 2 * B for p in params(SIZES)]
    assert led.layers["update"]["fp32_ops"] == params(SIZES)  # one scale-and-quantise each
    assert led.count("reset_pulses") == 0
    led.update(SIZES, B, 1000)
    assert led.count("pulses") == sum(params(SIZES)) + 1000
    led.update(SIZES, B, [3, 4])
    assert (
        led.layers["update"]["pulses"][1]
        == params(SIZES)[1] + 1000 - (1000 * params(SIZES)[0] // sum(params(SIZES))) + 4
    )
    assert led.count("updates", "update") == 3
    outer = Ledger(update_mode="coincidence")  # formed in the array: counts what it reports
    ev = {"pulse_slots": [10, 20], "coincidences": [3, 4], "sample_hold": [5, 6],
          "slot_cycles": [7, 8], "bias_coincidences": [1, 2]}  # fmt: skip
    outer.update(SIZES, B, [3, 4], measured=True, in_array=ev)
    for name in ("pulse_slots", "coincidences", "sample_hold", "slot_cycles"):
        assert outer.layers["update"][name] == ev[name]
    assert outer.layers["update"]["fp32_ops"] == [4 * B * 2, 4 * B * 3]  # trains' gains
    assert outer.layers["update"]["digital_ops"] == [1, 2]  # bias-row increments only
    assert outer.count("bytes_tile") == 0
    resets = Ledger()
    resets.update(SIZES, B, 100, reset_pulses=10)
    assert resets.count("pulses") == 100 and resets.count("reset_pulses") == 10
    resets.update(SIZES, B, [5, 6], reset_pulses=[1, 2])
    assert (
        resets.layers["update"]["reset_pulses"][1]
        == 10 - 10 * params(SIZES)[0] // sum(params(SIZES)) + 2
    )


def test_a_ledger_saved_without_the_newer_counters_resumes():
    led = Ledger()
    led.relax("free", SIZES, B, S)
    led.update(SIZES, B, 7)
    old = led.to_dict()
    for lay in old["layers"].values():
        for c in ("reset_pulses", "fp32_ops", "device_reads"):
            del lay[c]
    del old["device_resets_seen"]
    resumed = Ledger.from_dict(old)
    resumed.relax("free", SIZES, B, S)
    assert resumed.count("device_reads") == B * (5 * 7 + 7 * 3)
    assert resumed.count("reset_pulses") == 0


def test_persistence_continues_exactly_and_merge_adds():
    full, part = Ledger(), Ledger()
    for led in (full, part):
        led.relax("free", SIZES, B, S, settle_s=1e-8)
        led.update(SIZES, B, 7)
        led.add_circuit_power("free", 0.25)
    resumed = Ledger.from_dict(json.loads(json.dumps(part.to_dict())))
    for led in (full, resumed):
        led.relax("free", SIZES, B, S, settle_s=1e-8)
        led.update(SIZES, B, 7)
    assert resumed.to_dict() == full.to_dict()
    double = Ledger.from_dict(full.to_dict()).merge(full)
    assert double.count("macs") == 2 * full.count("macs")
    assert double.count("settle_s") == pytest.approx(2 * full.count("settle_s"))


def test_errors_name_the_problem():
    led = Ledger()
    with pytest.raises(ValueError, match="unknown phase"):
        led.relax("warmup", SIZES, 1, 1)
    led.relax("free", SIZES, 1, 1)
    with pytest.raises(ValueError, match="differ"):
        led.relax("free", [5, 8, 3], 1, 1)
    with pytest.raises(ValueError, match="unknown ledger keys"):
        Ledger.from_dict({"bogus": 1})


def test_counting_is_cheap():
    led = Ledger()
    t0 = time.perf_counter()
    for _ in range(1000):
        led.relax("free", [1568, 1024, 10], 32, 20)
        led.relax("nudged+", [1568, 1024, 10], 32, 4)
        led.update([1568, 1024, 10], 32, 0)
    per_step = (time.perf_counter() - t0) / 1000
    assert per_step < 1e-3  # one relaxation of a 784-1024-10 batch alone takes ~ms


def test_training_step_from_an_eqprop_estimate():
    circuits = pytest.importorskip("npusim.circuits")
    estimators = pytest.importorskip("npusim.learning.estimators")
    torch = pytest.importorskip("torch")
    net = circuits.DeepResistive([4, 6, 3], seed=0)
    x = torch.rand(5, 4)
    target = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    est = estimators.EqProp(beta=0.1, sweeps=5, free_sweeps=7)(net, x, target)

    class Synapses:
        total_pulses = 123
        reset_pulses = 20

    led = Ledger(power_scale_w=2.0, power_samples=5, power_every=2)
    led.training_step(net, est, 5, x=x, synapses=Synapses())
    ref = Ledger()
    ref.relax("free", net.sizes, 5, 7)
    ref.relax("nudged+", net.sizes, 5, 5)
    ref.relax("nudged-", net.sizes, 5, 5)
    ref.update(net.sizes, 5, 123, reset_pulses=20)
    assert led.layers == ref.layers
    assert led.logical_sizes == [4, 6, 3] and led.sizes == [8, 6, 3]
    p_free = float(net.dissipated_power(x, est.phases["free"].state).sum())
    assert led.count("power_w_samples", "free") == pytest.approx(2.0 * p_free, rel=1e-5)
    assert led.count("power_measured", "free") == 5
    led.training_step(net, est, 5, x=x, synapses=Synapses())  # no new pulses since last step
    assert led.count("pulses") == 123 and led.count("reset_pulses") == 20
    led.training_step(net, est, 5, x=x)  # ideal synapses: one pulse-equivalent per parameter
    assert led.count("pulses") == 123 + sum(params(net.sizes))
    assert led.count("power_measured", "free") == 10  # steps 0 and 2 of every 2
    restored = Ledger()
    restored.load_dict(led.to_dict())
    assert restored.to_dict() == led.to_dict()


@pytest.mark.parametrize(
    "change, names",
    [
        ({"sizes": [5, -7, 3]}, "sizes"),
        ({"word_bytes": "1"}, "word_bytes"),
        ({"update_mode": "magic"}, "update_mode"),
        ({"power_scale_w": float("nan")}, "power_scale_w"),
        ({"layers": {"warmup": {}}}, "unknown phases"),
        ({"layers": {"free": {"macs": [1]}}}, "layers.free.macs"),
        ({"layers": {"free": {"macs": [1, -2]}}}, "layers.free.macs"),
        ({"layers": {"free": {"bogus": [1, 2]}}}, "layers.free.bogus"),
        ({"phases": {"free": {"settle_s": float("inf")}}}, "phases.free.settle_s"),
        ({"phases": {"free": {"samples": 2.5}}}, "phases.free.samples"),
        ({"phases": []}, "phases"),
    ],
)
def test_a_malformed_saved_ledger_is_one_error_naming_the_entry(change, names):
    from npusim.core.errors import NpusimError
    from npusim.runtime.ledger import LedgerError

    led = Ledger()
    led.relax("free", SIZES, B, S)
    with pytest.raises(LedgerError, match=names.replace(".", r"\.")) as info:
        Ledger.from_dict({**led.to_dict(), **change})
    assert isinstance(info.value, NpusimError)
    with pytest.raises(LedgerError, match="JSON object"):
        Ledger.from_dict([1, 2])


# ---- networks of arrays: convolutions and several energy-based blocks --------------------------
def conv_arrays():
    from npusim.core.interfaces import ArrayShape

    return [
        ArrayShape(25, 8, 576, 784, 4608, False, 0),  # 5x5 conv 1->8 on 28x28: 24x24 positions
        ArrayShape(72, 8, 576, 4608, 4608, True, 0),  # 3x3 conv 8->8, fed back
        ArrayShape(200, 16, 64, 1152, 1024, False, 1, ff_ops_in=4608),  # after 2x2 pooling
        ArrayShape(1024, 10, 1, 1024, 10, True, 1),  # dense read-out
    ]


def test_conv_blocks_relax_counts_match_closed_form():
    arr = conv_arrays()
    led = Ledger()
    led.relax("free", arr, B, S, block=0)
    lay = led.layers["free"]
    assert lay["macs"] == [B * S * 576 * 25 * 8, B * S * 2 * 576 * 72 * 8, 0, 0]
    assert lay["device_reads"] == [B * 576 * 25 * 8, B * 576 * 72 * 8, 0, 0]
    assert lay["node_sweeps"] == [B * S * 4608, B * S * 4608, 0, 0]
    assert lay["dac"] == [B * 784, 0, 0, 0] and lay["adc"] == [B * 4608, B * 4608, 0, 0]
    assert lay["bytes_mem"] == [B * 784, 0, 0, 0] and lay["digital_ops"] == [0, 0, 0, 0]
    led.relax("free", arr, B, 3, block=1)
    assert lay["macs"][2:] == [B * 3 * 64 * 200 * 16, B * 3 * 2 * 1024 * 10]
    assert lay["dac"] == [B * 784, 0, B * 1152, 0]  # block 1's input through DACs
    assert lay["adc"] == [B * 4608, B * 4608, B * 1024, B * 10]
    assert lay["digital_ops"] == [0, 0, B * 4608, 0]  # the pooling before block 1
    assert lay["bytes_mem"] == [B * 784, 0, 0, 0]  # only the network's input from memory
    assert led.count("samples", "free") == B  # one forward pass through both blocks
    assert led.count("relaxations", "free") == 2 * B
    assert led.count("sweeps", "free") == B * (S + 3)
    assert led.sizes == [784, 4608, 4608, 1024, 10]
    for blk in (1, 0):  # each block nudged at its own last layer
        led.relax("nudged+", arr, B, 2, block=blk)
    nud = led.layers["nudged+"]
    assert nud["dac"] == [B * 784, B * 4608, B * 1152, B * 10]
    assert nud["fp32_ops"] == [0, 2 * B * 4608, 0, 2 * B * 10]
    assert nud["digital_ops"] == [0, 0, B * 4608, 0]
    assert led.count("samples", "nudged+") == 0 and led.count("bytes_mem", "nudged+") == 0
    led.relax("inference", arr, B, S)  # every block at once
    inf = led.layers["inference"]
    assert inf["adc"] == [0, B * 4608, 0, B * 10]  # each block's last layer is read
    assert inf["digital_ops"] == [0, 0, B * 4608, B * 10]  # pooling, argmax
    assert led.inference_samples == B and led.count("relaxations", "inference") == B
    with pytest.raises(ValueError, match="block 2"):
        led.relax("free", arr, B, S, block=2)
    with pytest.raises(ValueError, match="differ"):
        led.relax("free", [784, 4608, 10], B, S)


def test_conv_update_counts_match_closed_form():
    arr = conv_arrays()
    led = Ledger()
    led.update(arr, B, 0)
    lay = led.layers["update"]
    prm = [25 * 8 + 8, 72 * 8 + 8, 200 * 16 + 16, 1024 * 10 + 10]
    assert lay["digital_ops"] == [
        2 * B * 576 * 25 * 8 + 2 * B * 8,  # the outer product summed over positions
        2 * B * 576 * 72 * 8 + 2 * B * 8,
        2 * B * 64 * 200 * 16 + 2 * B * 16,
        2 * B * 1024 * 10 + 2 * B * 10,
    ]
    assert lay["fp32_ops"] == prm and lay["pulses"] == prm and lay["params_written"] == prm
    assert lay["bytes_tile"] == [
        2 * B * (784 + 4608),
        2 * B * (4608 + 4608),
        2 * B * (1152 + 1024),
        2 * B * (1024 + 10),
    ]
    outer = Ledger(update_mode="coincidence")
    ev = {k: [1, 2, 3, 4] for k in ("pulse_slots", "coincidences", "sample_hold", "slot_cycles")}
    outer.update(
        arr,
        B,
        [1, 1, 1, 1],
        measured=True,
        in_array={**ev, "bias_coincidences": ev["coincidences"]},
    )
    assert outer.layers["update"]["fp32_ops"] == [4 * B * 2, 4 * B * 3, 4 * B * 2, 4 * B * 3]


def test_training_step_counts_each_block_of_an_estimate():
    import torch

    from npusim.core.interfaces import GradientEstimate, Relaxation

    arr = conv_arrays()

    class Hybrid:
        arrays = arr
        sizes = [784, 4608, 4608, 1024, 10]
        logical_sizes = [784, 10]

    def rel(sweeps):
        return Relaxation([torch.zeros(1)], 0.0, sweeps)

    blocks = [
        {"free": rel(9), "nudged+": rel(3), "nudged-": rel(3)},
        {"free": rel(5), "nudged+": rel(2), "nudged-": rel(2)},
    ]
    est = GradientEstimate(grads=[], free=rel(5), blocks=blocks)
    led = Ledger(power_scale_w=1.0)
    led.training_step(Hybrid(), est, B, x=torch.zeros(B, 784))
    ref = Ledger()
    for k, phases in enumerate(blocks):
        for phase, r in phases.items():
            ref.relax(phase, arr, B, r.sweeps, block=k)
    ref.update(arr, B, 0)
    assert led.layers == ref.layers and led.phases == ref.phases
    assert led.count("power_measured") == 0  # circuit power: single-block networks only
    assert led.training_samples == B and led.logical_sizes == [784, 10]


@pytest.mark.parametrize(
    "mode", [{}, {"convert_every_sweep": True}, {"update_mode": "coincidence"}]
)
def test_a_layered_network_counts_the_same_as_sizes_or_arrays(mode):
    from npusim.core.interfaces import dense_arrays

    sizes = [5, 7, 4, 3]
    ev = {k: [1, 2, 3] for k in ("pulse_slots", "coincidences", "sample_hold", "slot_cycles")}
    in_array = {**ev, "bias_coincidences": [1, 1, 1]} if mode.get("update_mode") else None
    ledgers = []
    for net, block in ((sizes, None), (dense_arrays(sizes), None), (dense_arrays(sizes), 0)):
        led = Ledger(word_bytes=2, **mode)
        for phase, sweeps in (("free", S), ("nudged+", 2), ("nudged-", 2), ("inference", S)):
            led.relax(phase, net, B, sweeps, settle_s=1e-8, block=block)
        led.update(net, B, 17, rule_events={"fp32_ops": 9}, in_array=in_array)
        ledgers.append(led.to_dict())
    assert ledgers[0] == ledgers[1] == ledgers[2]
    assert ledgers[0]["sizes"] == sizes


def test_an_old_saved_ledger_without_arrays_loads_as_a_layered_network():
    from npusim.core.interfaces import dense_arrays

    led = Ledger()
    led.relax("free", SIZES, B, S)
    old = led.to_dict()
    del old["arrays"]
    resumed = Ledger.from_dict(old)
    assert resumed.arrays == dense_arrays(SIZES)
    resumed.relax("free", SIZES, B, S)
    led.relax("free", SIZES, B, S)
    assert resumed.to_dict() == led.to_dict()


def test_a_conv_ledger_persists_and_merges_exactly():
    arr = conv_arrays()
    led = Ledger()
    led.relax("free", arr, B, S, block=0)
    led.update(arr, B, 11)
    back = Ledger.from_dict(json.loads(json.dumps(led.to_dict())))
    assert back.arrays == arr and back.to_dict() == led.to_dict()
    assert back.merge(led).count("macs") == 2 * led.count("macs")
    other = Ledger()
    other.relax("free", [784, 10], 1, 1)
    with pytest.raises(ValueError, match="cannot merge"):
        back.merge(other)


@pytest.mark.parametrize(
    "arrays, names",
    [
        ("4x4", "arrays"),
        ([7], r"arrays\[0\]"),
        ([{"rows": 2}], r"arrays\[0\]: unknown keys \[\], missing keys"),
        ([{"bogus": 1}], r"arrays\[0\]: unknown keys \['bogus'\]"),
        ([dict(rows=0, cols=2, uses=1, in_units=2, out_units=2, fed_back=False)], r"rows"),
        ([dict(rows=2, cols=2, uses=1, in_units=2, out_units=2, fed_back=1)], r"fed_back"),
        (
            [dict(rows=2, cols=2, uses=1, in_units=2, out_units=2, fed_back=False, block=-1)],
            "block",
        ),
        ([dict(rows=2, cols=2, uses=1, in_units=2, out_units=2, fed_back=False)], "sizes"),
    ],
)
def test_a_corrupt_arrays_entry_is_a_ledger_error(arrays, names):
    from npusim.runtime.ledger import LedgerError

    led = Ledger()
    led.relax("free", SIZES, B, S)  # 2 arrays, sizes of 3 layers
    with pytest.raises(LedgerError, match=names):
        Ledger.from_dict({**led.to_dict(), "arrays": arrays})


def test_the_sizes_of_a_conv_ledger_stand_for_its_arrays():
    arr = conv_arrays()
    led, ref = Ledger(), Ledger()
    for one in (led, ref):
        one.relax("free", arr, B, S, block=0)
    led.relax("inference", [784, 4608, 4608, 1024, 10], B, S)  # a caller holding sizes only
    ref.relax("inference", arr, B, S)
    assert led.to_dict() == ref.to_dict()
