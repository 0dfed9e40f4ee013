"""The torch programming kernel against the numba kernel: identical pulses, states, counters
and weights on the CPU (same counter-based random numbers, same float32 arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from npusim.chip import ChipSpec
from npusim.core.outer import OuterProduct
from npusim.devices import DeviceSynapses, kernel, torch_kernel
from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer

SCHEMES = ("reference", "bidirectional", "one_sided")  # ONE_DEVICE, BIDIRECTIONAL, ONE_SIDED


def _pair(scheme: str, signed: bool, seed: int, impl: str = "torch", **extra) -> tuple:
    """Two synapse arrays of one chip and seed: the numba kernel's and ``impl``'s."""
    spec = ChipSpec().replace(
        **{
            "device.scheme": scheme,
            "device.n_states": 40,
            "device.write_noise": 0.7,
            "device.nonlinearity_up": 0.6,
            "device.nonlinearity_down": 0.3,
            "device.asymmetry": 1.3,
            "device.d2d_step": 0.2,
            "device.d2d_bounds": 0.05,
            "device.stuck_min_fraction": 0.02,
            "device.refresh": False,
            **{f"device.{k}": v for k, v in extra.items()},
        }
    )
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(24, 36, generator=g) - (0.5 if signed else 0.0)
    a = DeviceSynapses(spec.device, [w.clone()], [signed], seed=seed, kernel_impl="numba")
    b = DeviceSynapses(spec.device, [w.clone()], [signed], seed=seed, kernel_impl=impl)
    return a, b


def _assert_same(a: DeviceSynapses, b: DeviceSynapses) -> None:
    """Records (states, bank rows, counters), device-1 counters, weights and pulse totals."""
    assert torch.equal(a.rec[0], b.rec[0].cpu())
    assert torch.equal(a.c1[0], b.c1[0].cpu())
    assert torch.equal(a.params[0], b.params[0].cpu())
    assert a.total_pulses == b.total_pulses


def test_random_numbers_equal_the_numba_kernels():
    key = int(kernel.stream_key(7, 3, 1))
    flat = np.arange(5000, dtype=np.uint64)
    golden, mix1, mix2 = (np.uint64(c) for c in (kernel._GOLDEN, kernel._MIX1, kernel._MIX2))
    with np.errstate(over="ignore"):
        z = np.uint64(key) + flat * golden
        z = (z ^ (z >> np.uint64(30))) * mix1
        z = (z ^ (z >> np.uint64(27))) * mix2
        h = z ^ (z >> np.uint64(31))
    ht = torch_kernel.hash_flat(key, torch.arange(5000))
    assert np.array_equal(ht.numpy().view(np.uint64), h)
    u = torch_kernel.uniform24(ht).numpy()
    assert np.array_equal(u[:200], [kernel._uniform24(v) for v in h[:200]])
    xi = torch_kernel.normal(ht).numpy()
    assert np.array_equal(xi[:200], [kernel._normal(v) for v in h[:200]])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("rounding", ["stochastic", "deterministic"])
@pytest.mark.parametrize("noise", [0.7, 0.0])
def test_dense_and_outer_updates_equal_numba(scheme, signed, rounding, noise):
    for seed in (1, 2):
        a, b = _pair(scheme, signed, seed, rounding=rounding, write_noise=noise)
        g = torch.Generator().manual_seed(10 + seed)
        unit = a.pulse_unit(0)
        for step in range(4):
            if step % 2:
                left = torch.randn(5, 24, generator=g)
                left[:, :4] = 0.0  # rows without input are skipped
                d = OuterProduct(left, torch.randn(5, 36, generator=g) * 2.0 * unit)
            else:
                d = torch.randn(24, 36, generator=g) * 3.0 * unit
            a.apply(a.params, [d])
            b.apply(b.params, [d])
            _assert_same(a, b)
        assert a.total_pulses > 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_endurance_freezes_the_same_devices(scheme):
    a, b = _pair(scheme, True, 3, endurance=12)
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        d = torch.randn(24, 36, generator=g) * 4.0 * a.pulse_unit(0)
        a.apply(a.params, [d])
        b.apply(b.params, [d])
    _assert_same(a, b)
    frozen = int((a.model[0] == 0).sum())
    assert frozen > 0.2 * a.model[0].numel()  # many devices wore out


def test_exponential_steps_equal_numba():
    """Devices with an exponential step (rate != 0): exp taken as libm's expf rounds it."""
    a, b = _pair("bidirectional", True, 5, nonlinearity_exponent=3.0)
    g = torch.Generator().manual_seed(6)
    for _ in range(4):
        d = torch.randn(24, 36, generator=g) * 3.0 * a.pulse_unit(0)
        a.apply(a.params, [d])
        b.apply(b.params, [d])
    _assert_same(a, b)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_accumulator_transfers_equal_numba(scheme):
    """``program`` with a digital accumulator (mixed precision, Tiki-Taka's H)."""
    a, b = _pair(scheme, True, 7)
    acc_a, acc_b = torch.zeros(24, 36), torch.zeros(24, 36)
    g = torch.Generator().manual_seed(8)
    for step in range(5):
        if step % 2:
            left = torch.randn(3, 24, generator=g)
            left[:, 10:14] = 0.0
            x = OuterProduct(left, torch.randn(3, 36, generator=g) * 0.8)
        else:
            x = torch.randn(24, 36, generator=g) * 0.9
        fired = a.program(0, x, acc=acc_a)
        assert b.program(0, x, acc=acc_b) == fired
        assert torch.equal(acc_a, acc_b)
        _assert_same(a, b)
    assert fired > 0


def _refresh_and_coincidence_run() -> tuple[DeviceSynapses, DeviceSynapses]:
    a, b = _pair("one_sided", True, 9, refresh=True, refresh_interval=2, refresh_level=0.6)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        d = torch.randn(24, 36, generator=g).abs() * 6.0 * a.pulse_unit(0)
        a.apply(a.params, [d])
        b.apply(b.params, [d])
    counts = torch.randint(-2, 3, (3, 24, 36), generator=g).float()
    assert a.program_batch(0, counts) == b.program_batch(0, counts)
    return a, b


def test_refresh_and_coincidence_paths_run_on_the_torch_chip(monkeypatch):
    """The rare refresh and the coincidence batches run in numba on the torch kernel's records:
    in place on the CPU, and on copies written back when ``.cpu()`` copies (records on a
    GPU, emulated here); both give the numba chip's results."""
    a, b = _refresh_and_coincidence_run()
    _assert_same(a, b)
    assert a.refreshes > 0 and a.refreshes == b.refreshes
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t: t.clone())
    _, c = _refresh_and_coincidence_run()
    monkeypatch.undo()
    _assert_same(a, c)
    assert c.refreshes == a.refreshes


@pytest.mark.parametrize("update", ["sgd", "mixed"])
def test_dhn_training_on_rram_equals_numba(update):
    """A few DHN steps on the rram preset: the torch kernel's weights are the numba kernel's."""
    cfg = TrainConfig(dataset="digits", hidden=[32], chip="rram", update=update, epochs=1)
    runs = []
    for impl in ("numba", "torch"):
        tr = Trainer(cfg)
        devices = getattr(tr.synapses, "devices", tr.synapses)  # mixed: its device array
        devices.kernel_impl = impl
        assert devices.use_torch == (impl == "torch")
        x, y = tr.data.x_train, tr.data.y_train
        for k in range(4):
            tr.step(x[16 * k : 16 * k + 16], y[16 * k : 16 * k + 16])
        runs.append(([p.clone() for p in tr.model.params()], devices.total_pulses))
    (wa, pulses_a), (wb, pulses_b) = runs
    assert pulses_a == pulses_b > 0
    for pa, pb in zip(wa, wb, strict=True):
        assert torch.equal(pa, pb)
