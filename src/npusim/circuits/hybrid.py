"""Hybrid feed-forward + energy-based networks (ff-EBMs; Nest & Ernoult, NeurIPS 2024).

A chain of stages: each applies digital feed-forward blocks (pooling) to the previous stage's
output (or the input image), then relaxes an energy-based block (:class:`HopfieldBlock`) with
that as its clamped input. The whole network is not energy-based: its blocks settle one after
the other, and a nudge acts on the last block. :func:`npusim.learning.chained.chained_eqprop`
trains it by EqProp inside each block and backprop between blocks.

All weights (dense and convolutional, see :mod:`npusim.circuits.couplings`) are crossbar arrays
of the chip; the activations moved between blocks pass through the chip's converters
(``read``, set when the network is put on a chip).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from npusim.circuits.arch import ArchError, Layer, Pool, parse_arch
from npusim.circuits.block import HopfieldBlock
from npusim.circuits.couplings import Conv, Coupling, Dense, Pooled
from npusim.circuits.layered import LayeredNetwork
from npusim.core.interfaces import ArrayShape, Reader, Relaxation, Update
from npusim.core.outer import dense


def pool(spec: Pool, s: Tensor) -> Tensor:
    """A digital pooling block on ``(batch, C, H, W)`` states."""
    f = F.max_pool2d if spec.kind == "max" else F.avg_pool2d
    return f(s, spec.size, spec.size)


def _coupling(layer: Layer, in_shape: tuple[int, ...]) -> Coupling:
    if layer.pool_in:
        if len(in_shape) != 3:
            raise ValueError(f"an average pool needs image units, got units of shape {in_shape}")
        plain = replace(layer, pool_in=0)
        return Pooled(in_shape, layer.pool_in, lambda shape: _coupling(plain, shape))  # type: ignore[arg-type]
    if layer.kind == "fc":
        return Dense(in_shape, layer.size)
    if len(in_shape) != 3:
        raise ValueError(f"a convolution needs an image input, got units of shape {in_shape}")
    return Conv(in_shape, layer.size, layer.kernel, layer.stride, layer.padding)  # type: ignore[arg-type]


class HybridNetwork:
    """Stages of pooling blocks and energy-based blocks built from an architecture string
    (:func:`npusim.circuits.arch.parse_arch`) for ``in_shape = (C, H, W)`` inputs."""

    normalised_states = True

    def __init__(
        self,
        arch: str,
        in_shape: tuple[int, int, int],
        num_classes: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.arch, self.in_shape, self.dtype = arch, tuple(in_shape), dtype
        self.read: Reader | None = None  # the converters between blocks (None: exact)
        g = torch.Generator().manual_seed(seed)
        self.pools: list[tuple[Pool, ...]] = []
        self.blocks: list[HopfieldBlock] = []
        self.ff_ops: list[int] = []  # digital operations per sample before each block
        try:
            shape = self._build(parse_arch(arch), g)
        except ValueError as e:  # a layer that does not fit the data: the user's architecture
            raise ArchError(f"architecture {arch!r} on {self.in_shape} inputs: {e}") from None
        if shape != (num_classes,):
            raise ArchError(
                f"architecture {arch!r}: the output layer has {math.prod(shape)} units; the data "
                f"has {num_classes} classes (end the architecture with fc{num_classes})"
            )
        self.couplings = [c for b in self.blocks for c in b.couplings]
        self.sizes = [math.prod(self.in_shape), *(c.out_units for c in self.couplings)]

    def _build(self, stages: list, g: torch.Generator) -> tuple[int, ...]:
        """Couplings and pooling blocks of ``stages``, initialised from ``g``; the output
        layer's shape."""
        shape: tuple[int, ...] = self.in_shape
        for pools, layers in stages:
            ops = 0
            for p in pools:
                if len(shape) != 3 or shape[1] < p.size or shape[2] < p.size:
                    raise ValueError(f"a {p.size}×{p.size} pool does not fit units {shape}")
                shape = (shape[0], shape[1] // p.size, shape[2] // p.size)
                ops += math.prod(shape) * p.size * p.size  # one op per window element
            couplings = []
            for layer in layers:
                c = _coupling(layer, shape)
                c.init_weight(1.0, g, self.dtype)
                couplings.append(c)
                shape = c.out_shape
            self.pools.append(pools)
            self.blocks.append(HopfieldBlock(couplings))
            self.ff_ops.append(ops)
        return shape

    # ---- what the chip holds ------------------------------------------------------------
    @property
    def logical_sizes(self) -> list[int]:
        return list(self.sizes)

    @property
    def signed(self) -> list[bool]:
        return [True] * (2 * len(self.couplings))

    @property
    def arrays(self) -> list[ArrayShape]:
        out = []
        for k, block in enumerate(self.blocks):
            for j, c in enumerate(block.couplings):
                ops = self.ff_ops[k] if j == 0 else 0
                out.append(
                    ArrayShape(*c.weight.shape, c.uses, c.in_units, c.out_units, j > 0, k, ops)
                )
        return out

    def params(self) -> list[Tensor]:
        """Every array's weights, then every layer's biases."""
        return [c.weight for c in self.couplings] + [c.bias for c in self.couplings]

    load_params = LayeredNetwork.load_params  # copies into params(), shapes checked

    def block_sweeps(self, sweeps: int) -> list[int]:
        """Sweeps each block runs in a relaxation of ``sweeps`` (a one-layer block: 1)."""
        return [1 if b.depth == 1 else sweeps for b in self.blocks]

    # ---- relaxing ---------------------------------------------------------------------
    def split(self, state: list[Tensor]) -> list[list[Tensor]]:
        """The whole network's state as one list per block."""
        out, i = [], 0
        for b in self.blocks:
            out.append(list(state[i : i + b.depth]))
            i += b.depth
        return out

    def block_input(self, k: int, x: Tensor, prev: Tensor | None) -> Tensor:
        """Block ``k``'s clamped input: the image ``x`` (k = 0) or the previous block's output
        layer ``prev`` through the converters and the pooling blocks between."""
        s = x.reshape(-1, *self.in_shape).to(self.dtype) if k == 0 else prev
        if k > 0 and self.read is not None:
            s = self.read([s])[0]
        for p in self.pools[k]:
            s = pool(p, s)
        return s

    def relax(
        self,
        x: Tensor,
        state: list[Tensor] | None = None,
        *,
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        sweeps: int = 15,
        tol: float = 0.0,
        tile: int = 1,
    ) -> Relaxation:
        """Every block to its equilibrium given the one before (warm-started from ``state``);
        ``beta`` nudges the last block towards ``target``. The residual is the largest of the
        blocks', the sweeps the most any block ran."""
        if tile > 1:
            x = x.repeat(tile, *[1] * (x.dim() - 1))
        parts = self.split(state) if state is not None else [None] * len(self.blocks)
        out: list[Tensor] = []
        residual, done, prev = 0.0, 0, None
        for k, block in enumerate(self.blocks):
            last = k == len(self.blocks) - 1
            rel = block.relax(
                self.block_input(k, x, prev), parts[k],
                beta=beta if last else 0.0, target=target if last else None,
                sweeps=sweeps, tol=tol,
            )  # fmt: skip
            out += rel.state
            residual, done = max(residual, rel.residual), max(done, rel.sweeps)
            prev = rel.state[-1]
        return Relaxation(out, residual, done)

    def output(self, state: list[Tensor]) -> Tensor:
        return state[-1]

    cost = staticmethod(LayeredNetwork.cost)

    predict = LayeredNetwork.predict  # argmax of the free equilibrium's output

    def inputs(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        """Each block's clamped input for the states ``state`` (their previous blocks)."""
        parts = self.split(state)
        return [self.block_input(k, x, parts[k - 1][-1] if k else None) for k in range(len(parts))]

    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """The sum of the blocks' energies, each block clamped to its input in ``state``."""
        parts = self.split(state)
        us = self.inputs(x, state)
        return sum(b.energy(u, s) for b, u, s in zip(self.blocks, us, parts, strict=True))

    def grad_difference(
        self, x: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]:
        """``scale · (∂E/∂θ(a) − ∂E/∂θ(b))`` summed over blocks (each block's input from
        ``a``'s earlier blocks), in the order of :meth:`params`."""
        us, pa, pb = self.inputs(x, a), self.split(a), self.split(b)
        per = [blk.grad_difference(u, p, q, scale) for blk, u, p, q in zip(self.blocks, us, pa, pb)]
        return self.join(per)

    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        zero = [torch.zeros_like(s) for s in state]
        return [dense(g) for g in self.grad_difference(x, state, zero, 1.0)]

    def join(self, per_block: list[list[Update]]) -> list[Update]:
        """Per-block ``[weights…, biases…]`` lists as one list in the order of :meth:`params`."""
        weights, biases = [], []
        for blk, g in zip(self.blocks, per_block, strict=True):
            weights += g[: blk.depth]
            biases += g[blk.depth :]
        return weights + biases

    def dissipated_power(self, x: Tensor, state: list[Tensor]) -> Tensor | None:
        return None

    def read_gains(self, spec) -> list[Tensor] | None:
        return None
