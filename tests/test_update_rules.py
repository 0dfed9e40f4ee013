"""Update rules (``sgd``, ``mixed``, ``ttv2``, ``cttv2``, ``agad``): what each delivers on an
ideal device, that each beats ``sgd`` on a noisy asymmetric device, that each prices its
extra work in the ledger, and that each resumes exactly."""

from __future__ import annotations

import pytest
import torch

from npusim.chip import ChipSpec, load_chip
from npusim.core.interfaces import Synapses
from npusim.core.outer import OuterProduct
from npusim.cost import per_sample
from npusim.devices import (
    UPDATE_RULES,
    IdealSynapses,
    MixedPrecisionSynapses,
    TikiTakaSynapses,
    make_synapses,
)
from npusim.runtime import Ledger, TrainConfig, Trainer

RULES = ("sgd", "mixed", "ttv2", "cttv2", "agad")
TT = ("ttv2", "cttv2", "agad")

# a noise-free, linear, symmetric device with ideal converters: every pulse is one step
LINEAR: ChipSpec = load_chip("rram").replace(
    **{
        "device.nonlinearity_up": 0.0,
        "device.nonlinearity_down": 0.0,
        "device.write_noise": 0.0,
        "device.read_noise": 0.0,
        "device.d2d_step": 0.0,
        "device.d2d_bounds": 0.0,
        "device.d2d_asymmetry": 0.0,
        "device.stuck_min_fraction": 0.0,
        "device.stuck_max_fraction": 0.0,
        "device.refresh": False,
        "converters.adc_bits": 0,
    }
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small arrays: one thread avoids the kernel's parallel start-up cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _w(seed: int = 0, shape: tuple[int, int] = (12, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def test_the_registry_names_every_rule_and_each_is_a_synapses() -> None:
    assert tuple(UPDATE_RULES) == RULES
    for rule in RULES:
        syn = make_synapses(load_chip("rram-gong2018"), [_w(), torch.zeros(6)], [True, True], 0,
                            update=rule)  # fmt: skip
        assert isinstance(syn, Synapses)
        assert isinstance(syn.periphery_events(), dict)
    ideal = make_synapses(load_chip("ideal"), [_w()], [True], 0, update="agad")
    assert isinstance(ideal, IdealSynapses)  # an exact chip ignores the rule
    with pytest.raises(ValueError, match="update rule must be one of"):
        make_synapses(LINEAR, [_w()], [True], 0, update="adam")


def test_sgd_expected_update_is_the_estimate() -> None:
    """Stochastic rounding: the mean weight change equals the desired update."""
    w0 = _w()
    delta = _w(1) * 0.004  # ~1/3 of a device step per weight and update
    changes = []
    for seed in range(20):
        params = [w0.clone()]
        syn = make_synapses(LINEAR, params, [True], seed)
        start = params[0].clone()
        for _ in range(10):
            syn.apply(params, [delta])
        changes.append(params[0] - start)
    mean = torch.stack(changes).mean(0)
    unit = syn.pulse_unit(0)
    # s.e. of the mean of 20 runs of 10 Bernoulli pulses: <= unit sqrt(10 / 4 / 20)
    assert (mean - 10 * delta).abs().max() < 4.5 * unit * (10 / 4 / 20) ** 0.5


def test_mixed_loses_nothing_the_accumulator_keeps_the_rest() -> None:
    """Devices + accumulator = start + every update, exactly (to float rounding)."""
    params = [_w()]
    syn = make_synapses(LINEAR, params, [True], 0, update="mixed")
    assert isinstance(syn, MixedPrecisionSynapses)
    start, total = params[0].clone(), torch.zeros(12, 6)
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        left, right = torch.randn(4, 12, generator=g), torch.randn(4, 6, generator=g) * 0.003
        syn.apply(params, [OuterProduct(left, right)])
        total += left.t() @ right
    unit = syn.devices.pulse_unit(0)
    held = params[0] + syn.chi[0] * unit
    assert torch.allclose(held, start + total, atol=1e-5)
    assert syn.chi[0].abs().max() < 1.0  # less than one step waits in the accumulator
    sgd_params = [start.clone()]
    sgd = make_synapses(LINEAR, sgd_params, [True], 0)
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        left, right = torch.randn(4, 12, generator=g), torch.randn(4, 6, generator=g) * 0.003
        sgd.apply(sgd_params, [OuterProduct(left, right)])
    assert syn.total_pulses < 0.75 * sgd.total_pulses  # cancelling updates never fire


@pytest.mark.parametrize("rule", TT)
def test_tiki_taka_transfer_is_unbiased(rule: str) -> None:
    """A fresh fast array read in full after one update moves exactly that update into the
    slow array and its digital buffer H (transfer_lr 1, every row read per update)."""
    params = [_w()]
    syn = TikiTakaSynapses(LINEAR, params, [True], 0, variant=rule, fast_gain=3.0,
                           transfer_lr=1.0, reads_per_update=12)  # fmt: skip
    unit_a, unit_c = syn.fast.pulse_unit(0), syn.slow.pulse_unit(0)
    k = torch.randint(-4, 5, (12, 6), generator=torch.Generator().manual_seed(2)).float()
    delta = k * unit_a / 3.0  # whole fast-array pulses: A holds exactly 3 x delta
    start = params[0].clone()
    syn.apply(params, [delta])
    assert torch.allclose(syn.fast_params[0], 3.0 * delta, atol=1e-6)
    moved = params[0] - start + syn.h[0] * unit_c
    assert torch.allclose(moved, delta, atol=1e-5)
    assert syn.h[0].abs().max() < 1.0


# Tiki-Taka settings for the toy (a few values tried on rram-gong2018; the DHN defaults in
# npusim.devices.rules.TT_DEFAULTS move C far more per read: its rows are read 25x less often)
TOY_TT: dict[str, dict[str, float]] = {
    "ttv2": {"fast_gain": 10.0, "transfer_lr": 0.02},
    "cttv2": {"fast_gain": 30.0, "transfer_lr": 0.05, "chop_prob": 0.05},
    "agad": {"fast_gain": 30.0, "transfer_lr": 0.05, "chop_prob": 0.05},
}


def _toy(rule: str, seed: int, steps: int = 400) -> float:
    """Relative error of a 32x8 linear map learnt by SGD on MSE through ``rram-es`` devices
    (strongly asymmetric exponential steps, 2 steps write noise)."""
    spec = load_chip("rram-es")
    g = torch.Generator().manual_seed(seed)
    teacher, w = torch.randn(32, 8, generator=g) * 0.3, torch.randn(32, 8, generator=g) * 0.3
    params = [w]
    if rule in TT:
        syn = TikiTakaSynapses(spec, params, [True], seed, variant=rule, **TOY_TT[rule])
    else:
        syn = make_synapses(spec, params, [True], seed, update=rule)
    for _ in range(steps):
        x = torch.rand(16, 32, generator=g)
        err = x @ params[0] - x @ teacher
        syn.apply(params, [OuterProduct(x, err * (-0.1 / 16))])
    return float((params[0] - teacher).norm() / teacher.norm())


MARGIN = {"mixed": 0.7, "ttv2": 0.95, "cttv2": 0.95, "agad": 0.95}


def test_each_rule_beats_sgd_on_a_noisy_asymmetric_device() -> None:
    """Mean relative error over seeds 0-2 at most MARGIN x sgd's (mixed: 30% lower; the
    Tiki-Taka variants: 5% lower)."""
    sgd = sum(_toy("sgd", s) for s in range(3)) / 3
    for rule, margin in MARGIN.items():
        err = sum(_toy(rule, s) for s in range(3)) / 3
        assert err <= margin * sgd, (rule, err, sgd)


def _trainer(rule: str) -> Trainer:
    cfg = TrainConfig(dataset="digits", hidden=[16], epochs=1, batch_size=8)
    tr = Trainer(cfg, ledger=Ledger(), update=rule)
    tr.put_on_chip(load_chip("rram-gong2018"))
    x, y = tr.data.x_train[:32], tr.data.y_train[:32]
    for b in range(4):
        tr.step(x[8 * b : 8 * b + 8], y[8 * b : 8 * b + 8])
    return tr


def test_each_rule_prices_its_extra_work() -> None:
    base = _trainer("sgd").ledger
    held = 64 * 16 + 16 * 10
    mixed = _trainer("mixed").ledger
    extra = mixed.count("fp32_ops", "update") - base.count("fp32_ops", "update")
    assert extra == 4 * 2 * held  # accumulate and take off, per held weight and update
    assert mixed.count("bytes_tile", "update") - base.count("bytes_tile", "update") == 4 * 8 * held
    for rule in TT:
        led = _trainer(rule).ledger
        assert led.count("device_reads", "update") > 0 and led.count("adc", "update") > 0
    spec = load_chip("rram-gong2018")
    e_sgd = sum(per_sample(base, spec)["train"]["energy_j"].values())
    e_mixed = sum(per_sample(mixed, spec)["train"]["energy_j"].values())
    assert e_mixed != e_sgd


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_resumes_exactly(rule: str) -> None:
    spec = load_chip("rram-gong2018")
    g = torch.Generator().manual_seed(5)
    updates = [OuterProduct(torch.randn(4, 12, generator=g), torch.randn(4, 6, generator=g) * 0.02)
               for _ in range(6)]  # fmt: skip
    a = [_w()]
    syn_a = make_synapses(spec, a, [True], 1, update=rule)
    for d in updates[:3]:
        syn_a.apply(a, [d])
    state = syn_a.state_dict()
    b = [_w()]
    syn_b = make_synapses(spec, b, [True], 1, update=rule)
    syn_b.load_state_dict(state)
    for d in updates[3:]:
        syn_a.apply(a, [d])
        syn_b.apply(b, [d])
    assert torch.equal(a[0], b[0])
    assert syn_a.total_pulses == syn_b.total_pulses


def test_train_with_seeds_writes_the_mean_and_sd(tmp_path) -> None:
    """``npusim train --update mixed --seeds 0,1`` runs OUT/seed-0, OUT/seed-1 and writes
    OUT/results.json with the test error's mean and s.d. over them (fractions)."""
    import json
    import statistics

    from npusim.cli.main import main

    out = tmp_path / "runs"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--no-progress"]
    args += ["--chip", "rram-gong2018", "--update", "mixed", "--seeds", "0,1", "--out", str(out)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    per_seed = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert res["runs"] == ["seed-0", "seed-1"] and res["config"]["update"] == "mixed"
    assert all(r["config"]["seed"] == s for r, s in zip(per_seed, (0, 1), strict=True))
    assert res["test_error_mean"] == pytest.approx(statistics.fmean(res["test_errors"]))
    assert res["test_error_std"] == pytest.approx(statistics.stdev(res["test_errors"]))
    assert res["energy_per_train_sample_j"] > 0 and res["lifetime_max_device_s"] > 0
    serial = tmp_path / "serial"  # the same seeds one after another in this process
    assert main([*args[:-1], str(serial), "--jobs", "1"]) == 0
    assert json.loads((serial / "results.json").read_text())["test_errors"] == res["test_errors"]
