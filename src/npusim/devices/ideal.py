"""Exact synapses: the ideal chip, and the digital periphery's registers for biases."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from npusim.core.outer import OuterProduct


def deliver(weights: list[Tensor], out: list[Tensor] | None) -> list[Tensor]:
    """Return ``weights``, also copied into ``out`` when given (the ``read`` contract)."""
    if out is not None:
        for o, w in zip(out, weights, strict=True):
            o.copy_(w)
    return weights


def add_exact(p: Tensor, d: Any, signed: bool) -> None:
    """p += d exactly (a factored outer product is added in one pass), clamped if non-negative."""
    if isinstance(d, OuterProduct):  # the clamp in the same pass
        d.add_to(p, nonneg=not signed)
        return
    if hasattr(d, "add_to"):
        d.add_to(p)
    else:
        p.add_(d)
    if not signed:
        p.clamp_(min=0.0)


class IdealSynapses:
    """Exact weights: ``apply`` is ``p.add_(d)`` (then ``clamp_(min=0)`` if non-negative).

    A factored update (an object with ``add_to``, e.g. a rank-r outer product) is
    added with its own ``add_to`` so results equal the core's ideal path bit for bit.
    """

    def __init__(self, params: list[Tensor], signed: list[bool]) -> None:
        self.params = params
        self.signed = list(signed)
        self.updates = 0
        self.total_pulses = 0
        self.reset_pulses = 0

    @torch.no_grad()
    def apply(self, params: list[Tensor], deltas: list[Any]) -> None:
        """Add each delta to its parameter in place."""
        for p, d, sgn in zip(params, deltas, self.signed, strict=True):
            add_exact(p, d, sgn)
        self.updates += 1

    def read(
        self,
        t_after_programming_s: float = 0.0,
        generator: torch.Generator | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """Weights as read at any time: exactly the parameters (no noise, no drift)."""
        weights = [p.detach().clone() for p in self.params]
        return deliver(weights, out)

    def pulse_stats(self) -> dict[str, float]:
        """No devices are programmed: all counts are zero."""
        return {
            "devices": 0,
            "pulses_total": 0,
            "pulses_mean": 0.0,
            "pulses_max": 0,
            "reset_pulses": 0,
            "refreshes": 0,
            "refresh_pulses": 0,
            "stuck_devices": 0,
            "updates": self.updates,
        }

    def periphery_events(self) -> dict[str, int]:
        """No update-rule work beyond the update itself."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "ideal", "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
