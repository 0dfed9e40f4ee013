"""What the array needs to form a contrastive update itself: held signals, not gradients.

EqProp (and contrastive learning) descend along ``−∂L/∂θ ≈ s·(∂E/∂θ(B) − ∂E/∂θ(A)) / batch``
summed over the batch, from two equilibria ``A`` and ``B`` (centered EqProp: ``A = s^+β``,
``B = s^−β``, ``s = 1/(2β)``). This module turns a :class:`GradientEstimate`'s equilibria into
the per-sample signals an array can apply without a digital outer product:

* deep Hopfield network: ``−∂E/∂W_k = s_kᵀ s_{k+1}`` per sample, so
  ``a_A b_A − a_B b_B = ½[(a_A − a_B)ᵀ(b_A + b_B) + (a_A + a_B)ᵀ(b_A − b_B)]``: the periphery
  holds each line's value at both equilibria (sample-and-hold) and drives two coincidence
  updates from their differences and sums (:class:`OuterTerm`); the clamped input layer has no
  difference, so ``W_0`` needs one (``x`` against the difference of layer 1, as in
  Gokmen & Vlasov's ``x·δ``). A bias is a row of constant input 1.
* deep resistive network: ``∂E/∂G_ij = ½ΔV_ij²``, so each device's change is
  ``−½ s·(ΔV_ij(A)² − ΔV_ij(B)²)`` per sample, set by the voltages across that device in the
  two phases (Kendall et al., arXiv:2006.01981, 2020) (:class:`LocalTerm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from npusim.circuits.hopfield import DeepHopfield
from npusim.circuits.resistive import DeepResistive
from npusim.core.errors import NpusimError
from npusim.core.interfaces import Estimator, GradientEstimate, Network
from npusim.core.phases import Phase
from npusim.learning.estimators import Contrastive, EqProp


class InArrayError(NpusimError, ValueError):
    """The learning rule or network has no in-array (coincidence) update."""


@dataclass
class OuterTerm:
    """Descent direction ``Σ_s scale·rows[s]ᵀ cols[s]`` (weights) or ``Σ_s scale·cols[s]``
    (a bias, ``rows`` all ones). ``rows``: (batch, n_in); ``cols``: (batch, n_out)."""

    rows: Tensor
    cols: Tensor
    scale: float


@dataclass
class LocalTerm:
    """Descent direction per device ``Σ_s −½·scale·((a_s,i − b_s,j)² − (c_s,i − d_s,j)²)``:
    ``(a, b)`` the two layers' node voltages in phase A, ``(c, d)`` in phase B (batch-first)."""

    a: Tensor
    b: Tensor
    c: Tensor
    d: Tensor
    scale: float

    def values(self, s: int) -> Tensor:
        """Sample ``s``'s descent direction per device, shape (n_in, n_out)."""
        va = self.a[s][:, None] - self.b[s][None, :]
        vb = self.c[s][:, None] - self.d[s][None, :]
        return (vb.square_() - va.square_()).mul_(0.5 * self.scale)


Term = OuterTerm | LocalTerm


def contrast(
    estimator: Estimator, est: GradientEstimate
) -> tuple[list[Tensor], list[Tensor], float]:
    """The two equilibria ``(A, B)`` an estimate contrasts and its scale ``s`` (descent along
    ``s·(∂E/∂θ(B) − ∂E/∂θ(A))``). Raises :class:`InArrayError` for a rule without one
    (backprop)."""
    ph = est.phases
    if isinstance(estimator, EqProp):
        b = estimator.beta
        if estimator.variant == "centered":
            return ph[Phase.NUDGED_PLUS].state, ph[Phase.NUDGED_MINUS].state, 1.0 / (2 * b)
        if estimator.variant == "positive":
            return ph[Phase.NUDGED_PLUS].state, ph[Phase.FREE].state, 1.0 / b
        return ph[Phase.FREE].state, ph[Phase.NUDGED_MINUS].state, 1.0 / b
    if isinstance(estimator, Contrastive):
        return ph[Phase.NUDGED_PLUS].state, ph[Phase.FREE].state, 1.0
    raise InArrayError(
        f"{type(estimator).__name__.lower()} has no in-array update (it needs a digital "
        "gradient); use --outer-product digital, or --algorithm eqprop or contrastive"
    )


def in_array_terms(
    model: Network, x: Tensor, estimator: Estimator, est: GradientEstimate
) -> list[list[Term]]:
    """Per parameter (order of ``model.params()``), the terms whose sum is the batch's descent
    direction ``−Σ_s ∂L_s/∂θ``/batch, formed from held signals (see the module docstring).
    ``x``: the inputs the relaxations saw (after the DACs)."""
    A, B, s = contrast(estimator, est)
    n = x.shape[0]
    s = s / n
    s_in = model.input_layer(x)
    L = len(A)
    la, lb = [s_in, *A], [s_in, *B]
    if isinstance(model, DeepResistive):
        weights: list[list[Term]] = [
            [LocalTerm(la[k], la[k + 1], lb[k], lb[k + 1], s)] for k in range(L)
        ]
    elif isinstance(model, DeepHopfield):
        weights = [[OuterTerm(s_in, A[0] - B[0], s)]]
        for k in range(1, L):
            a_d, a_s = la[k] - lb[k], la[k] + lb[k]
            b_d, b_s = la[k + 1] - lb[k + 1], la[k + 1] + lb[k + 1]
            weights.append([OuterTerm(a_d, b_s, 0.5 * s), OuterTerm(a_s, b_d, 0.5 * s)])
    else:
        raise InArrayError(f"no in-array update for the network {type(model).__name__}")
    ones = torch.ones(n, 1, dtype=s_in.dtype)
    biases: list[list[Term]] = [[OuterTerm(ones, A[k] - B[k], s)] for k in range(L)]
    return weights + biases
