"""SGD with momentum that returns parameter updates instead of applying them.

The updates are handed to the synapses (ideal or device model), which decide what the chip
really stores; the optimiser never writes parameters itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from npusim.core.outer import OuterProduct, dense
from npusim.devices.ideal import add_exact


@dataclass
class SGD:
    """Per-parameter learning rates ``lrs``; ``Δθ = −lr·(m ← μ·m + g + λ·θ)``."""

    lrs: list[float]
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_scale: float = 1.0
    buffers: list[Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if any(lr < 0 for lr in self.lrs):
            raise ValueError(f"learning rates must be >= 0, got {self.lrs}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def deltas(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """Updates for ``params`` given gradient estimates ``grads`` (same order)."""
        if len(grads) != len(self.lrs):
            raise ValueError(f"{len(grads)} gradients for {len(self.lrs)} learning rates")
        lrs = [lr * self.lr_scale for lr in self.lrs]
        if not self.weight_decay and not self.momentum:  # outer products stay factored
            return [
                g.scaled(-lr) if isinstance(g, OuterProduct) else g * -lr
                for g, lr in zip(grads, lrs)
            ]
        grads = [dense(g) for g in grads]
        if self.weight_decay:
            grads = [g.add(p, alpha=self.weight_decay) for g, p in zip(grads, params)]
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                for m, g in zip(self.buffers, grads):
                    m.mul_(self.momentum).add_(g)
            grads = self.buffers
        return [g * -lr for g, lr in zip(grads, lrs)]

    def state_dict(self) -> dict:
        return {"buffers": None if self.buffers is None else [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = state["buffers"]


def apply_ideal(
    params: list[Tensor], deltas: list[Tensor | OuterProduct], signed: list[bool]
) -> None:
    """Ideal synapses: ``θ += Δθ`` exactly; non-negative parameters (conductances) stay ≥ 0."""
    with torch.no_grad():
        for p, d, s in zip(params, deltas, signed):
            add_exact(p, d, s)
