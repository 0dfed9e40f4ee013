"""Linear couplings between the layers of an energy-based block, held by crossbar arrays.

A coupling ``A`` maps its input layer ``a`` to a drive on its output layer ``b``; the block's
energy holds the term ``−⟨b, A(a)⟩``. Its weights live in one crossbar of ``rows × cols``
devices:

* :class:`Dense`: ``A(a) = a W`` with ``W`` of shape ``(n_in, n_out)``;
* :class:`Conv`: a 2-D convolution whose kernel sits on the crossbar over unfolded patches —
  ``rows = C_in·k·k`` (one patch), ``cols = C_out`` — and is read once per output position
  (``uses``).

Each coupling gives the drive ``A(a)``, its adjoint ``Aᵀ(d)`` (the drive ``b`` feeds back on
``a``), and ``Σ_batch ∂⟨b, A(a)⟩/∂W`` (the local gradient an array measures from its two
layers). States are batch-first: ``(batch, n)`` dense, ``(batch, C, H, W)`` convolutional.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight

from npusim.core.outer import OuterProduct


class Coupling(ABC):
    """A weight layer of an energy-based block; ``weight`` is the crossbar ``(rows, cols)``,
    ``bias`` acts on the output layer (one per output unit, or per channel for a convolution).
    ``in_shape``/``out_shape``: one sample's layer shapes."""

    weight: Tensor
    bias: Tensor
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    @abstractmethod
    def rows(self) -> int:
        """Crossbar rows: the fan-in of one output unit (an input vector, or one patch)."""

    def init_weight(self, gain: float, g: torch.Generator, dtype: torch.dtype) -> None:
        """Uniform in ±gain/√rows, zero bias."""
        bound = gain / math.sqrt(self.rows)
        w = torch.rand(self.rows, self.out_shape[0], generator=g, dtype=torch.float64)
        w = (w * 2 - 1) * bound
        self.weight = w.to(dtype)
        self.bias = torch.zeros(self.out_shape[0], dtype=dtype)

    @property
    def uses(self) -> int:
        """Reads of the array per sample (output positions)."""
        return 1

    @property
    def out_units(self) -> int:
        return math.prod(self.out_shape)

    @property
    def in_units(self) -> int:
        return math.prod(self.in_shape)

    @abstractmethod
    def drive(self, a: Tensor) -> Tensor:
        """``A(a) + bias``: the coupling's drive on its output layer."""

    @abstractmethod
    def adjoint(self, d: Tensor) -> Tensor:
        """``Aᵀ(d)``: the drive an output-layer state ``d`` feeds back on the input layer."""

    @abstractmethod
    def weight_grad(self, a: Tensor, b: Tensor) -> Tensor | OuterProduct:
        """``Σ_batch ∂⟨b, A(a)⟩/∂W``, shape ``(rows, cols)`` (dense or factored)."""

    def bias_grad(self, b: Tensor) -> Tensor:
        """``Σ_batch ∂⟨b, bias⟩/∂bias``: the output layer summed over batch (and positions)."""
        return b.sum(0) if b.dim() == 2 else b.sum((0, 2, 3))


class Dense(Coupling):
    """``A(a) = flatten(a) W``: a dense layer (its input may be a convolutional layer)."""

    def __init__(self, in_shape: tuple[int, ...], n_out: int) -> None:
        self.in_shape, self.out_shape = tuple(in_shape), (int(n_out),)

    @property
    def rows(self) -> int:
        return self.in_units

    def drive(self, a: Tensor) -> Tensor:
        return torch.addmm(self.bias, a.flatten(1), self.weight)

    def adjoint(self, d: Tensor) -> Tensor:
        return (d @ self.weight.t()).view(-1, *self.in_shape)

    def weight_grad(self, a: Tensor, b: Tensor) -> OuterProduct:
        return OuterProduct(a.flatten(1), b)


class Conv(Coupling):
    """A 2-D convolution (``kernel × kernel``, ``stride``, zero ``padding``) on ``(C, H, W)``
    input layers; its kernel is the crossbar ``(C_in·k·k, C_out)`` over unfolded patches."""

    def __init__(
        self, in_shape: tuple[int, int, int], channels: int, kernel: int, stride: int, padding: int
    ) -> None:
        c, h, w = in_shape
        ho = (h + 2 * padding - kernel) // stride + 1
        wo = (w + 2 * padding - kernel) // stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(
                f"a {kernel}×{kernel} convolution (stride {stride}, padding {padding}) does not "
                f"fit a {h}×{w} input"
            )
        self.in_shape, self.out_shape = (c, h, w), (int(channels), ho, wo)
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self._k: Tensor | None = None  # the kernel view of the crossbar, and its weights' key
        self._kkey: tuple[int, int] | None = None
        # conv_transpose2d's extra rows/columns so that Aᵀ returns the input's full size
        self._extra = (
            h - ((ho - 1) * stride - 2 * padding + kernel),
            w - ((wo - 1) * stride - 2 * padding + kernel),
        )

    @property
    def rows(self) -> int:
        return self.in_shape[0] * self.kernel * self.kernel

    @property
    def uses(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    def _kernel(self) -> Tensor:
        """The crossbar as a ``(C_out, C_in, k, k)`` kernel, rebuilt when the weights change."""
        shape = (self.out_shape[0], self.in_shape[0], self.kernel, self.kernel)
        if self.weight.requires_grad:  # differentiated through: never cached
            return self.weight.t().reshape(shape)
        key = (id(self.weight), self.weight._version)
        if self._k is None or self._kkey != key:
            self._k, self._kkey = self.weight.t().reshape(shape), key
        return self._k

    def drive(self, a: Tensor) -> Tensor:
        return F.conv2d(a, self._kernel(), self.bias, self.stride, self.padding)

    def adjoint(self, d: Tensor) -> Tensor:
        return F.conv_transpose2d(d, self._kernel(), None, self.stride, self.padding, self._extra)

    def weight_grad(self, a: Tensor, b: Tensor) -> Tensor:
        """Σ over batch and positions of patch ⊗ output (the convolution's weight gradient,
        computed as torch's convolution backward does), as the crossbar ``(C_in·k·k, C_out)``."""
        c_out = self.out_shape[0]
        shape = (c_out, self.in_shape[0], self.kernel, self.kernel)
        g = conv2d_weight(a, shape, b, self.stride, self.padding)
        return g.reshape(c_out, -1).t()


class Pooled(Coupling):
    """``A(a) = inner(avgpool(a))``: average pooling over ``size × size`` windows (stride
    ``size``) before a weight layer, inside an energy-based block. Pooling by averaging is
    linear, so the energy stays a sum of bilinear terms and every layer's update stays exact;
    ``Aᵀ`` spreads each pooled value back over its window (divided by ``size²``; units the
    pooling drops at an odd edge get none). The crossbar is ``inner``'s."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        size: int,
        inner: Callable[[tuple[int, int, int]], Coupling],
    ) -> None:
        c, h, w = in_shape
        if h < size or w < size:
            raise ValueError(f"a {size}×{size} average pool does not fit a {h}×{w} layer")
        self.size, self.in_shape = size, (c, h, w)
        self.inner = inner((c, h // size, w // size))
        self.out_shape = self.inner.out_shape

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        return self.inner.weight

    @property
    def bias(self) -> Tensor:  # type: ignore[override]
        return self.inner.bias

    @property
    def rows(self) -> int:
        return self.inner.rows

    @property
    def uses(self) -> int:
        return self.inner.uses

    def init_weight(self, gain: float, g: torch.Generator, dtype: torch.dtype) -> None:
        self.inner.init_weight(gain, g, dtype)

    def _pool(self, a: Tensor) -> Tensor:
        return F.avg_pool2d(a, self.size, self.size)

    def drive(self, a: Tensor) -> Tensor:
        return self.inner.drive(self._pool(a))

    def adjoint(self, d: Tensor) -> Tensor:
        k = self.size
        g = self.inner.adjoint(d).repeat_interleave(k, -2).repeat_interleave(k, -1) / (k * k)
        _, h, w = self.in_shape
        return F.pad(g, (0, w - g.shape[-1], 0, h - g.shape[-2]))

    def weight_grad(self, a: Tensor, b: Tensor) -> Tensor | OuterProduct:
        return self.inner.weight_grad(self._pool(a), b)

    def bias_grad(self, b: Tensor) -> Tensor:
        return self.inner.bias_grad(b)
