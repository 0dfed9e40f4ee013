"""Hybrid feed-forward + energy-based networks: couplings, exact block relaxation, chained
BP–EP against autograd, architecture strings, and training on the chip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from npusim.circuits import DeepHopfield
from npusim.circuits.arch import ArchError, parse_arch
from npusim.circuits.block import HopfieldBlock
from npusim.circuits.couplings import Conv, Dense
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
    ["conv3k3-conv4k3-pool|fc8|fc10", "conv4k3-pool|fc12-fc10", "conv4k3s2p0-avgpool|fc10"],
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
    for bad, words in [
        ("conv8x-fc10", "not one of"),
        ("fc10-pool", "must end with a weight layer"),
        ("fc32-conv8-fc10", "convolution after a dense"),
        ("conv8--fc10", "empty item"),
        ("conv0-fc10", "outside"),
        ("conv8", "dense output layer"),
    ]:
        with pytest.raises(ArchError, match=words):
            parse_arch(bad)
    with pytest.raises(ValueError, match="fc10"):
        HybridNetwork("conv4-pool|fc12", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="does not fit"):
        HybridNetwork("conv4k9p0-fc10", (1, 8, 8), 10)
