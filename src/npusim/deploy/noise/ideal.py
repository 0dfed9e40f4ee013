"""The ideal device family: conductances are exactly what was programmed, forever."""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.deploy.noise.base import InferenceNoise, register


@register("ideal")
class IdealNoise(InferenceNoise):
    """No programming error, drift, read noise, output noise, IR drop or stuck devices."""

    def __init__(self, chip, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(chip, **kw)
        self.stuck_min = self.stuck_max = 0.0

    def program_std(self, y_target: Tensor) -> Tensor:
        return torch.zeros_like(y_target)

    def drift_nu(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        return torch.zeros_like(y_target)

    def read_std(self, y_t: Tensor, y_target: Tensor, t: float) -> Tensor:
        return torch.zeros_like(y_t)
