"""Gradient estimators: Equilibrium Propagation, contrastive learning, backprop baseline.

Each estimator reads a network's equilibria and returns an estimate of ∂L/∂θ for the batch-mean
loss ``L = mean ½‖s_L − t‖²`` (same order as ``model.params()``). EqProp and contrastive
learning use only the energy's local derivatives ∂E/∂θ at two or three equilibria, which is
what a chip can measure on its own synapses; backprop differentiates through the unrolled
relaxation (what a digital computer would do).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from npusim.circuits.hybrid import HybridNetwork
from npusim.core.interfaces import (
    Estimator,
    GradientEstimate,
    Network,
    Reader,
    Relaxation,
    Update,
)
from npusim.core.phases import Phase
from npusim.learning.chained import chained_eqprop

VARIANTS = ("positive", "negative", "centered")


def _difference(
    model: Network,
    x: Tensor,
    a: list[Tensor],
    b: list[Tensor],
    scale: float,
    read: Reader | None = None,
) -> list[Update]:
    """``scale · (∂E/∂θ(a) − ∂E/∂θ(b))`` (the network's fused form); the equilibria are first
    read through ``read`` when given."""
    if read is not None:
        a, b = read(a), read(b)
    return model.grad_difference(x, a, b, scale)


@dataclass
class EqProp:
    """Equilibrium Propagation (Scellier & Bengio 2017) with nudging β and a variant:
    ``positive`` (s^0, s^+β), ``negative`` (s^−β, s^0) or ``centered`` (s^−β, s^+β; Laborieux et
    al. 2021), whose bias is O(β²) instead of O(β). ``read``: how the chip reads the equilibria
    it learns from (default: exactly)."""

    beta: float = 0.2
    variant: str = "centered"
    sweeps: int = 15
    free_sweeps: int | None = None
    tol: float = 0.0
    read: Reader | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta}")

    def __call__(self, model: Network, x: Tensor, target: Tensor) -> GradientEstimate:
        if isinstance(model, HybridNetwork):  # EqProp inside each block, backprop between
            return chained_eqprop(
                model, x, target, beta=self.beta, variant=self.variant, sweeps=self.sweeps,
                free_sweeps=self.free_sweeps, tol=self.tol, read=self.read,
            )  # fmt: skip
        b = self.beta
        betas = {"centered": (b, -b), "positive": (b,), "negative": (-b,)}[self.variant]
        free, nudged = model.relax_phases(
            x, target, betas, sweeps=self.sweeps, free_sweeps=self.free_sweeps, tol=self.tol
        )
        phases = {Phase.FREE: free}
        if self.variant == "centered":  # relaxed side by side (on a chip: one after the other)
            phases[Phase.NUDGED_PLUS], phases[Phase.NUDGED_MINUS] = plus, minus = nudged
            grads = _difference(model, x, plus.state, minus.state, 1.0 / (2 * b), self.read)
        elif self.variant == "positive":
            phases[Phase.NUDGED_PLUS] = plus = nudged[0]
            grads = _difference(model, x, plus.state, free.state, 1.0 / b, self.read)
        else:
            phases[Phase.NUDGED_MINUS] = minus = nudged[0]
            grads = _difference(model, x, free.state, minus.state, 1.0 / b, self.read)
        return GradientEstimate(grads, free, phases)


@dataclass
class Contrastive:
    """Contrastive learning (Movellan 1991): the output clamped to the target versus free (the
    clamped phase is the +β phase with β = ∞)."""

    sweeps: int = 15
    tol: float = 0.0
    read: Reader | None = None

    def __call__(self, model: Network, x: Tensor, target: Tensor) -> GradientEstimate:
        free, (clamped,) = model.relax_phases(
            x, target, (math.inf,), sweeps=self.sweeps, tol=self.tol
        )
        grads = _difference(model, x, clamped.state, free.state, 1.0, self.read)
        return GradientEstimate(grads, free, {Phase.FREE: free, Phase.NUDGED_PLUS: clamped})


@dataclass
class Backprop:
    """Backpropagation through the unrolled free relaxation (the digital baseline; it reads
    the network's state exactly, so ``read`` is always None)."""

    sweeps: int = 15
    read: Reader | None = None

    def __call__(self, model: Network, x: Tensor, target: Tensor) -> GradientEstimate:
        params = model.params()
        for p in params:
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                free = model.relax(x, sweeps=self.sweeps)
                loss = model.cost(free.state, target).mean()
                grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        finally:
            for p in params:
                p.requires_grad_(False)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        free = Relaxation([s.detach() for s in free.state], free.residual, free.sweeps)
        return GradientEstimate(grads, free, {Phase.FREE: free})


# name -> factory(beta, variant, sweeps, free_sweeps): a new rule is one entry here
ESTIMATORS: dict[str, Callable[[float, str, int, int | None], Estimator]] = {
    "eqprop": lambda beta, variant, sweeps, free: EqProp(
        beta=beta, variant=variant, sweeps=sweeps, free_sweeps=free
    ),
    "contrastive": lambda beta, variant, sweeps, free: Contrastive(sweeps=sweeps),
    "backprop": lambda beta, variant, sweeps, free: Backprop(sweeps=free or sweeps),
}
ALGORITHMS = tuple(ESTIMATORS)


def make_estimator(
    algorithm: str, *, beta: float, variant: str, sweeps: int, free_sweeps: int | None = None
) -> Estimator:
    """Estimator by name from :data:`ESTIMATORS` (``eqprop`` takes ``variant``)."""
    if algorithm not in ESTIMATORS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return ESTIMATORS[algorithm](beta, variant, sweeps, free_sweeps)
