"""General netlists: exact steady states checked by independent KCL and a scipy QP."""

import numpy as np
import pytest
import scipy.optimize as so
import torch

from npusim.circuits.netlist import DiodeModel, Netlist, random_netlist
from npusim.circuits.netlist_solve import NetlistSolver, lcp_bpp
from npusim.circuits.shockley import branch_current, cocontent, layer_solve, solve_exp_lin


def kcl_residual(net: Netlist, volts: np.ndarray, diode_i: np.ndarray) -> np.ndarray:
    """Net current (A) into each node not held by a voltage source, from the element lists."""
    res = np.zeros(net.num_nodes + 1)
    for a, b, g in net.resistors:
        i = g * (volts[a] - volts[b])
        res[a] -= i
        res[b] += i
    for p, n, amps in net.isources:
        res[p] -= amps
        res[n] += amps
    for k, (a, c, _) in enumerate(net.diodes):
        res[a] -= diode_i[k]
        res[c] += diode_i[k]
    held = {0} | {p for p, _, _ in net.vsources} | {n for _, n, _ in net.vsources}
    return np.array([r for v, r in enumerate(res) if v not in held])


def batch_inputs(net: Netlist, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vs = torch.rand(batch, len(net.vsources), generator=g, dtype=torch.float64) * 10 - 5
    cs = (torch.rand(batch, len(net.isources), generator=g, dtype=torch.float64) * 10 - 5) * 1e-3
    return vs, cs


def test_linear_matches_dense_solve():
    net = random_netlist(25, num_vsources=3, num_isources=4, seed=1)
    vs, cs = batch_inputs(net, 5, 1)
    st = NetlistSolver(net).solve(vs, cs)
    for b in range(5):
        volts = st.voltages[b].numpy()
        sources = net.vsources
        assert all(
            abs(volts[p] - volts[n] - vs[b, k].item()) < 1e-12
            for k, (p, n, _) in enumerate(sources)
        )
        net_b = Netlist(
            net.num_nodes,
            net.resistors,
            [],
            net.vsources,
            [(p, n, float(c)) for (p, n, _), c in zip(net.isources, cs[b])],
        )
        assert np.abs(kcl_residual(net_b, volts, np.zeros(0))).max() < 1e-15


def test_ideal_diodes_kcl_complementarity():
    net = random_netlist(40, num_diodes=15, num_vsources=3, num_isources=3, seed=2)
    vs, cs = batch_inputs(net, 16, 2)
    st = NetlistSolver(net).solve(vs, cs, diode="ideal")
    i = st.diode_currents.numpy()
    assert (i >= 0).all()
    anode = np.array([a for a, _, _ in net.diodes])
    cathode = np.array([c for _, c, _ in net.diodes])
    v = st.voltages.numpy()
    vd = v[:, anode] - v[:, cathode]
    assert (vd <= 1e-12).all()
    assert np.abs(i * vd).max() < 1e-15
    assert (i > 1e-6).any() and (vd < -1e-3).any()  # both regimes occur
    for b in range(16):
        net_b = Netlist(
            net.num_nodes,
            net.resistors,
            net.diodes,
            net.vsources,
            [(p, n, float(c)) for (p, n, _), c in zip(net.isources, cs[b])],
        )
        assert np.abs(kcl_residual(net_b, v[b], i[b])).max() < 1e-14


def test_ideal_diodes_match_scipy_qp():
    """Primal QP: minimise the resistors' co-content minus source work, s.t. sources and diodes."""
    net = random_netlist(12, num_diodes=5, num_vsources=2, num_isources=2, seed=3)
    st = NetlistSolver(net).solve(diode="ideal")
    n = net.num_nodes

    def full(x):
        return np.concatenate([[0.0], x])

    def energy(x):
        v = full(x)
        e = sum(0.5 * g * (v[a] - v[b]) ** 2 for a, b, g in net.resistors)
        return e - sum(amps * (v[q] - v[p]) for p, q, amps in net.isources)

    cons = [
        {"type": "eq", "fun": lambda x, p=p, q=q, e=e: full(x)[p] - full(x)[q] - e}
        for p, q, e in net.vsources
    ]
    cons += [
        {"type": "ineq", "fun": lambda x, a=a, c=c: full(x)[c] - full(x)[a]}
        for a, c, _ in net.diodes
    ]
    sol = so.minimize(
        energy,
        np.zeros(n),
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert sol.success, sol.message
    assert np.abs(full(sol.x) - st.voltages[0].numpy()).max() < 1e-6


def test_lcp_against_brute_force():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(6, 6))
    m = torch.from_numpy(a @ a.T + 0.1 * np.eye(6))
    q = torch.from_numpy(rng.normal(size=(50, 6)))
    mu, _ = lcp_bpp(m, q)
    y = mu @ m - q
    assert (mu >= 0).all() and (y >= -1e-12).all() and (mu * y).abs().max() < 1e-12


@pytest.mark.parametrize("rs", [0.0, 20.0])
def test_shockley_kcl(rs):
    model = DiodeModel(is_=1e-12, n=1.3, rs=rs)
    net = random_netlist(30, num_diodes=10, num_vsources=3, num_isources=3, model=model, seed=5)
    vs, cs = batch_inputs(net, 8, 5)
    st = NetlistSolver(net).solve(vs, cs)
    v = st.voltages
    anode = torch.tensor([a for a, _, _ in net.diodes])
    cathode = torch.tensor([c for _, c, _ in net.diodes])
    vd = v[:, anode] - v[:, cathode]
    i = branch_current(vd, model)  # independent: from node voltages alone
    assert (i - st.diode_currents).abs().max() < 1e-9 * (1 + i.abs().max())
    assert (st.diode_currents > 1e-5).any()
    for b in range(8):
        net_b = Netlist(
            net.num_nodes,
            net.resistors,
            net.diodes,
            net.vsources,
            [(p, n, float(c)) for (p, n, _), c in zip(net.isources, cs[b])],
        )
        assert np.abs(kcl_residual(net_b, v[b].numpy(), i[b].numpy())).max() < 1e-12


def test_batch_equals_single():
    net = random_netlist(20, num_diodes=6, num_vsources=2, num_isources=2, seed=6)
    vs, cs = batch_inputs(net, 6, 6)
    solver = NetlistSolver(net)
    for diode in ("ideal", "shockley"):
        full = solver.solve(vs, cs, diode=diode).voltages
        one = torch.cat(
            [solver.solve(vs[b : b + 1], cs[b : b + 1], diode=diode).voltages for b in range(6)]
        )
        assert (full - one).abs().max() < 1e-12


def test_floating_node_is_an_error():
    net = Netlist()
    a, b = net.add_nodes(2)
    net.add_resistor(a, 0, 1e-3)
    net.add_isource(0, b, 1e-3)  # b has no resistive path anywhere
    with pytest.raises(ValueError, match="singular"):
        NetlistSolver(net)
    with pytest.raises(ValueError, match="out of range"):
        net.add_resistor(a, 7, 1.0)
    with pytest.raises(ValueError, match="is_"):
        DiodeModel(is_=0.0)


def test_scalar_diode_equation():
    a = torch.tensor([1e-12, 1e-9, 0.0], dtype=torch.float64)[:, None]
    b = torch.tensor([0.03, 1e-3, 0.02], dtype=torch.float64)[:, None]
    d = torch.linspace(-5, 5, 101, dtype=torch.float64)[None, :].expand(3, -1)
    w = solve_exp_lin(a, b, d)
    assert (a * torch.expm1(w) + b * w - d).abs().max() < 1e-12
    # layer solve is the node's KCL with the diode + Rs branch
    model = DiodeModel(is_=1e-12, n=1.0, rs=3.0)
    den = torch.tensor([0.5, 0.01], dtype=torch.float64)
    sign = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    drive = torch.randn(7, 2, dtype=torch.float64)
    v = layer_solve(drive, den, sign, model)
    i = branch_current(sign * v, model)
    assert (den * v - drive + sign * i).abs().max() < 1e-12
    # co-content derivative is the branch current
    vv = torch.linspace(-1, 0.9, 50, dtype=torch.float64)
    h = 1e-6
    deriv = (cocontent(vv + h, model) - cocontent(vv - h, model)) / (2 * h)
    assert torch.allclose(deriv, branch_current(vv, model), rtol=1e-5, atol=1e-12)
