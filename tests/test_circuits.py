"""Physics of the layered networks checked against closed forms and an independent solver."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from npusim.circuits import DeepHopfield, DeepResistive, RelaxationDiverged

torch.set_default_dtype(torch.float32)


def _drn(seed=0, sizes=(5, 8, 6, 3)):
    m = DeepResistive(list(sizes), input_gain=3.0, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    for b in m.biases:
        b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float64) * 0.05)
    x = torch.rand(7, sizes[0], generator=g, dtype=torch.float64)
    return m, x


def test_drn_steady_state_satisfies_kcl_and_diode_complementarity():
    m, x = _drn()
    r = m.relax(x, sweeps=5000, tol=1e-14)
    assert r.residual <= 1e-14
    layers = [m.input_voltages(x), *r.state]
    for k in range(1, m.num_layers + 1):
        v = layers[k]
        # net current flowing into each node from resistors and its current source (A)
        i_in = (layers[k - 1] @ m.weights[k - 1] - v * m.weights[k - 1].sum(0)) + m.biases[k - 1]
        if k < m.num_layers:
            i_in = i_in + layers[k + 1] @ m.weights[k].t() - v * m.weights[k].sum(1)
        if k == m.num_layers:  # linear output: KCL exactly
            assert i_in.abs().max() < 1e-6
            continue
        half = v.shape[1] // 2
        # the diode current i_d = -i_in flows from ground into an excitatory node (i_d >= 0)
        # and out of an inhibitory one; it is zero unless the node sits at 0 V
        exc_d, inh_d = -i_in[:, :half], i_in[:, half:]
        assert (v[:, :half] >= 0).all() and (v[:, half:] <= 0).all()
        assert exc_d.min() > -1e-6 and inh_d.min() > -1e-6
        assert (exc_d * v[:, :half]).abs().max() < 1e-6
        assert (inh_d * v[:, half:]).abs().max() < 1e-6
        assert ((v.abs() < 1e-12) | (i_in.abs() < 1e-6)).all()


def test_drn_matches_scipy_constrained_minimum_of_the_co_content():
    m, x = _drn(seed=3, sizes=(4, 6, 2))
    r = m.relax(x, sweeps=5000, tol=1e-14)
    n_free = sum(m.sizes[1:])
    half = m.sizes[1] // 2
    bounds = [(0, None)] * half + [(None, 0)] * (m.sizes[1] - half) + [(None, None)] * m.sizes[2]
    for i in range(len(x)):
        xi = x[i : i + 1]

        def f(v, xi=xi):
            vt = torch.tensor(v, dtype=torch.float64, requires_grad=True)
            e = m.energy(xi, [vt[None, : m.sizes[1]], vt[None, m.sizes[1] :]]).sum()
            (g,) = torch.autograd.grad(e, vt)
            return float(e.detach()), g.numpy()

        sol = minimize(
            f,
            np.zeros(n_free),
            jac=True,
            bounds=bounds,
            method="L-BFGS-B",
            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
        )
        ours = torch.cat([s[i] for s in r.state]).numpy()
        assert np.abs(sol.x - ours).max() < 1e-6


def test_drn_dissipated_power_is_twice_the_resistive_co_content():
    m, x = _drn()
    r = m.relax(x, sweeps=200)
    layers = [m.input_voltages(x), *r.state]
    brute = sum(
        (m.weights[k] * (layers[k][:, :, None] - layers[k + 1][:, None, :]) ** 2).sum((1, 2))
        for k in range(m.num_layers)
    )
    assert torch.allclose(m.dissipated_power(x, r.state), brute, rtol=1e-12)
    bias_term = sum(s @ b for s, b in zip(r.state, m.biases))
    assert torch.allclose(m.energy(x, r.state), 0.5 * brute - bias_term, rtol=1e-12)


@pytest.mark.parametrize("model", ["dhn", "drn"])
def test_each_block_update_is_the_exact_minimiser_and_energy_never_rises(model):
    torch.manual_seed(0)
    if model == "dhn":
        m = DeepHopfield([6, 9, 7, 4], weight_gains=[3, 3, 3], seed=2, dtype=torch.float64)
        for b in m.biases:
            b.normal_(0, 0.3)
        x = torch.rand(5, 6, dtype=torch.float64)
    else:
        m, x = _drn(seed=2)
    energies, state = [], None
    for _ in range(30):
        r = m.relax(x, state, sweeps=1)
        state = r.state
        energies.append(m.energy(x, state))
    e = torch.stack(energies)
    assert (e[1:] <= e[:-1] + 1e-10).all()
    # random feasible perturbations of any single layer never lower the energy
    final = m.relax(x, sweeps=3000, tol=1e-14).state
    e0 = m.energy(x, final)
    for k in range(len(final)):
        for _ in range(20):
            s = [t.clone() for t in final]
            s[k] = s[k] + 0.05 * torch.randn_like(s[k])
            if model == "dhn":
                s[k] = s[k].clamp(0, 1)
            elif k < len(final) - 1:
                s[k] = torch.clamp(s[k], m._lo[k], m._hi[k])
            assert (m.energy(x, s) >= e0 - 1e-10).all()


def test_relax_reports_residual_and_stops_on_tolerance():
    m = DeepHopfield([6, 9, 4], seed=0, dtype=torch.float64)
    x = torch.rand(3, 6, dtype=torch.float64)
    r = m.relax(x, sweeps=500, tol=1e-9)
    assert r.residual <= 1e-9 and r.sweeps < 500
    r1 = m.relax(x, sweeps=1)
    assert r1.sweeps == 1 and r1.residual > 1e-9


def test_diverging_relaxation_is_a_clear_error():
    m = DeepHopfield([4, 5, 3], seed=0)
    m.weights[0][0, 0] = float("nan")
    with pytest.raises(RelaxationDiverged, match="diverged"):
        m.relax(torch.ones(2, 4), sweeps=3)


def test_nudged_output_and_bad_beta():
    m = DeepHopfield([4, 5, 3], seed=0, dtype=torch.float64)
    x = torch.rand(2, 4, dtype=torch.float64)
    t = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    clamped = m.relax(x, beta=float("inf"), target=t, sweeps=5)
    assert torch.equal(clamped.state[-1], t)
    with pytest.raises(ValueError, match="non-convex"):
        m.relax(x, beta=-1.5, target=t)
    with pytest.raises(ValueError, match="needs a target"):
        m.relax(x, beta=0.1)


def test_a_negative_nudge_beyond_the_output_curvature_is_a_user_error() -> None:
    from npusim.circuits.layered import NudgeNotConvex
    from npusim.core.errors import NpusimError

    net = DeepHopfield([4, 3, 2], seed=0)
    x = torch.rand(2, 4)
    with pytest.raises(NudgeNotConvex, match="--variant positive") as info:
        net.relax(x, beta=-1.5, target=torch.zeros(2, 2), sweeps=2)
    assert isinstance(info.value, NpusimError)
