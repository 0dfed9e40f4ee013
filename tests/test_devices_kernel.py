"""The fused programming kernel against an independent NumPy model of one update."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from npusim.chip import ChipSpec
from npusim.core.outer import OuterProduct
from npusim.devices import DeviceSynapses, pulsed
from npusim.devices.synapses import _SEED_PULSES

U64 = np.uint64


def splitmix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea & Flood 2014), on uint64 arrays (wrapping)."""
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def irwin_hall4(h: np.ndarray) -> np.ndarray:
    """Sum of the four 16-bit words of ``h``, centred and scaled to unit variance."""
    words = [(h >> U64(16 * k)) & U64(0xFFFF) for k in range(4)]
    s = sum(words).astype(np.float32)
    return (s - np.float32(131070.0)) * np.float32(1.0 / 37837.23)


def reference_update(syn: DeviceSynapses, i: int, x: np.ndarray) -> dict[str, np.ndarray]:
    """One update of tensor ``i`` by desired pulses ``x`` (rows, cols), written from the
    definitions: counter-based uniforms, stochastic rounding, per-scheme pulse routing,
    the linear-in-y step of each device's bank row, sqrt(n)-scaled write noise, bounds."""
    arr = np.array([[syn.updates * 256 + i]], dtype=np.uint64)
    key = splitmix(U64(syn.seed ^ _SEED_PULSES) ^ splitmix(arr))[0, 0]
    flat = np.arange(x.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix(key + flat * U64(0x9E3779B97F4A7C15))
    if syn.dev.rounding == "stochastic":
        u = ((h >> U64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
        n = np.floor(x.reshape(-1).astype(np.float32) + u)
    else:
        n = np.floor(x.reshape(-1).astype(np.float32) + np.float32(0.5))
    y = syn.y[i].numpy().copy()
    if y.shape[1] == 1:
        y = np.concatenate([y, np.zeros_like(y)], 1)
    model = syn.model[i].numpy().astype(np.int64)
    if model.shape[1] == 1:
        model = np.concatenate([model, np.zeros_like(model)], 1)
    counts = syn.device_counts(i).numpy().astype(np.int64).copy()
    if counts.shape[1] == 1:
        counts = np.concatenate([counts, np.zeros_like(counts)], 1)
    bank = syn._bank_np
    h1 = h ^ U64(0xBF58476D1CE4E5B9)
    xi = [irwin_hall4(splitmix(h1)), irwin_hall4(splitmix(h1 ^ U64(0x94D049BB133111EB)))]
    if not syn.noisy:
        xi = [np.zeros_like(n), np.zeros_like(n)]
    # pulses per device, signed as the direction each device moves
    n_dev = np.stack([n, np.zeros_like(n)], 1)
    if syn.dev.scheme == "bidirectional" and syn.signed[i]:
        n_dev[:, 1] = -n
    elif syn.dev.scheme == "one_sided" and syn.signed[i]:
        n_dev = np.stack([np.maximum(n, 0), np.maximum(-n, 0)], 1)
        xi[1] = xi[0]  # one device moves per weight: it takes the first variate
    for d in range(2):
        k = n_dev[:, d]
        moved = k != 0
        rows = model[:, d] + (k > 0)
        a, b = bank[rows, pulsed.A], bank[rows, pulsed.B]
        new = y[:, d] + k * (a + b * y[:, d])
        new = new + xi[d] * bank[rows, pulsed.NOISE] * np.sqrt(np.abs(k))
        new = np.minimum(np.maximum(new, bank[rows, pulsed.LO]), bank[rows, pulsed.HI])
        y[:, d] = np.where(moved, new, y[:, d])
        counts[:, d] += np.abs(k).astype(np.int64)
    w = np.float32(syn.scale[i]) * (y[:, 0] - y[:, 1])
    return {"y": y, "counts": counts, "w": w, "pulses": int(np.abs(n_dev).sum())}


def _synapses(scheme: str, signed: bool, rounding: str = "stochastic") -> DeviceSynapses:
    spec = ChipSpec().replace(
        **{
            "device.scheme": scheme,
            "device.rounding": rounding,
            "device.n_states": 60,
            "device.write_noise": 0.7,
            "device.nonlinearity_up": 0.6,
            "device.nonlinearity_down": 0.3,
            "device.asymmetry": 1.3,
            "device.d2d_step": 0.2,
            "device.d2d_bounds": 0.05,
            "device.stuck_min_fraction": 0.02,
            "device.refresh": False,
        }
    )
    g = torch.Generator().manual_seed(3)
    w = torch.rand(30, 40, generator=g) - (0.5 if signed else 0.0)
    return DeviceSynapses(spec.device, [w], [signed], seed=11)


CASES = [
    (s, signed) for s in ("reference", "bidirectional", "one_sided") for signed in (True, False)
]


@pytest.mark.parametrize("scheme, signed", CASES)
@pytest.mark.parametrize("rounding", ["stochastic", "deterministic"])
def test_kernel_matches_the_numpy_model(scheme, signed, rounding):
    syn = _synapses(scheme, signed, rounding)
    p = syn.params[0]
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = (torch.randn(p.shape, generator=g) * 1.5).numpy()
        ref = reference_update(syn, 0, x)
        before = syn.total_pulses
        delta = torch.from_numpy(x) * syn.step0 * syn.scale[0]
        if scheme == "bidirectional" and signed:
            delta *= 2.0
        syn.apply([p], [delta])
        assert syn.total_pulses - before == ref["pulses"]
        d = syn.y[0].shape[1]
        np.testing.assert_allclose(syn.y[0].numpy(), ref["y"][:, :d], rtol=0, atol=2e-7)
        assert np.array_equal(syn.device_counts(0).numpy(), ref["counts"][:, :d])
        np.testing.assert_allclose(p.numpy().reshape(-1), ref["w"], rtol=0, atol=2e-6)


@pytest.mark.parametrize("scheme, signed", CASES)
def test_factored_update_equals_its_dense_product(scheme, signed):
    """Integer-valued factors make ``leftᵀ right`` exact in float32, so both paths agree."""
    a, b = _synapses(scheme, signed), _synapses(scheme, signed)
    g = torch.Generator().manual_seed(9)
    unit = a.step0 * a.scale[0] * (2.0 if scheme == "bidirectional" and signed else 1.0)
    for _ in range(3):
        left = torch.randint(0, 3, (4, 30), generator=g).float()
        left[:, :5] = 0.0  # rows without input get no pulses
        right = torch.randint(-2, 3, (4, 40), generator=g).float() * 0.25
        a.apply(a.params, [OuterProduct(left, right * unit)])
        b.apply(b.params, [(left.t() @ right) * unit])
    assert torch.equal(a.y[0], b.y[0]) and torch.equal(a.params[0], b.params[0])
    assert torch.equal(a.device_counts(0), b.device_counts(0))
    assert int(a.device_counts(0).view(30, 40, -1)[:5].sum()) == 0


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_results_do_not_depend_on_the_thread_count():
    runs = []
    for threads in (1, 2):
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)  # the kernel follows torch's thread count
        try:
            syn = _synapses("bidirectional", True)
            g = torch.Generator().manual_seed(2)
            for _ in range(4):
                syn.apply(syn.params, [torch.randn(30, 40, generator=g) * 5 * syn.step0])
        finally:
            torch.set_num_threads(torch_threads)
        runs.append((syn.y[0].clone(), syn.device_counts(0).clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
