"""The DRN with Shockley diodes: exact layer solves, energy minimum, ideal limit, --diode."""

import pytest
import torch

from npusim.circuits.netlist import DiodeModel
from npusim.circuits.resistive import DeepResistive
from npusim.circuits.shockley import branch_current, layer_sign

SIZES = [10, 16, 12, 4]


def drn(diode: str = "shockley", model: DiodeModel | None = None) -> DeepResistive:
    net = DeepResistive(
        SIZES, input_gain=5.0, seed=1, dtype=torch.float64, diode=diode, diode_model=model
    )
    g = torch.Generator().manual_seed(2)
    for b in net.biases:
        b.copy_((torch.rand(b.shape, generator=g, dtype=torch.float64) - 0.5) * 0.2)
    return net


def inputs(batch: int = 8) -> torch.Tensor:
    return torch.rand(
        batch, SIZES[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )


def test_steady_state_obeys_kcl_with_diode_currents():
    model = DiodeModel(is_=1e-12, n=1.2, rs=3.0)
    net, x = drn(model=model), inputs()
    res = net.relax(x, sweeps=2000, tol=1e-14)
    layers = [net.input_voltages(x), *res.state]
    conducting = 0
    for k in range(1, net.num_layers):  # hidden layers
        v = layers[k]
        drive = layers[k - 1] @ net.weights[k - 1] + net.biases[k - 1]
        drive = drive + layers[k + 1] @ net.weights[k].t()
        sign = layer_sign(v.shape[1], v.dtype)
        i = branch_current(sign * v, model)  # diode current away from the node, times sign
        kcl = drive - net.node_conductance(k) * v - sign * i
        assert kcl.abs().max() < 1e-10
        conducting += int((i > 1e-6).sum())
    assert conducting > 0


def test_relaxed_state_minimises_energy():
    net, x = drn(model=DiodeModel(rs=1.0)), inputs()
    state = net.relax(x, sweeps=2000, tol=1e-14).state
    e0 = net.energy(x, state)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        moved = [s + 1e-3 * torch.randn(s.shape, generator=g, dtype=s.dtype) for s in state]
        assert (net.energy(x, moved) >= e0 - 1e-12).all()


def test_steep_diodes_approach_ideal():
    x = inputs()
    ideal = torch.cat(drn("ideal").relax(x, sweeps=2000, tol=1e-13).state, 1)
    steep = drn(model=DiodeModel(is_=1e-9, n=0.005))
    near = torch.cat(steep.relax(x, sweeps=2000, tol=1e-13).state, 1)
    assert (near - ideal).abs().max() < 5e-3  # forward drop n·Vt·ln(I/Is) ≈ 1 mV


def test_bad_diode_name():
    with pytest.raises(ValueError, match="diode"):
        DeepResistive(SIZES, diode="zener")


def test_train_config_diode_option():
    from npusim.runtime.config import ConfigError, TrainConfig
    from npusim.runtime.train import build_model

    cfg = TrainConfig(model="drn", hidden=[8], diode="shockley").resolved()
    net = build_model(cfg, 6, 3)
    assert net.diode == "shockley" and net.diode_model is not None
    with pytest.raises(ConfigError, match="diode"):
        TrainConfig(model="dhn", diode="shockley").resolved()
