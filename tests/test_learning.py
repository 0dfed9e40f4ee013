"""Gradient estimators checked against autograd, and learning checked by accuracy reached."""

import math

import pytest
import torch

from npusim.circuits import DeepHopfield, DeepResistive
from npusim.core.outer import OuterProduct, dense
from npusim.learning import Backprop, Contrastive, EqProp


def _net(model):
    g = torch.Generator().manual_seed(1)
    if model == "dhn":
        m = DeepHopfield([6, 8, 7, 4], weight_gains=[1.5, 1.5, 1.5], seed=1, dtype=torch.float64)
        for b in m.biases:
            b.copy_(0.3 + torch.randn(b.shape, generator=g, dtype=torch.float64) * 0.2)
    else:
        m = DeepResistive([6, 8, 7, 4], input_gain=4.0, seed=1, dtype=torch.float64)
        for b in m.biases:
            b.copy_(torch.randn(b.shape, generator=g, dtype=torch.float64) * 0.05)
    x = torch.rand(5, 6, generator=g, dtype=torch.float64)
    t = torch.nn.functional.one_hot(torch.arange(5) % 4, 4).double()
    return m, x, t


def _cos(a, b):
    a = torch.cat([dense(g).flatten() for g in a])
    b = torch.cat([dense(g).flatten() for g in b])
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("model", ["dhn", "drn"])
def test_centered_eqprop_matches_backprop_at_equilibrium(model):
    m, x, t = _net(model)
    ep = EqProp(beta=1e-3, variant="centered", sweeps=500)(m, x, t)
    bp = Backprop(sweeps=500)(m, x, t)
    assert min(float(g.norm()) for g in bp.grads) > 1e-4  # no layer saturated
    assert _cos(ep.grads, bp.grads) >= 0.99
    # the magnitudes agree too, not only the direction
    ratio = (
        torch.cat([dense(g).flatten() for g in ep.grads]).norm()
        / torch.cat([g.flatten() for g in bp.grads]).norm()
    )
    assert abs(float(ratio) - 1) < 0.02


@pytest.mark.parametrize("variant", ["positive", "negative"])
def test_one_sided_eqprop_is_close_for_small_beta(variant):
    m, x, t = _net("dhn")
    ep = EqProp(beta=1e-4, variant=variant, sweeps=500)(m, x, t)
    bp = Backprop(sweeps=500)(m, x, t)
    assert _cos(ep.grads, bp.grads) >= 0.98


@pytest.mark.parametrize("model", ["dhn", "drn"])
def test_fused_outer_product_equals_the_difference_of_energy_gradients(model):
    m, x, t = _net(model)
    free = m.relax(x, sweeps=50)
    plus = m.relax(x, free.state, beta=0.5, target=t, sweeps=50).state
    minus = m.relax(x, free.state, beta=-0.5, target=t, sweeps=50).state
    fused = m.grad_difference(x, plus, minus, 0.7)
    ref = [(a - b) * 0.7 for a, b in zip(m.param_grads(x, plus), m.param_grads(x, minus))]
    for f, r in zip(fused, ref):
        assert torch.allclose(dense(f), r, atol=1e-12)
    assert isinstance(fused[0], OuterProduct)


def test_param_grads_match_autograd_of_the_energy():
    for model in ("dhn", "drn"):
        m, x, t = _net(model)
        state = m.relax(x, sweeps=30).state
        params = m.params()
        for p in params:
            p.requires_grad_(True)
        e = m.energy(x, state).mean()
        auto = torch.autograd.grad(e, params)
        for p in params:
            p.requires_grad_(False)
        for a, b in zip(auto, m.param_grads(x, state)):
            assert torch.allclose(a, b, atol=1e-12)


def test_contrastive_step_lowers_the_training_loss():
    m, x, t = _net("dhn")
    loss0 = float(m.cost(m.relax(x, sweeps=100).state, t).mean())
    for _ in range(20):
        g = Contrastive(sweeps=100)(m, x, t).grads
        for p, d in zip(m.params(), g):
            p.sub_(0.2 * dense(d))
    loss1 = float(m.cost(m.relax(x, sweeps=100).state, t).mean())
    assert loss1 < 0.7 * loss0


def test_estimator_arguments_are_validated():
    with pytest.raises(ValueError, match="variant"):
        EqProp(variant="sideways")
    with pytest.raises(ValueError, match="beta"):
        EqProp(beta=math.inf)
