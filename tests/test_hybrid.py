"""Hybrid feed-forward + energy-based networks: couplings, exact block relaxation, chained
BP–EP against autograd, architecture strings, and training on the chip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from npusim.circuits import DeepHopfield
from npusim.circuits.arch import ArchError, parse_arch
from npusim.circuits.block import HopfieldBlock
from npusim.circuits.couplings import Conv, Dense, Pooled
from npusim.circuits.hybrid import HybridNetwork
from npusim.core.outer import dense
from npusim.learning.estimators import Backprop, EqProp

D = torch.float64


def _conv(in_shape, c, k, s, p, seed=0) -> Conv:
    cp = Conv(in_shape, c, k, s, p)
    cp.init_weight(1.0, torch.Generator().manual_seed(seed), D)
    cp.bias.uniform_(-0.1, 0.1)
    return cp


@pytest.mark.parametrize(("k", "s", "p"), [(3, 1, 1), (5, 1, 0), (3, 2, 0), (4, 2, 1)])
def test_conv_adjoint_and_weight_gradient_match_autograd(k: int, s: int, p: int) -> None:
    torch.manual_seed(0)
    cp = _conv((2, 9, 9), 3, k, s, p)
    a = torch.rand(4, 2, 9, 9, dtype=D, requires_grad=True)
    d = torch.rand(4, *cp.out_shape, dtype=D)
    w = cp.weight.requires_grad_(True)
    inner = (d * (cp.drive(a) - cp.bias.view(1, -1, 1, 1))).sum()  # ⟨d, A(a)⟩
    ga, gw = torch.autograd.grad(inner, [a, w])
    w.requires_grad_(False)
    assert torch.allclose(cp.adjoint(d), ga, atol=1e-12)  # Aᵀ is the exact adjoint
    assert torch.allclose(dense(cp.weight_grad(a.detach(), d)), gw, atol=1e-12)
    assert cp.weight.shape == (2 * k * k, 3) and cp.uses == cp.out_shape[1] * cp.out_shape[2]
    # the crossbar over unfolded patches computes the same convolution as torch's layer
    kernel = cp.weight.t().reshape(3, 2, k, k)
    assert torch.allclose(cp.drive(a.detach()), F.conv2d(a.detach(), kernel, cp.bias, s, p))


def test_average_pool_inside_a_block_is_an_exact_adjoint_pair() -> None:
    """``A = conv ∘ avgpool`` on a 9×9 layer (the pooling drops the odd edge): ``Aᵀ`` and the
    crossbar gradient equal autograd's."""
    cp = Pooled((2, 9, 9), 2, lambda shape: Conv(shape, 3, 3, 1, 1))
    cp.init_weight(1.0, torch.Generator().manual_seed(0), D)
    a = torch.rand(4, 2, 9, 9, dtype=D, requires_grad=True)
    d = torch.rand(4, *cp.out_shape, dtype=D)
    w = cp.weight.requires_grad_(True)
    ga, gw = torch.autograd.grad((d * cp.drive(a)).sum(), [a, w])
    w.requires_grad_(False)
    assert cp.out_shape == (3, 4, 4) and cp.uses == 16 and cp.rows == 18
    assert torch.allclose(cp.adjoint(d), ga, atol=1e-12)
    assert torch.allclose(dense(cp.weight_grad(a.detach(), d)), gw, atol=1e-12)


def _block(seed: int = 0) -> HopfieldBlock:
    g = torch.Generator().manual_seed(seed)
    c1 = Conv((1, 6, 6), 3, 3, 1, 1)
    c2 = Conv((3, 6, 6), 4, 3, 2, 0)
    c3 = Dense((4, 2, 2), 5)
    for c in (c1, c2, c3):
        c.init_weight(2.0, g, D)
        c.bias.uniform_(-0.2, 0.4, generator=g)
    return HopfieldBlock([c1, c2, c3])


def test_block_relaxation_reaches_the_exact_constrained_minimum() -> None:
    """At the fixed point every unit satisfies the box-constrained optimality conditions of the
    energy (∂E/∂s = 0 inside (0, 1), ≥ 0 at 0, ≤ 0 at 1), checked with autograd; the energy
    never rises from one sweep to the next."""
    blk = _block()
    u = torch.rand(3, 1, 6, 6, dtype=D)
    state, energies = None, []
    for _ in range(200):
        rel = blk.relax(u, state, sweeps=1)
        state = rel.state
        energies.append(blk.energy(u, state).sum().item())
    assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:], strict=False))
    assert rel.residual < 1e-10
    s = [t.clone().requires_grad_(True) for t in state]
    grads = torch.autograd.grad(blk.energy(u, s).sum(), s)
    for t, g in zip(state, grads, strict=True):
        inside = (t > 1e-9) & (t < 1 - 1e-9)
        assert g[inside].abs().max() < 1e-9
        assert (g[t <= 1e-9] >= -1e-9).all() and (g[t >= 1 - 1e-9] <= 1e-9).all()


def test_block_parameter_gradients_match_autograd_of_the_energy() -> None:
    blk = _block(1)
    u = torch.rand(3, 1, 6, 6, dtype=D)
    state = blk.relax(u, sweeps=30).state
    params = [c.weight for c in blk.couplings] + [c.bias for c in blk.couplings]
    for p in params:
        p.requires_grad_(True)
    ref = torch.autograd.grad(blk.energy(u, state).mean(), params)
    for p in params:
        p.requires_grad_(False)
    zero = [torch.zeros_like(s) for s in state]
    ours = [dense(g) for g in blk.grad_difference(u, state, zero, 1.0)]
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def _cosine(a: list, b: list) -> float:
    x = torch.cat([dense(g).flatten() for g in a])
    y = torch.cat([dense(g).flatten() for g in b])
    return float(F.cosine_similarity(x, y, 0))


@pytest.mark.parametrize(
    "arch",
    [
        "conv3k3-conv4k3-pool|fc8|fc10",
        "conv4k3-pool|fc12-fc10",
        "conv4k3s2p0-avgpool|fc10",
        "conv4k3-apool-conv6k3-apool-fc10",
    ],
)
@pytest.mark.parametrize("variant", ["centered", "positive"])
def test_chained_bp_ep_agrees_with_autograd_through_the_whole_network(
    arch: str, variant: str
) -> None:
    """The chained estimate (EqProp in each block, backprop between) equals the gradient of the
    loss through the whole network at equilibrium (autograd through long relaxations)."""
    torch.manual_seed(0)
    net = HybridNetwork(arch, (1, 8, 8), 10, seed=1, dtype=D)
    for p in net.params():  # strong couplings: the blocks' feedback matters
        p.mul_(2.0) if p.dim() == 2 else p.add_(0.1)
    x = torch.rand(6, 64, dtype=D)
    t = F.one_hot(torch.arange(6) % 10, 10).to(D)
    ref = Backprop(sweeps=200)(net, x, t).grads
    # a one-sided estimate also reads how far the free phase still had to settle: relax longer
    est = EqProp(beta=1e-4, variant=variant, sweeps=200 if variant == "centered" else 1000)(
        net, x, t
    )
    assert _cosine(est.grads, ref) >= 0.99
    norm = sum(dense(g).norm() ** 2 for g in est.grads) ** 0.5
    assert norm / sum(dense(g).norm() ** 2 for g in ref) ** 0.5 == pytest.approx(1.0, rel=1e-2)
    assert est.blocks is not None and len(est.blocks) == len(net.blocks)


def test_one_block_hybrid_is_the_deep_hopfield_network() -> None:
    """``fc16-fc10`` as a hybrid network relaxes and learns exactly as the DHN 64-16-10."""
    net = HybridNetwork("fc16-fc10", (1, 8, 8), 10, seed=3)
    dhn = DeepHopfield([64, 16, 10], seed=3)
    dhn.load_params(net.params())
    x = torch.rand(5, 64)
    t = F.one_hot(torch.arange(5), 10).float()
    a = EqProp(beta=0.2, sweeps=20)(net, x, t)
    b = EqProp(beta=0.2, sweeps=20)(dhn, x, t)
    for s, r in zip(a.free.state, b.free.state, strict=True):
        assert torch.allclose(s, r, atol=1e-6)
    for g, h in zip(a.grads, b.grads, strict=True):
        assert torch.allclose(dense(g), dense(h), atol=1e-6)


def test_architecture_strings() -> None:
    stages = parse_arch("conv8k5-pool|conv16-conv16-maxpool3|fc10")
    assert [len(layers) for _, layers in stages] == [1, 2, 1]
    assert stages[1][1][0].padding == 1 and stages[2][0][0].size == 3
    assert [len(layers) for _, layers in parse_arch("dhn-3h-split2")] == [2, 2]
    one = parse_arch("conv8k5-apool-conv16k5-apool3-fc10")
    assert len(one) == 1 and [x.pool_in for x in one[0][1]] == [0, 2, 3]
    for bad, words in [
        ("conv8x-fc10", "not one of"),
        ("fc10-pool", "must end with a weight layer"),
        ("fc32-conv8-fc10", "convolution after a dense"),
        ("conv8--fc10", "empty item"),
        ("conv0-fc10", "outside"),
        ("conv8", "dense output layer"),
        ("apool-conv8-fc10", "between two weight layers"),
        ("conv8-apool|fc10", "between two weight layers"),
        ("conv8-apool-pool-fc10", "between two weight layers"),
    ]:
        with pytest.raises(ArchError, match=words):
            parse_arch(bad)
    with pytest.raises(ArchError, match="fc10"):
        HybridNetwork("conv4-pool|fc12", (1, 8, 8), 10)
    with pytest.raises(ArchError, match="does not fit"):
        HybridNetwork("conv4k9p0-fc10", (1, 8, 8), 10)
    with pytest.raises(ArchError, match="pool does not fit"):
        HybridNetwork("fc16|pool|fc10", (1, 8, 8), 10)


def _bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 3×10×10 colour images of three classes: a horizontal bar in the red channel,
    a vertical bar in the green one, a diagonal in the blue one, at random places, in noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    img = torch.rand(n, 3, 10, 10, generator=g) * 0.3
    pos = torch.randint(1, 9, (n,), generator=g)
    idx = torch.arange(n)
    img[idx[y == 0], 0, pos[y == 0], :] = 1.0
    img[idx[y == 1], 1, :, pos[y == 1]] = 1.0
    diag = torch.eye(10, dtype=torch.bool)
    img[idx[y == 2], 2] = torch.where(diag, 1.0, img[idx[y == 2], 2])
    return img.reshape(n, -1), y


def _synthetic():
    from npusim.data.datasets import Dataset

    parts = [t for seed, n in ((0, 600), (1, 150), (2, 150)) for t in _bars(n, seed)]
    return Dataset("bars", *parts, 3, (3, 10, 10))


@pytest.mark.parametrize("chip", ["ideal", "rram"])
def test_a_hybrid_conv_network_learns_synthetic_colour_images(chip: str) -> None:
    """Three epochs of chained BP-EP on 600 synthetic images: test error below 20% against
    chance's 67% (on the ideal chip and through the rram preset's devices and converters)."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.train import Trainer

    cfg = TrainConfig(
        model="hybrid",
        arch="conv8k3-pool|fc16|fc3",
        epochs=3,
        lrs=[0.1],
        augment=0,
        rotate=0.0,
        zoom=0.0,
        chip=chip,
    )
    tr = Trainer(cfg, data=_synthetic(), ledger=Ledger())
    for _ in range(3):
        rec = tr.run_epoch()
    assert rec.test_error < 0.20
    if chip == "rram":
        assert tr.synapses is not None and tr.synapses.total_pulses > 0
        assert tr.model.read is not None  # activations between blocks go through the ADCs
    led = tr.ledger
    assert [a.block for a in led.arrays] == [0, 1, 2] and led.arrays[0].uses == 100
    # each block's phases counted with the sweeps it ran: one-layer blocks settle in one sweep
    assert led.mean_sweeps("free") == 1.0


def test_an_architecture_that_does_not_fit_the_data_is_one_error_line(tmp_path, capsys) -> None:
    from npusim.cli.main import main

    rc = main(["train", "--model", "hybrid", "--dataset", "digits", "--arch", "conv8k9p0-fc10",
               "--out", str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not fit" in err


def test_train_model_hybrid_writes_test_error(tmp_path) -> None:
    import json

    from npusim.cli.main import main

    out = tmp_path / "run"
    rc = main(["train", "--model", "hybrid", "--dataset", "digits", "--epochs", "3", "--out",
               str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["arch"] == "mnist-conv-fc" and res["test_error"] < 0.4  # chance 0.9
    assert len(res["ledger"]["arrays"]) == 4
    assert res["config"]["rotate"] == 0.0  # rotations and zooms are for 28×28 digits


def test_rotations_and_zooms_are_a_hybrid_default_on_28x28_digits_only() -> None:
    from npusim.runtime.config import TrainConfig

    cases = [("hybrid", "mnist5k", (10.0, 0.1)), ("hybrid", "digits", (0.0, 0.0)),
             ("hybrid", "cifar10", (0.0, 0.0)), ("dhn", "mnist5k", (0.0, 0.0))]  # fmt: skip
    for model, dataset, want in cases:
        cfg = TrainConfig(model=model, dataset=dataset).resolved()
        assert (cfg.rotate, cfg.zoom) == want, (model, dataset)
    cfg = TrainConfig(model="hybrid", rotate=0.0, zoom=0.2).resolved()  # given: kept
    assert (cfg.rotate, cfg.zoom, cfg.arch) == (0.0, 0.2, "mnist-conv-fc")
