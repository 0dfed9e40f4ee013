"""An energy-based block: a deep Hopfield network over dense or convolutional couplings.

Layers ``s_1 .. s_m`` are free, hard-sigmoid units in [0, 1]; ``s_0 = u`` is the block's
clamped input (an image, or the previous block's output after the feed-forward block between
them). Energy (normalised units), with couplings ``A_j`` (:mod:`npusim.circuits.couplings`)::

    E(s; u) = Σ_j ½‖s_j‖² − Σ_j ⟨s_j, A_j(s_{j−1}) + b_j⟩   [+ β·C(s_m)]

No coupling joins units of one layer, so layer ``j``'s exact minimiser given its neighbours is
``clip(A_j(s_{j−1}) + b_j + A_{j+1}ᵀ(s_{j+1}), 0, 1)``; odd and even layers alternate
(block-coordinate descent, exact per layer). A nudge acts on the last layer: towards a target,
``C = ½‖s_m − t‖²`` (minimiser ``clip((d + βt)/(1 + β))``), or along an error signal ``δ``
handed back by the next block, ``C = ⟨δ, s_m⟩`` (minimiser ``clip(d − βδ)``).

:class:`FeedForwardLayer` is an analog feed-forward block: one coupling read once,
``s = clip(A(u) + b, 0, 1)`` (the hard-sigmoid of the energy-based units), with no feedback
and no relaxation; it has no energy and is trained by backprop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.circuits.couplings import Coupling
from npusim.circuits.layered import NudgeNotConvex, RelaxationDiverged
from npusim.core.interfaces import Relaxation, Update
from npusim.core.outer import OuterProduct


def _per_sample(beta: float | Tensor, like: Tensor) -> float | Tensor:
    """A per-sample β of shape (batch, 1) broadcast over ``like``'s (batch, …) shape."""
    if isinstance(beta, Tensor):
        return beta.to(like.dtype).view(-1, *[1] * (like.dim() - 1))
    return beta


class HopfieldBlock:
    """Free layers joined by ``couplings`` (``couplings[0]`` reads the clamped input)."""

    def __init__(self, couplings: list[Coupling]) -> None:
        if not couplings:
            raise ValueError("an energy-based block needs at least one weight layer")
        for a, b in zip(couplings[:-1], couplings[1:], strict=False):
            if a.out_shape != b.in_shape:
                raise ValueError(f"layer shapes do not chain: {a.out_shape} then {b.in_shape}")
        self.couplings = couplings

    @property
    def depth(self) -> int:
        """Free layers m."""
        return len(self.couplings)

    def init_state(
        self, batch: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> list[Tensor]:
        return [
            torch.zeros(batch, *c.out_shape, dtype=dtype, device=device) for c in self.couplings
        ]

    def energy(
        self,
        u: Tensor,
        state: list[Tensor],
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        delta: Tensor | None = None,
    ) -> Tensor:
        """Energy of each sample (batch,), the nudge ``β·C`` included."""
        layers = [u, *state]
        e = sum(0.5 * s.pow(2).flatten(1).sum(1) for s in state)
        for j, c in enumerate(self.couplings):
            e = e - (layers[j + 1] * c.drive(layers[j])).flatten(1).sum(1)
        out = state[-1]
        if target is not None:
            cost = 0.5 * (out - target).pow(2).flatten(1).sum(1)
        elif delta is not None:
            cost = (out * delta).flatten(1).sum(1)
        else:
            return e
        b = beta.view(-1) if isinstance(beta, Tensor) else beta
        return e + b * cost

    def relax(
        self,
        u: Tensor,
        state: list[Tensor] | None = None,
        *,
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        delta: Tensor | None = None,
        sweeps: int = 15,
        tol: float = 0.0,
        drive: Tensor | None = None,
    ) -> Relaxation:
        """Exact block-coordinate relaxation (odd layers, then even, per sweep) from ``state``
        (default all zeros), stopping after ``sweeps`` sweeps or once no unit moves by more
        than ``tol``. A one-layer block is exact after one sweep. ``beta`` (a float, or one per
        sample of shape (batch, 1)) nudges the last layer towards ``target`` or along
        ``delta``; ``drive``: ``A_1(u) + b_1`` when the caller already has it (then it may
        hold several copies of the batch ``u``, e.g. the +β and −β phases side by side)."""
        if sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {sweeps}")
        nudged = isinstance(beta, Tensor) or beta != 0.0
        if nudged and (target is None) == (delta is None):
            raise ValueError("a nudged relaxation needs a target or an error signal (one)")
        low = float(beta.min()) if isinstance(beta, Tensor) else beta
        if target is not None and low <= -1.0:
            raise NudgeNotConvex(f"beta={low:g}: the −β phase needs β < 1 (output curvature 1)")
        m = self.depth
        first = self.couplings[0].drive(u) if drive is None else drive
        state = list(
            self.init_state(u.shape[0], first.dtype, first.device) if state is None else state
        )
        b = _per_sample(beta, state[-1]) if nudged else 0.0
        sweeps = 1 if m == 1 else sweeps
        order = list(range(0, m, 2)) + list(range(1, m, 2))  # 0-based: layers 1, 3, … then 2, …
        residual, done = math.inf, 0
        for done in range(1, sweeps + 1):
            check = tol > 0.0 or done == sweeps
            old = list(state) if check else None
            for j in order:
                d = first if j == 0 else self.couplings[j].drive(state[j - 1])
                if j + 1 < m:
                    d = d + self.couplings[j + 1].adjoint(state[j + 1])
                elif target is not None and nudged:
                    d = (d + b * target) / (1.0 + b) if not math.isinf(low) else target.clone()
                elif delta is not None and nudged:
                    d = d - b * delta
                state[j] = d.clamp(0.0, 1.0)
            if check:  # a NaN or inf anywhere makes the residual (or the one layer's sum) NaN
                if m == 1:
                    residual, finite = 0.0, math.isfinite(float(state[0].detach().sum()))
                else:
                    residual = max(
                        float((s - o).detach().abs().max()) for s, o in zip(state, old, strict=True)
                    )
                    finite = math.isfinite(residual)
                if not finite:
                    raise RelaxationDiverged(
                        "relaxation diverged (NaN/inf in a block's state); lower the learning "
                        "rate or check the parameters"
                    )
                if residual <= tol:
                    break
        return Relaxation(state=state, residual=residual, sweeps=done)

    def grad_difference(
        self, u: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]:
        """``scale · (∂E/∂θ(a) − ∂E/∂θ(b))`` averaged over the batch: the block's weights, then
        its biases (``a``, ``b``: two equilibria of the same input ``u``)."""
        c = -scale / u.shape[0]
        weights: list[Update] = []
        for j, cp in enumerate(self.couplings):
            if j == 0:
                g = cp.weight_grad(u, a[0] - b[0])
            else:  # both equilibria's correlations, as one product of twice the batch
                g = cp.weight_grad(torch.cat([a[j - 1], b[j - 1]]), torch.cat([a[j], -b[j]]))
            weights.append(g.scaled(c) if not isinstance(g, Tensor) else g * c)
        biases = [cp.bias_grad(p - q) * c for cp, p, q in zip(self.couplings, a, b, strict=True)]
        return weights + biases

    def input_grad_difference(self, a: list[Tensor], b: list[Tensor], scale: float) -> Tensor:
        """``scale · (∂E/∂u(a) − ∂E/∂u(b))`` per sample: the error signal on the block's input
        (``∂E/∂u = −A_1ᵀ(s_1)``)."""
        return self.couplings[0].adjoint(a[0] - b[0]) * -scale


class FeedForwardLayer:
    """An analog feed-forward layer: ``s = clip(A(u) + b, 0, 1)`` in one read of its crossbar
    (``couplings[0]``), no feedback, no relaxation. Its output is a block's output like an
    energy-based block's, so it takes the same calls; its energy is zero."""

    depth = 1

    def __init__(self, coupling: Coupling) -> None:
        self.couplings = [coupling]

    def init_state(
        self, batch: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> list[Tensor]:
        return [torch.zeros(batch, *self.couplings[0].out_shape, dtype=dtype, device=device)]

    def relax(
        self,
        u: Tensor,
        state: list[Tensor] | None = None,
        *,
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        delta: Tensor | None = None,
        sweeps: int = 15,
        tol: float = 0.0,
        drive: Tensor | None = None,
    ) -> Relaxation:
        """The layer's output for input ``u`` (``drive``: ``A(u) + b`` when the caller has it).
        A feed-forward layer is never nudged (the output layer is energy-based)."""
        if isinstance(beta, Tensor) or beta != 0.0:
            raise ValueError("a feed-forward layer is not nudged; the output layer is energy-based")
        s = (self.couplings[0].drive(u) if drive is None else drive).clamp(0.0, 1.0)
        if not math.isfinite(float(s.detach().sum())):
            raise RelaxationDiverged(
                "a feed-forward layer's output is NaN/inf; lower the learning rate or check the "
                "parameters"
            )
        return Relaxation(state=[s], residual=0.0, sweeps=1)

    def energy(self, u: Tensor, state: list[Tensor], *args, **kwargs) -> Tensor:
        """No energy: zero per sample (batch,)."""
        return state[0].new_zeros(u.shape[0])

    def backward(
        self, u: Tensor, drive: Tensor, delta: Tensor, *, need_input: bool = True
    ) -> tuple[list[Update], Tensor | None]:
        """Backprop of a per-sample error ``delta = ∂ℓ/∂s`` (``drive``: ``A(u) + b``): the
        batch-mean gradients ``[∂L/∂W, ∂L/∂b]`` and the error on the input ``∂ℓ/∂u`` per sample
        (None unless ``need_input``). The hard-sigmoid passes ``delta`` where ``0 ≤ drive ≤ 1``
        (as autograd's clamp)."""
        c, n = self.couplings[0], u.shape[0]
        e = delta * ((drive >= 0.0) & (drive <= 1.0)).to(delta.dtype)
        g = c.weight_grad(u, e)
        gw = g.scaled(1.0 / n) if isinstance(g, OuterProduct) else g / n
        return [gw, c.bias_grad(e) / n], c.adjoint(e) if need_input else None

    def grad_difference(
        self, u: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]:
        """No energy, so no energy gradient: zeros for the weights and the bias."""
        c = self.couplings[0]
        return [torch.zeros_like(c.weight), torch.zeros_like(c.bias)]

    def input_grad_difference(self, a: list[Tensor], b: list[Tensor], scale: float) -> Tensor:
        """No energy: zero error on the input."""
        return a[0].new_zeros(a[0].shape[0], *self.couplings[0].in_shape)
