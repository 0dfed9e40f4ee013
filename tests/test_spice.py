"""npusim's steady states against ngspice's operating point (skipped without ngspice)."""

import pytest
import torch

from npusim.circuits.netlist import DiodeModel, Netlist, drn_to_netlist, random_netlist
from npusim.circuits.netlist_solve import NetlistSolver
from npusim.circuits.resistive import DeepResistive
from npusim.circuits.spice import have_ngspice, ngspice_op, read_raw, to_spice
from npusim.learning.estimators import EqProp

needs_ngspice = pytest.mark.skipif(
    not have_ngspice(),
    reason="ngspice not installed (apt-get install ngspice): SPICE checks skipped",
)
TOL_V = 1e-6  # linear parts and Shockley diodes (V)
#: ideal diodes vs ngspice's steep Shockley diode (Is = 1 nA, n = 0.01: forward drop ≤ ~5 mV)
STEEP = DiodeModel(is_=1e-9, n=0.01)
TOL_IDEAL_V = 1e-2


def inputs(net, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    vs = torch.rand(batch, len(net.vsources), generator=g, dtype=torch.float64) * 10 - 5
    cs = (torch.rand(batch, len(net.isources), generator=g, dtype=torch.float64) * 10 - 5) * 1e-3
    return vs, cs


def test_deck_and_raw_roundtrip():
    net = random_netlist(
        3,
        num_diodes=1,
        num_vsources=1,
        num_isources=1,
        seed=0,
        model=DiodeModel(is_=2e-9, n=2.0, rs=0.5),
    )
    deck = to_spice(net)
    assert "R0 " in deck and "D0 " in deck and "V0 " in deck and "I0 " in deck
    assert "IS=2.0000000000000001e-09 N=2 RS=0.5" in deck and "\nop\n" in deck
    raw = (
        "Title: t\nDate: x\nPlotname: Operating Point\nFlags: real\nNo. Variables: 3\n"
        "No. Points: 1\nVariables:\n\t0\tV(2)\tvoltage\n\t1\tv(1)\tvoltage\n"
        "\t2\tv0#branch\tcurrent\nValues:\n 0\t1.5e+00\n\t-2.25e-01\n\t1e-3\n"
    )
    volts = read_raw(raw + raw.replace("1.5e+00", "3.0"), 2)
    assert volts.tolist() == [[0.0, -0.225, 1.5], [0.0, -0.225, 3.0]]


@needs_ngspice
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_netlist_matches_ngspice(seed):
    net = random_netlist(60, num_vsources=4, num_isources=4, seed=seed)
    vs, cs = inputs(net, 3, seed)
    dv = (NetlistSolver(net).solve(vs, cs).voltages - ngspice_op(net, vs, cs)).abs().max()
    assert dv <= TOL_V, f"max |ΔV| = {dv:.3g} V"


@needs_ngspice
@pytest.mark.parametrize(
    "seed,model",
    [
        (0, DiodeModel()),
        (1, DiodeModel(is_=1e-14, n=1.8, rs=10.0)),
        (2, DiodeModel(is_=2.52e-9, n=1.752, rs=0.568)),  # 1N4148-like
        (3, STEEP),
    ],
)
def test_shockley_netlist_matches_ngspice(seed, model):
    net = random_netlist(40, num_diodes=12, num_vsources=3, num_isources=3, model=model, seed=seed)
    vs, cs = inputs(net, 4, seed)
    st = NetlistSolver(net).solve(vs, cs)
    assert (st.diode_currents > 1e-6).any()  # some diodes conduct
    dv = (st.voltages - ngspice_op(net, vs, cs)).abs().max()
    assert dv <= TOL_V, f"max |ΔV| = {dv:.3g} V"


@needs_ngspice
@pytest.mark.parametrize("seed", [0, 1])
def test_ideal_netlist_near_steep_ngspice(seed):
    net = random_netlist(40, num_diodes=12, num_vsources=3, num_isources=3, model=STEEP, seed=seed)
    vs, cs = inputs(net, 4, seed)
    dv = NetlistSolver(net).solve(vs, cs, diode="ideal").voltages - ngspice_op(net, vs, cs)
    assert dv.abs().max() <= TOL_IDEAL_V, f"max |ΔV| = {dv.abs().max():.3g} V"


def train_tiny_drn(diode: DiodeModel | None) -> DeepResistive:
    """A small DRN (6 features → 10 → 8 → 3) trained by 20 EqProp steps on a fixed random task,
    with Shockley diodes if ``diode`` is given, else ideal ones."""
    model = DeepResistive(
        [6, 10, 8, 3],
        input_gain=2.0,
        seed=3,
        dtype=torch.float64,
        diode="ideal" if diode is None else "shockley",
        diode_model=diode,
    )
    g = torch.Generator().manual_seed(4)
    for b in model.biases:
        b.copy_((torch.rand(b.shape, generator=g, dtype=torch.float64) - 0.5) * 0.2)
    x = torch.rand(32, 6, generator=g, dtype=torch.float64)
    t = torch.nn.functional.one_hot((x[:, 0] > x[:, 1]).long() + (x[:, 2] > 0.5).long(), 3)
    est = EqProp(beta=0.1, sweeps=200, tol=1e-9)
    for _ in range(20):
        grads = est(model, x, t.double()).grads
        for p, grad in zip(model.params(), grads):
            p.sub_(0.05 * (grad.dense() if hasattr(grad, "dense") else grad))
        for w in model.weights:
            w.clamp_(min=0.0)
    return model


@needs_ngspice
@pytest.mark.parametrize("diode", ["shockley", "ideal"])
def test_trained_drn_matches_ngspice(diode):
    dm = DiodeModel(is_=1e-12, n=1.2, rs=5.0) if diode == "shockley" else STEEP
    model = train_tiny_drn(diode=dm if diode == "shockley" else None)
    x = torch.rand(
        3,
        model.weights[0].shape[0] // 2,
        generator=torch.Generator().manual_seed(9),
        dtype=torch.float64,
    )
    state = model.relax(x, sweeps=3000, tol=1e-13).state
    net, layers = drn_to_netlist(model, x[0], diode=dm)
    ref = ngspice_op(net, model.input_voltages(x))
    free = torch.tensor([n for layer in layers[1:] for n in layer])
    dv = (ref[:, free] - torch.cat(state, 1)).abs().max()
    tol = TOL_V if diode == "shockley" else TOL_IDEAL_V
    assert dv <= tol, f"max |ΔV| = {dv:.3g} V"
    st = NetlistSolver(net).solve(model.input_voltages(x), diode=diode)
    assert (st.voltages - ref).abs().max() <= tol


@needs_ngspice
def test_floating_sources_and_diode_chain_match_ngspice():
    """Any topology: a source between two free nodes, a diode chain, a bridge."""
    net = Netlist()
    n = net.add_nodes(6)
    net.add_resistor(n[0], 0, 1e-3)
    net.add_vsource(n[1], n[0], 2.5)  # floating source: V2 − V1 = 2.5 V
    net.add_diode(n[1], n[2], DiodeModel(rs=50.0))
    net.add_diode(n[2], n[3], DiodeModel(is_=1e-10, n=1.5))
    net.add_resistor(n[3], 0, 2e-3)
    net.add_resistor(n[2], n[4], 5e-4)
    net.add_resistor(n[4], n[5], 1e-3)
    net.add_resistor(n[5], 0, 1e-3)
    net.add_resistor(n[4], 0, 3e-4)
    net.add_isource(n[5], n[0], 1e-3)  # 1 mA from node 6 into node 1
    net.add_diode(n[5], n[4], DiodeModel())
    st = NetlistSolver(net).solve()
    assert abs(st.voltages[0, n[1]] - st.voltages[0, n[0]] - 2.5) < 1e-12
    dv = (st.voltages - ngspice_op(net)).abs().max()
    assert dv <= TOL_V, f"max |ΔV| = {dv:.3g} V"
