"""Hybrid feed-forward + energy-based networks (ff-EBMs; Nest & Ernoult, NeurIPS 2024).

A chain of stages: each applies digital feed-forward ops (pooling, batch normalisation) to the
previous stage's output (or the input image), then computes a block with that as its clamped
input: an energy-based block (:class:`HopfieldBlock`) relaxes, an analog feed-forward layer
(:class:`FeedForwardLayer`) is read once. The whole network is not energy-based: its blocks
settle one after the other, and a nudge acts on the last block (always energy-based).
:func:`npusim.learning.chained.chained_eqprop` trains it by EqProp inside each energy-based
block and backprop through everything between them.

All weights (dense and convolutional, see :mod:`npusim.circuits.couplings`), of energy-based
and feed-forward layers alike, are crossbar arrays of the chip; batch normalisation's scale and
shift are 1-D, so the chip's periphery holds them as exact digital registers. The activations
moved between blocks pass through the chip's converters (``read``, set when the network is put
on a chip).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from npusim.circuits.arch import ArchError, Layer, Norm, Pool, parse_arch
from npusim.circuits.block import FeedForwardLayer, HopfieldBlock
from npusim.circuits.couplings import Conv, Coupling, Dense, Pooled
from npusim.circuits.layered import LayeredNetwork
from npusim.circuits.phases import relax_phases
from npusim.core.interfaces import ArrayShape, Reader, Relaxation, Update
from npusim.core.outer import dense

Block = HopfieldBlock | FeedForwardLayer


def pool(spec: Pool, s: Tensor) -> Tensor:
    """A digital pooling block on ``(batch, C, H, W)`` states."""
    f = F.max_pool2d if spec.kind == "max" else F.avg_pool2d
    return f(s, spec.size, spec.size)


class BatchNorm:
    """Digital batch normalisation of units of shape ``shape``: per channel of ``(C, H, W)``
    units, per feature of ``(n,)`` ones, ``y = γ (s − μ)/√(σ² + ε) + β``. ``weight`` (γ) and
    ``bias`` (β) are trained by backprop. Training normalises with the batch's statistics and
    updates the running ones (momentum 0.1, unbiased variance, as ``torch.nn.BatchNorm2d``);
    evaluation uses the running statistics (so does a training batch of one value per
    channel)."""

    eps = 1e-5
    momentum = 0.1

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        c = shape[0]
        self.shape = tuple(shape)
        self.weight = torch.ones(c, dtype=dtype)
        self.bias = torch.zeros(c, dtype=dtype)
        self.running_mean = torch.zeros(c, dtype=dtype)
        self.running_var = torch.ones(c, dtype=dtype)

    @property
    def ops(self) -> int:
        """Digital operations per sample: one multiply-add per unit (statistics folded in)."""
        return 2 * math.prod(self.shape)

    def __call__(
        self,
        s: Tensor,
        *,
        train: bool,
        update: bool = True,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """``s`` normalised: with the batch's statistics when ``train`` (and the running ones
        updated when ``update``), else the running ones; ``weight``/``bias`` replace γ/β."""
        w = self.weight if weight is None else weight
        b = self.bias if bias is None else bias
        if train and s.numel() > s.shape[1]:
            rm, rv = (self.running_mean, self.running_var) if update else (None, None)
            return F.batch_norm(s, rm, rv, w, b, True, self.momentum, self.eps)
        return F.batch_norm(s, self.running_mean, self.running_var, w, b, False, 0.0, self.eps)


Op = Pool | BatchNorm


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
    """Stages of feed-forward ops and blocks built from an architecture (a string, a preset or
    a ``.toml`` file; :func:`npusim.circuits.arch.parse_arch`) for ``in_shape = (C, H, W)``
    inputs. ``blocks[k]``: stage ``k``'s energy-based block or analog feed-forward layer;
    ``ops[k]``: the digital ops before it.

    Batch normalisation uses the batch's statistics while training (the chained estimator, and
    a relaxation autograd differentiates the parameters through: backprop's) and the running
    statistics otherwise (:meth:`predict`, evaluation); ``train`` overrides this."""

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
        self.ops: list[tuple[Op, ...]] = []
        self.blocks: list[Block] = []
        self.ff_ops: list[int] = []  # digital operations per sample before each block
        try:
            shape = self._build(parse_arch(arch), g)
        except ValueError as e:  # a layer that does not fit the data: the user's architecture
            if isinstance(e, ArchError):
                raise
            raise ArchError(f"architecture {arch!r} on {self.in_shape} inputs: {e}") from None
        if shape != (num_classes,):
            raise ArchError(
                f"architecture {arch!r}: the output layer has {math.prod(shape)} units; the data "
                f"has {num_classes} classes (end the architecture with fc{num_classes})"
            )
        self.couplings = [c for b in self.blocks for c in b.couplings]
        self.sizes = [math.prod(self.in_shape), *(c.out_units for c in self.couplings)]

    def _build(self, stages: list, g: torch.Generator) -> tuple[int, ...]:
        """Couplings and feed-forward ops of ``stages``, initialised from ``g``; the output
        layer's shape."""
        shape: tuple[int, ...] = self.in_shape
        for specs, layers in stages:
            ops: list[Op] = []
            count = 0
            for p in specs:
                if isinstance(p, Norm):
                    ops.append(BatchNorm(shape, self.dtype))
                    count += ops[-1].ops
                    continue
                if len(shape) != 3 or shape[1] < p.size or shape[2] < p.size:
                    raise ValueError(f"a {p.size}×{p.size} pool does not fit units {shape}")
                shape = (shape[0], shape[1] // p.size, shape[2] // p.size)
                count += math.prod(shape) * p.size * p.size  # one op per window element
                ops.append(p)
            couplings = []
            for layer in layers:
                c = _coupling(layer, shape)
                c.init_weight(1.0, g, self.dtype)
                couplings.append(c)
                shape = c.out_shape
            self.ops.append(tuple(ops))
            ff = layers[0].ff
            self.blocks.append(FeedForwardLayer(couplings[0]) if ff else HopfieldBlock(couplings))
            self.ff_ops.append(count)
        return shape

    # ---- what the chip holds ------------------------------------------------------------
    @property
    def norms(self) -> list[BatchNorm]:
        """The batch normalisations, in order."""
        return [op for ops in self.ops for op in ops if isinstance(op, BatchNorm)]

    @property
    def logical_sizes(self) -> list[int]:
        return list(self.sizes)

    @property
    def signed(self) -> list[bool]:
        return [True] * len(self.params())

    @property
    def arrays(self) -> list[ArrayShape]:
        """Every weight layer's crossbar; an analog feed-forward layer's is its block's input
        array (not fed back, read once per pass)."""
        out = []
        for k, block in enumerate(self.blocks):
            for j, c in enumerate(block.couplings):
                ops = self.ff_ops[k] if j == 0 else 0
                back = isinstance(block, FeedForwardLayer) and self.needs_input_error(k)
                out.append(
                    ArrayShape(
                        *c.weight.shape, c.uses, c.in_units, c.out_units, j > 0, k, ops, back
                    )
                )
        return out

    def needs_input_error(self, k: int) -> bool:
        """Whether training hands an error back from block ``k``'s input: to the block before
        it, or to the batch norms in front of it."""
        return k > 0 or any(isinstance(op, BatchNorm) for op in self.ops[k])

    def _pairs(self) -> list[tuple[Tensor, Tensor]]:
        """(weights or γ, bias or β) of every trained layer, in the order of the network."""
        out = []
        for ops, block in zip(self.ops, self.blocks, strict=True):
            out += [(op.weight, op.bias) for op in ops if isinstance(op, BatchNorm)]
            out += [(c.weight, c.bias) for c in block.couplings]
        return out

    def params(self) -> list[Tensor]:
        """Every trained layer's weights (a crossbar; a batch norm's γ), then every layer's
        biases (a batch norm's β), layers in the order of the network (one learning rate
        each: :func:`npusim.circuits.arch.trained_layers`)."""
        pairs = self._pairs()
        return [w for w, _ in pairs] + [b for _, b in pairs]

    load_params = LayeredNetwork.load_params  # copies into params(), shapes checked

    def buffers(self) -> list[Tensor]:
        """The batch norms' running means and variances (state, not trained parameters)."""
        return [t for bn in self.norms for t in (bn.running_mean, bn.running_var)]

    def load_buffers(self, buffers: list[Tensor]) -> None:
        for p, q in zip(self.buffers(), buffers, strict=True):
            p.copy_(q)

    def block_sweeps(self, sweeps: int) -> list[int]:
        """Sweeps each block runs in a relaxation of ``sweeps`` (a one-layer or feed-forward
        block: 1)."""
        return [1 if b.depth == 1 else sweeps for b in self.blocks]

    # ---- relaxing ---------------------------------------------------------------------
    def training(self, train: bool | None = None) -> bool:
        """Whether batch norms use the batch's statistics: ``train``, or by default while
        autograd differentiates the parameters (backprop's training pass)."""
        if train is not None:
            return train
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.params())

    def split(self, state: list[Tensor]) -> list[list[Tensor]]:
        """The whole network's state as one list per block."""
        out, i = [], 0
        for b in self.blocks:
            out.append(list(state[i : i + b.depth]))
            i += b.depth
        return out

    def convert(self, k: int, x: Tensor, prev: Tensor | None) -> Tensor:
        """What the digital ops before block ``k`` read: the image ``x`` (k = 0) or the previous
        block's output layer ``prev`` through the converters."""
        if k == 0:
            return x.reshape(-1, *self.in_shape).to(self.dtype)
        return prev if self.read is None else self.read([prev])[0]

    def apply_ops(self, k: int, s: Tensor, *, train: bool, update: bool = True) -> Tensor:
        """The digital ops before block ``k`` on ``s`` (``train``: batch norms use the batch's
        statistics, and update the running ones when ``update``)."""
        for op in self.ops[k]:
            s = op(s, train=train, update=update) if isinstance(op, BatchNorm) else pool(op, s)
        return s

    def block_input(
        self, k: int, x: Tensor, prev: Tensor | None, *, train: bool | None = None
    ) -> Tensor:
        """Block ``k``'s clamped input: the image ``x`` (k = 0) or the previous block's output
        layer ``prev`` through the converters and the digital ops between."""
        return self.apply_ops(k, self.convert(k, x, prev), train=self.training(train))

    def ops_backward(
        self, k: int, s: Tensor, g_u: Tensor, *, train: bool = True, need_input: bool = True
    ) -> tuple[Tensor | None, list[tuple[Tensor, Tensor]]]:
        """Backprop of the error ``g_u`` on block ``k``'s input through the ops before it
        (applied to ``s`` as in :meth:`apply_ops`, running statistics left alone): the error on
        ``s`` (None unless ``need_input``) and each batch norm's ``(Σ ∂/∂γ, Σ ∂/∂β)``
        contracted with ``g_u``."""
        norms = [op for op in self.ops[k] if isinstance(op, BatchNorm)]
        if not norms and (not need_input or not self.ops[k]):
            return (g_u if need_input else None), []
        with torch.enable_grad():
            v = s.detach().requires_grad_(need_input)
            leaves = [
                (n.weight.detach().requires_grad_(), n.bias.detach().requires_grad_())
                for n in norms
            ]
            u, i = v, 0
            for op in self.ops[k]:
                if isinstance(op, BatchNorm):
                    w, b = leaves[i]
                    u, i = op(u, train=train, update=False, weight=w, bias=b), i + 1
                else:
                    u = pool(op, u)
            wrt = ([v] if need_input else []) + [t for pair in leaves for t in pair]
            grads = list(torch.autograd.grad(u, wrt, g_u))
        g_s = grads.pop(0) if need_input else None
        return g_s, list(zip(grads[0::2], grads[1::2], strict=True))

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
        train: bool | None = None,
    ) -> Relaxation:
        """Every block to its equilibrium given the one before (warm-started from ``state``);
        ``beta`` nudges the last block towards ``target``. The residual is the largest of the
        blocks', the sweeps the most any block ran. ``train``: see :meth:`training`."""
        if tile > 1:
            x = x.repeat(tile, *[1] * (x.dim() - 1))
        train = self.training(train)
        parts = self.split(state) if state is not None else [None] * len(self.blocks)
        out: list[Tensor] = []
        residual, done, prev = 0.0, 0, None
        for k, block in enumerate(self.blocks):
            last = k == len(self.blocks) - 1
            rel = block.relax(
                self.block_input(k, x, prev, train=train), parts[k],
                beta=beta if last else 0.0, target=target if last else None,
                sweeps=sweeps, tol=tol,
            )  # fmt: skip
            out += rel.state
            residual, done = max(residual, rel.residual), max(done, rel.sweeps)
            prev = rel.state[-1]
        return Relaxation(out, residual, done)

    def output(self, state: list[Tensor]) -> Tensor:
        return state[-1]

    relax_phases = relax_phases  # the reference: free, then the nudged tiles as a whole

    cost = staticmethod(LayeredNetwork.cost)

    predict = LayeredNetwork.predict  # argmax of the free equilibrium's output (running stats)

    def inputs(self, x: Tensor, state: list[Tensor], train: bool | None = None) -> list[Tensor]:
        """Each block's clamped input for the states ``state`` (their previous blocks)."""
        parts, train = self.split(state), self.training(train)
        return [
            self.block_input(k, x, parts[k - 1][-1] if k else None, train=train)
            for k in range(len(parts))
        ]

    def energy(self, x: Tensor, state: list[Tensor], train: bool | None = None) -> Tensor:
        """The sum of the energy-based blocks' energies, each block clamped to its input in
        ``state`` (feed-forward layers have none)."""
        parts = self.split(state)
        us = self.inputs(x, state, train)
        return sum(b.energy(u, s) for b, u, s in zip(self.blocks, us, parts, strict=True))

    def grad_difference(
        self, x: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]:
        """``scale · (∂E/∂θ(a) − ∂E/∂θ(b))`` averaged over the batch, summed over blocks (each
        block's input from ``a``'s earlier blocks), in the order of :meth:`params`; a batch
        norm's γ and β reach ``E`` through the next block's input."""
        train, n = self.training(), x.shape[0]
        pa, pb = self.split(a), self.split(b)
        per, prev = [], None
        for k, blk in enumerate(self.blocks):
            s = self.convert(k, x, prev)
            u = self.apply_ops(k, s, train=train, update=False)
            g = blk.grad_difference(u, pa[k], pb[k], scale)
            norms: list[tuple[Tensor, Tensor]] = []
            if any(isinstance(op, BatchNorm) for op in self.ops[k]):
                g_u = blk.input_grad_difference(pa[k], pb[k], scale)
                _, norms = self.ops_backward(k, s, g_u, train=train, need_input=False)
            per.append([(gw / n, gb / n) for gw, gb in norms] + self.pairs_of(blk, g))
            prev = pa[k][-1]
        return self.join(per)

    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        zero = [torch.zeros_like(s) for s in state]
        return [dense(g) for g in self.grad_difference(x, state, zero, 1.0)]

    @staticmethod
    def pairs_of(block: Block, grads: list[Update]) -> list[tuple[Update, Update]]:
        """A block's ``[weights…, biases…]`` gradients as (weight, bias) pairs."""
        return list(zip(grads[: block.depth], grads[block.depth :], strict=True))

    def join(self, per_stage: list[list[tuple[Update, Update]]]) -> list[Update]:
        """Per-stage (weight, bias) gradient pairs (batch norms', then the block's layers') as
        one list in the order of :meth:`params`."""
        pairs = [p for stage in per_stage for p in stage]
        return [w for w, _ in pairs] + [b for _, b in pairs]

    def dissipated_power(self, x: Tensor, state: list[Tensor]) -> Tensor | None:
        return None

    def read_gains(self, spec) -> list[Tensor] | None:
        return None
