"""In-array updates (``--outer-product coincidence``): pulse-train statistics against the
binomial model, the expected update against EqProp's gradient (DHN and DRN), the ledger's
counts against their closed form, and learning on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npusim.chip import list_presets, load_chip
from npusim.circuits import DeepHopfield, DeepResistive
from npusim.core.outer import dense
from npusim.cost import npu_cost
from npusim.devices.coincidence import local_pulses, pulse_trains
from npusim.learning.estimators import EqProp
from npusim.learning.inarray import in_array_terms
from npusim.runtime import Ledger, TrainConfig, Trainer
from npusim.runtime.config import ConfigError
from npusim.runtime.inarray import InArrayUpdater, nominal_unit

G = np.random.Generator(np.random.SFC64(16))


def test_coincidence_counts_are_binomial_with_the_eqprop_mean():
    """Over many trains of the same row and column values, the pulses per device average to
    η·a_i·b_j / unit, and the coincidences per device have the binomial variance
    BL·p_i·q_j·(1 − p_i·q_j) with p, q from the update-management gains."""
    a = torch.tensor([0.0, 0.2, -0.5, 1.0, 0.7])
    b = torch.tensor([0.3, -0.1, 0.05, -0.6])
    eta, unit, bl, reps = 0.05, 0.004, 10, 40_000
    tr = pulse_trains(a.expand(reps, -1), b.expand(reps, -1), eta, unit, bl, G)
    counts = torch.einsum("sti,stj->sij", tr.rows, tr.cols)  # signed pulses per device
    # closed form: G = η·max|a|·max|b|/(BL·unit) = 0.75 -> k = 1, c = sqrt(0.75)
    gain = eta * 1.0 * 0.6 / (bl * unit)
    k = math.ceil(gain)
    assert torch.all(tr.per_coincidence == k)
    c = math.sqrt(gain / k)
    p, q = c * a.abs() / 1.0, c * b.abs() / 0.6
    pq = p[:, None] * q[None, :]
    want = eta * a[:, None] * b[None, :] / unit
    mean = counts.mean(0)
    se = (k * torch.sqrt(bl * pq * (1 - pq) / reps)).clamp(min=1e-12)
    assert torch.all((mean - want).abs() <= 5 * se + 1e-6), (mean, want)
    coinc = counts.abs() / k
    var = coinc.var(0)
    binom = bl * pq * (1 - pq)
    ok = binom > 0
    assert torch.allclose(var[ok], binom[ok], rtol=0.05)
    assert torch.all(var[~ok] == 0)  # a zero row fires nothing


def test_a_large_learning_rate_fires_several_pulses_per_coincidence():
    a, b = torch.ones(2000, 3), torch.full((2000, 2), 0.5)
    eta, unit, bl = 1.0, 0.01, 10  # G = 1·1·0.5/(10·0.01) = 5 -> 5 pulses per coincidence
    tr = pulse_trains(a, b, eta, unit, bl, G)
    assert torch.all(tr.per_coincidence == 5)
    counts = torch.einsum("sti,stj->sij", tr.rows, tr.cols)
    assert torch.allclose(counts.mean(0) * unit, torch.full((3, 2), 0.5), rtol=0.02)


def test_local_conversion_is_binomial_over_the_slots():
    v = torch.tensor([0.0, 0.4, -2.5, 7.0, -10.0]).expand(50_000, -1)
    n = local_pulses(v, 10, G)
    assert torch.equal(n, n.round())
    p = v[0].abs() / 10
    assert torch.allclose(n.mean(0), v[0], atol=0.03)
    assert torch.allclose(n.var(0), 10 * p * (1 - p), atol=0.05)


def test_all_lines_firing_gives_the_closed_form_counts():
    """G = 1 and equal magnitudes: every row and column pulses in every slot, so each sample
    programs BL coincidences per device and ΔW = η·Σ_s a_sᵀ b_s exactly."""
    bsz, n_in, n_out, bl, unit = 3, 4, 5, 7, 0.01
    a, b = torch.ones(bsz, n_in), -torch.ones(bsz, n_out)
    tr = pulse_trains(a, b, bl * unit, unit, bl, G)
    assert tr.coincidences() == (bsz * bl * n_in * n_out, bsz * bl * n_in * n_out)
    assert tr.slots == bsz * bl * (n_in + n_out)
    assert tr.slot_cycles == bsz * bl
    dw = unit * torch.einsum("sti,stj->ij", tr.rows, tr.cols)
    assert torch.allclose(dw, -bl * unit * bsz * torch.ones(n_in, n_out))


def _mean_update(model, x, rule, est, lrs, reps: int, dev) -> list[torch.Tensor]:
    """Mean change of every parameter over ``reps`` in-array updates from the same weights."""
    start = [p.clone() for p in model.params()]
    upd = InArrayUpdater(10, 0, dev)
    total = [torch.zeros_like(p) for p in start]
    for _ in range(reps):
        model.load_params(start)
        upd.apply(model, x, rule, est, lrs, None)
        for t, p, s in zip(total, model.params(), start, strict=True):
            t += p - s
    model.load_params(start)
    return [t / reps for t in total], upd.units(start, model.signed, None)


estimator = EqProp(beta=0.2, variant="centered", sweeps=30)


def test_dhn_expected_coincidence_update_is_the_eqprop_update():
    torch.manual_seed(0)
    model = DeepHopfield([6, 5, 3], seed=1, weight_gains=[2.0, 2.0])
    x = torch.rand(4, 6)
    target = torch.eye(3)[torch.tensor([0, 2, 1, 0])]
    est = estimator(model, x, target)
    lrs = [0.05, 0.05, 0.05, 0.05]
    want = [-lr * dense(g) for g, lr in zip(est.grads, lrs, strict=True)]
    # the held-signal terms sum to the same descent direction, exactly
    for terms, w, lr in zip(in_array_terms(model, x, estimator, est), want, lrs, strict=True):
        got = sum(t.scale * (t.rows.t() @ t.cols if w.dim() == 2 else t.cols.sum(0)) for t in terms)
        assert torch.allclose(lr * got, w, atol=1e-7)
    mean, _ = _mean_update(model, x, estimator, est, lrs, 3000, load_chip("ideal").device)
    for m, w in zip(mean, want, strict=True):
        scale = w.abs().max()
        assert (m - w).abs().max() <= 0.08 * scale, (m, w)


def test_drn_local_rule_is_the_eqprop_gradient_in_expectation():
    model = DeepResistive([3, 4, 2], input_gain=1.0, seed=2)
    for w in model.weights:
        w.add_(0.5)  # conductances far from 0: no clamping at the bound
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rule = EqProp(beta=0.5, sweeps=60)
    est = rule(model, x, target)
    lrs = [0.02] * 4
    want = [-lr * dense(g) for g, lr in zip(est.grads, lrs, strict=True)]
    terms = in_array_terms(model, x, rule, est)
    for k in range(2):  # Kendall's per-device rule sums to the EqProp gradient exactly
        local = sum(terms[k][0].values(s) for s in range(2))
        assert torch.allclose(lrs[k] * local, want[k], atol=1e-6)
    reps = 3000
    mean, units = _mean_update(model, x, rule, est, lrs, reps, load_chip("ideal").device)
    for k in range(2):  # within 5 standard errors of the binomial model, device by device
        p = torch.stack([lrs[k] * terms[k][0].values(s) / units[k] / 10 for s in range(2)])
        se = units[k] * torch.sqrt((10 * p.abs() * (1 - p.abs())).sum(0) / reps)
        assert torch.all((mean[k] - want[k]).abs() <= 5 * se + 1e-9), (mean[k], want[k])


def test_ledger_counts_one_update_in_closed_form_and_no_digital_outer_product():
    cfg = TrainConfig(dataset="digits", hidden=[12], outer_product="coincidence", seed=1)
    led = Ledger()
    tr = Trainer(cfg, ledger=led)
    bsz, bl = 16, cfg.pulse_train_length
    x, y = tr.data.x_train[:bsz], tr.data.y_train[:bsz]
    tr.step(x, y)
    n0, n1, n2 = tr.model.sizes
    up = led.layers["update"]
    # array 0: x against layer 1's difference, plus its bias row; array 1: two trains + bias
    assert up["pulse_slots"] == [
        bsz * bl * (n0 + n1) + bsz * bl * (1 + n1),
        2 * bsz * bl * (n1 + n2) + bsz * bl * (1 + n2),
    ]
    assert up["sample_hold"] == [2 * bsz * n1, 2 * bsz * n2]
    assert all(c > 0 for c in up["coincidences"])
    assert led.count("pulses", "update") >= led.count("coincidences", "update") - sum(
        up["digital_ops"]
    )
    assert up["slot_cycles"][0] >= 2 * bsz * bl and up["slot_cycles"][1] >= 3 * bsz * bl
    # nothing digital forms the outer product: only the bias rows' register increments
    assert led.count("bytes_tile", "update") == 0
    assert led.count("fp32_ops", "update") == 4 * bsz * (2 + 3)
    # the equilibria are held, not converted: one ADC read of the output (free phase)
    assert led.count("adc", "free") == bsz * n2
    assert led.count("adc", "nudged+") == led.count("adc", "nudged-") == 0
    # an update without bias increments prices the digital term at exactly zero
    only = Ledger()
    only.relax("free", [n0, n1, n2], bsz, 5)
    ev = {k: [v, v] for k, v in (("pulse_slots", 10), ("coincidences", 7), ("sample_hold", 4),
                                  ("slot_cycles", 10), ("bias_coincidences", 0))}  # fmt: skip
    only.update([n0, n1, n2], bsz, [7, 7], measured=True, in_array=ev)
    cost = npu_cost(only, "rram").energy_j["update"]
    assert cost["digital"] == 0.0
    spec = load_chip("rram")
    assert cost["pulse_trains"] == pytest.approx(20 * spec.energy.pulse_slot)
    assert cost["sample_hold"] == pytest.approx(8 * spec.energy.sample_hold)


def test_nominal_step_of_the_ideal_chip():
    dev = load_chip("ideal").device
    assert nominal_unit(dev, 0.5, True) == pytest.approx(2 * dev.weight_range * 0.5 / dev.n_states)
    assert nominal_unit(dev, 0.5, False) == pytest.approx(dev.weight_range * 0.5 / dev.n_states)


@pytest.mark.parametrize("bad", [{"update": "mixed"}, {"momentum": 0.5}, {"algorithm": "backprop"}])
def test_combinations_without_an_in_array_update_are_refused(bad):
    with pytest.raises(ConfigError, match="outer-product digital|eqprop or contrastive"):
        TrainConfig(outer_product="coincidence", **bad).resolved()


def test_coincidence_training_learns_digits():
    """3 epochs of DHN 64-64-10 on digits with in-array updates: test error ≤ 10% (the
    digital path reaches about 4.5%; a coincidence run of this size about 6%)."""
    cfg = TrainConfig(dataset="digits", hidden=[64], epochs=3, outer_product="coincidence")
    tr = Trainer(cfg, ledger=Ledger())
    for _ in range(3):
        rec = tr.run_epoch()
    assert rec.test_error <= 0.10


@pytest.mark.parametrize("chip", list_presets())
def test_every_preset_trains_with_coincidence_updates(chip):
    cfg = TrainConfig(
        dataset="digits", hidden=[16], epochs=1, chip=chip, outer_product="coincidence"
    )
    led = Ledger()
    tr = Trainer(cfg, ledger=led)
    before = [p.clone() for p in tr.model.params()]
    x, y = tr.data.x_train[:32], tr.data.y_train[:32]
    tr.step(x, y)
    tr.step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.params(), strict=True))
    assert led.count("coincidences") > 0 and led.count("pulses", "update") > 0


def test_ratio_columns_now_at_the_floors_and_at_the_edge():
    from npusim.cost.claims import EDGE_SAMPLE_PERIOD_S, edge_terms, floors, ratio_columns

    terms = {"array": 2e-9, "dram": 5e-9, "static": 1e-9, "pulse_trains": 3e-9, "adc": 1e-12}
    events = {"macs": 1e4, "bytes_mem": 784, "pulse_slots": 2e4, "adc": 10}
    edge = edge_terms(terms, static_w=0.05)
    assert edge["dram"] == 0 and edge["static"] == terms["static"]
    on = edge_terms(terms, static_w=0.05, power_gated=False)
    assert on["static"] == pytest.approx(0.05 * EDGE_SAMPLE_PERIOD_S)
    cols = ratio_columns(terms, events, {"gpu": 1e-6}, 0.05, "rram")
    fl = floors("rram")
    floor_j = (
        fl["array"][0] * 1e4 + fl["dram"][0] * 784 + fl["pulse_trains"][0] * 2e4
        + fl["adc"][0] * 10
    )  # fmt: skip
    row = cols["ratio"]["gpu"]
    assert row["now"] == pytest.approx(1e-6 / sum(terms.values()))
    assert row["at_floors"] == pytest.approx(1e-6 / floor_j)
    assert row["edge"] == pytest.approx(1e-6 / (sum(terms.values()) - 5e-9))
    assert row["edge_always_on"] < row["now"] < row["edge"] < row["at_floors"]


@pytest.mark.parametrize("chip", ["rram", "pcm", "rram-gong2018"])
def test_batched_train_programming_equals_the_kernel_sample_by_sample(chip):
    """program_batch (one serial call for a batch of trains) fires the same pulses into the
    same weights as the programming kernel called once per sample with rowsᵀ cols."""
    from npusim.core.outer import OuterProduct
    from npusim.devices import make_synapses

    spec = load_chip(chip)
    w0 = torch.randn(30, 20, generator=torch.Generator().manual_seed(3)) * 0.1
    a = torch.rand(5, 30) - 0.3
    b = torch.rand(5, 20) - 0.5
    tr = pulse_trains(a, b, 0.02, 0.004, 10, np.random.Generator(np.random.SFC64(1)))
    one, two = [w0.clone()], [w0.clone()]
    s1 = make_synapses(spec, one, [True], seed=4)
    s2 = make_synapses(spec, two, [True], seed=4)
    fired = s1.program_batch(0, tr.rows, tr.cols)
    by_kernel = sum(s2.program(0, OuterProduct(tr.rows[s], tr.cols[s])) for s in range(5))
    assert fired == by_kernel > 0
    assert torch.equal(one[0], two[0])
    counts = torch.einsum("sti,stj->sij", tr.rows, tr.cols)
    s3 = make_synapses(spec, three := [w0.clone()], [True], seed=4)
    assert s3.program_batch(0, counts) == fired
    assert torch.equal(three[0], one[0])
