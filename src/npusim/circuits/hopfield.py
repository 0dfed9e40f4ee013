"""Deep Hopfield network (DHN): hard-sigmoid units in [0, 1], dense couplings between layers.

Energy (normalised units)::

    E(s) = Σ_k ½‖s_k‖² − Σ_k s_kᵀ W_k s_{k+1} − Σ_k b_kᵀ s_{k+1}      (k over free layers for ½‖s‖²)

with every free unit constrained to [0, 1]. Given its neighbours, layer k's exact minimiser is
``clip(s_{k−1} W_{k−1} + s_{k+1} W_kᵀ + b_{k−1}, 0, 1)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.circuits.layered import LayeredNetwork
from npusim.core.outer import OuterProduct


class DeepHopfield(LayeredNetwork):
    """Layered Hopfield network; ``sizes = [inputs, hidden..., outputs]``."""

    def __init__(
        self,
        sizes: list[int],
        *,
        weight_gains: list[float] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(sizes, dtype)
        gains = weight_gains or [1.0] * (len(sizes) - 1)
        if len(gains) != len(sizes) - 1:
            raise ValueError(f"need {len(sizes) - 1} weight gains, got {len(gains)}")
        g = torch.Generator().manual_seed(seed)
        self.weights = []
        for n_in, n_out, gain in zip(self.sizes[:-1], self.sizes[1:], gains):
            bound = gain / math.sqrt(n_in)
            w = (torch.rand(n_in, n_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
            self.weights.append(w.to(dtype))
        self.biases = [torch.zeros(n, dtype=dtype) for n in self.sizes[1:]]

    @property
    def signed(self) -> list[bool]:
        return [True] * (2 * self.num_layers)

    def _output_curvature(self) -> float:
        return 1.0

    def _fused_units(self) -> tuple:
        """Every unit clamped to [0, 1], no division."""

        def bounds():
            lo = [torch.zeros(n, dtype=self.dtype) for n in self.sizes[1:-1]]
            return None, lo, [torch.ones(n, dtype=self.dtype) for n in self.sizes[1:-1]], 0.0, 1.0

        return self._memo("fused_units", (), bounds)

    def input_layer(self, x: Tensor) -> Tensor:
        return x.to(self.dtype)

    def _layer_solve(self, k: int, drive: Tensor) -> Tensor:
        return drive.clamp_(0.0, 1.0) if not drive.requires_grad else drive.clamp(0.0, 1.0)

    def _activate_output(self, v: Tensor) -> Tensor:
        return v.clamp_(0.0, 1.0) if not v.requires_grad else v.clamp(0.0, 1.0)

    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor:
        layers = [self.input_layer(x), *state]
        e = sum(0.5 * s.pow(2).sum(1) for s in state)
        for k, w in enumerate(self.weights):
            e = e - ((layers[k] @ w) * layers[k + 1]).sum(1) - layers[k + 1] @ self.biases[k]
        return e

    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        layers = [self.input_layer(x), *state]
        n = x.shape[0]
        gw = [-(layers[k].t() @ layers[k + 1]) / n for k in range(self.num_layers)]
        gb = [-s.mean(0) for s in state]
        return gw + gb

    def grad_difference(
        self, x: Tensor, plus: list[Tensor], minus: list[Tensor], scale: float
    ) -> list[Tensor | OuterProduct]:
        """``scale · (∂E/∂θ(plus) − ∂E/∂θ(minus))`` batch-averaged; weights as outer products."""
        s_in = self.input_layer(x)
        c = -scale / x.shape[0]
        gw = [OuterProduct(s_in, (plus[0] - minus[0]) * c)]
        for k in range(1, self.num_layers):
            a = torch.cat([plus[k - 1], minus[k - 1]], 0)
            b = torch.cat([plus[k] * c, minus[k] * -c], 0)
            gw.append(OuterProduct(a, b))
        gb = [(p - m).sum(0) * c for p, m in zip(plus, minus)]
        return gw + gb
