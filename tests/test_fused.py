"""The fused relaxation (npusim.circuits.fused) against the reference torch relaxation."""

import math

import pytest
import torch

from npusim.circuits import DeepHopfield, DeepResistive, RelaxationDiverged
from npusim.learning.estimators import Backprop
from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer


def _dhn(sizes, batch=16, dtype=torch.float32):
    m = DeepHopfield(list(sizes), weight_gains=[2.0] * (len(sizes) - 1), seed=1, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    for b in m.biases:
        b.copy_(torch.randn(b.shape, generator=g, dtype=dtype) * 0.2)
    x = torch.rand(batch, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    return m, x, torch.nn.functional.one_hot(y, sizes[-1]).to(dtype)


def _both(m, x, **kw):
    m.fused = False
    ref = m.relax(x, **kw)
    m.fused = True
    assert m._can_fuse(x, kw.get("state"), kw.get("beta", 0.0), kw.get("target"))
    return ref, m.relax(x, **kw)


def _gap(a, b):
    return max(float((s - t).abs().max()) for s, t in zip(a.state, b.state, strict=True))


def _cases(m, x, t):
    n = x.shape[0]
    betas = torch.full((2 * n, 1), 0.3)
    betas[n:] = -0.3
    free = m.relax(x).state
    both = dict(beta=betas, target=torch.cat([t, t]), tile=2)
    return {
        "free": dict(sweeps=15),
        "scalar-beta": dict(sweeps=15, beta=0.3, target=t, state=free),
        "per-sample-beta": dict(sweeps=15, state=[torch.cat([s, s]) for s in free], **both),
        "per-sample-beta-from-zero": dict(sweeps=15, **both),
        "clamped": dict(sweeps=15, beta=math.inf, target=t),
        "negative-beta": dict(sweeps=15, beta=-0.3, target=t),
        "one-sweep": dict(sweeps=1),
    }


@pytest.mark.parametrize("sizes", [(20, 37, 5), (20, 33, 9, 3), (30, 70, 2)])
@pytest.mark.parametrize("batch", [16, 5, 35])
@pytest.mark.parametrize(
    "case",
    [
        "free",
        "scalar-beta",
        "per-sample-beta",
        "per-sample-beta-from-zero",
        "clamped",
        "negative-beta",
        "one-sweep",
    ],
)
def test_fused_dhn_relaxation_matches_the_reference(sizes, batch, case):
    m, x, t = _dhn(sizes, batch)
    ref, fus = _both(m, x, **_cases(m, x, t)[case])
    assert _gap(ref, fus) <= 1e-5
    assert [s.shape for s in fus.state] == [s.shape for s in ref.state]
    assert fus.sweeps == ref.sweeps
    assert abs(fus.residual - ref.residual) <= 1e-5
    if case == "clamped":
        assert torch.equal(fus.state[-1], t)


@pytest.mark.parametrize("sizes", [(20, 37, 5), (20, 33, 9, 3)])
def test_fused_tolerance_stops_on_the_same_sweep(sizes):
    m, x, _ = _dhn(sizes)
    ref, fus = _both(m, x, sweeps=400, tol=1e-4)
    assert ref.sweeps < 400 and ref.residual <= 1e-4
    assert fus.sweeps == ref.sweeps and fus.residual <= 1e-4
    assert _gap(ref, fus) <= 1e-5


def test_fused_float64_agrees_to_float64_rounding():
    m, x, t = _dhn((20, 33, 9, 3), 7, dtype=torch.float64)
    for kw in _cases(m, x, t).values():
        ref, fus = _both(m, x, **kw)
        assert _gap(ref, fus) <= 1e-12


@pytest.mark.parametrize("sizes", [(12, 24, 6), (12, 20, 8, 3)])
def test_fused_drn_relaxation_matches_the_reference(sizes):
    m = DeepResistive(list(sizes), input_gain=480.0, seed=3)
    x = torch.rand(4, sizes[0])
    t = torch.nn.functional.one_hot(torch.arange(4) % sizes[-1], sizes[-1]).float()
    for kw in _cases(m, x, t).values():
        if kw.get("beta") is not None and not isinstance(kw["beta"], torch.Tensor):
            if kw["beta"] < 0:
                continue  # -β beyond the output's small curvature: not convex
        ref, fus = _both(m, x, **kw)
        scale = max(float(s.abs().max()) for s in ref.state)
        assert _gap(ref, fus) <= 1e-5 * max(scale, 1.0)
        assert fus.sweeps == ref.sweeps


def test_shockley_drn_and_grad_tracking_use_the_reference():
    m = DeepResistive([6, 8, 3], seed=0, diode="shockley")
    assert not m._can_fuse(torch.rand(2, 6), None, 0.0, None)
    h, x, t = _dhn((10, 12, 3), 4)
    h.weights[1].requires_grad_(True)
    assert not h._can_fuse(x, None, 0.0, None)
    out = h.relax(x, sweeps=3).state[-1]
    assert out.grad_fn is not None  # backprop still differentiates through the relaxation
    h.weights[1].requires_grad_(False)
    est = Backprop(sweeps=5)(h, x, t)
    assert all(torch.isfinite(g).all() for g in est.grads)


def test_fused_relaxation_reports_divergence():
    m, x, _ = _dhn((10, 12, 3), 4)
    m.weights[1][0, 0] = float("nan")
    assert m._can_fuse(x, None, 0.0, None)
    with pytest.raises(RelaxationDiverged, match="diverged"):
        m.relax(x, sweeps=3)


def test_fused_training_on_digits_gives_the_reference_test_error():
    """Two epochs of centered EqProp on digits, fused and reference: same test error, same
    predictions on the test split."""
    results = []
    for fused in (False, True):
        tr = Trainer(TrainConfig(dataset="digits", hidden=[64], epochs=2, lrs=[0.2, 0.1]))
        tr.model.fused = fused
        for _ in range(2):
            tr.run_epoch()
        x, _ = tr.data.split("test")
        tr.model.fused = False  # predictions by one path: the weights are what differ
        results.append((tr.evaluate("test"), tr.model.predict(x)))
    (err_ref, pred_ref), (err_fused, pred_fused) = results
    assert err_fused == err_ref
    assert torch.equal(pred_fused, pred_ref)


@pytest.mark.parametrize("sizes", [(20, 37, 5), (20, 33, 9, 3), (30, 70, 2)])
def test_chunks_on_two_threads_equal_one_thread_exactly(sizes):
    """Without a stopping rule the chunks of 16 samples run on numba's threads, each through
    all its sweeps: the same arithmetic as sweep by sweep on one thread."""
    m, x, t = _dhn(sizes, 35)
    old = torch.get_num_threads()
    for kw in _cases(m, x, t).values():
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            try:
                runs.append(m.relax(x, **kw))
            finally:
                torch.set_num_threads(old)
        one, two = runs
        assert all(torch.equal(a, b) for a, b in zip(one.state, two.state, strict=True))
        assert (one.sweeps, one.residual) == (two.sweeps, two.residual)


@pytest.mark.parametrize("betas", [(0.3, -0.3), (0.3,), (-0.2,), (0.5, -0.1, 0.2), (math.inf,)])
@pytest.mark.parametrize("batch", [16, 5, 35])
def test_fused_phases_equal_the_two_relaxations_bit_for_bit(betas, batch):
    """``relax_phases`` in one compiled call gives the states, sweeps and residuals of the
    reference sequence (a fused free ``relax``, then a fused nudged ``relax`` of the tiles)."""
    from npusim.circuits.phases import relax_phases

    m, x, t = _dhn((20, 37, 9, 5), batch)
    ref_free, ref = relax_phases(m, x, t, betas, sweeps=7, free_sweeps=9)
    free, nudged = m.relax_phases(x, t, betas, sweeps=7, free_sweeps=9)
    assert free.sweeps == ref_free.sweeps == 9 and free.residual == ref_free.residual
    assert all(torch.equal(a, b) for a, b in zip(free.state, ref_free.state, strict=True))
    assert len(nudged) == len(betas)
    for got, want in zip(nudged, ref, strict=True):
        assert got.sweeps == want.sweeps == 7 and got.residual == want.residual
        assert all(torch.equal(a, b) for a, b in zip(got.state, want.state, strict=True))
    m.fused = False  # and the reference relaxation agrees to float rounding
    slow_free, slow = m.relax_phases(x, t, betas, sweeps=7, free_sweeps=9)
    assert _gap(slow_free, free) <= 1e-5
    assert max(_gap(a, b) for a, b in zip(slow, nudged, strict=True)) <= 1e-5


def test_fused_phases_on_a_drn_stop_on_the_same_sweep_and_refuse_bad_betas():
    from npusim.circuits.phases import relax_phases

    m = DeepResistive([12, 24, 6], input_gain=480.0, seed=3)
    x = torch.rand(4, 12)
    t = torch.nn.functional.one_hot(torch.arange(4) % 6, 6).float()
    ref_free, ref = relax_phases(m, x, t, (0.5, -0.5), sweeps=300, tol=1e-4)
    free, nudged = m.relax_phases(x, t, (0.5, -0.5), sweeps=300, tol=1e-4)
    assert free.sweeps == ref_free.sweeps < 300 and nudged[0].sweeps == ref[0].sweeps < 300
    assert all(torch.equal(a, b) for a, b in zip(nudged[1].state, ref[1].state, strict=True))
    for bad, match in [((), "at least one"), ((0.0,), "non-zero"), ((1.0, math.inf), "finite")]:
        with pytest.raises(ValueError, match=match):
            m.relax_phases(x, t, bad)
    m.weights[1][0, 0] = float("nan")
    with pytest.raises(RelaxationDiverged, match="diverged"):
        m.relax_phases(x, t, (0.5, -0.5), sweeps=3)


@pytest.mark.parametrize("rows, m, n", [(32, 16, 37), (35, 35, 16), (20, 20, 5), (8, 4, 33)])
def test_lane_packing_round_trips_through_tiles_and_partial_chunks(rows, m, n):
    """The 16×16-tiled pack and unpack against an index-by-index statement of the lane layout:
    whole and partial chunks, unit counts off the tile, sources tiled cyclically (m < rows)."""
    import numpy as np

    from npusim.circuits.fused import _pack, _unpack

    src = np.random.default_rng(rows + m + n).random((m, n), np.float32)
    lanes = np.full(((rows + 15) // 16, n + 3, 16), -1.0, np.float32)
    _pack(lanes, 3, src, rows)
    for r in range(rows):
        assert np.array_equal(lanes[r // 16, 3:, r % 16], src[r % m])
    unused = [(r // 16, r % 16) for r in range(rows, lanes.shape[0] * 16)]
    assert all((lanes[c, :, lane] == -1.0).all() for c, lane in unused)
    assert (lanes[:, :3] == -1.0).all()  # rows before the offset left alone
    back = np.zeros((rows, n), np.float32)
    _unpack(back, lanes, 3)
    assert np.array_equal(back, src[np.arange(rows) % m])
