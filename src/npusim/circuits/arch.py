"""Architecture strings of hybrid networks: energy-based blocks and feed-forward blocks.

Layers are separated by ``-``; ``|`` also ends an energy-based block. Items:

* ``fcN``: a dense weight layer of N units;
* ``convC[kK][sS][pP]``: a 2-D convolution with C output channels, a K×K kernel (default 3),
  stride S (default 1) and zero padding P (default K // 2, "same" at stride 1);
* ``pool`` / ``maxpoolK`` / ``avgpoolK``: a digital pooling block (K×K windows, stride K,
  default 2; ``pool`` is a 2×2 max pool);
* ``apoolK``: average pooling inside an energy-based block, between two weight layers joined by
  ``-`` (part of the coupling into the next layer, as pooling sits between the layers of
  Laborieux et al. 2021's convolutional EqProp; averaging keeps the energy exact).

Weight layers that follow one another (with ``apool`` between them or not) form one
energy-based block (they settle together, coupled both ways); a pooling block or a ``|`` ends
the block, and what follows starts the next
one. The last item must be a weight layer: the output layer. Examples:
``conv32k5-pool|conv64k5-pool|fc10`` (three one-layer blocks),
``conv32k5-apool-conv64k5-apool-fc10`` (the same layers as one block, average-pooled),
``fc512-fc512-fc10`` (one
block: a 2-hidden-layer deep Hopfield network), ``fc512|fc512|fc10`` (the same layers split
into three blocks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from npusim.core.errors import NpusimError


class ArchError(NpusimError, ValueError):
    """An architecture string is malformed; the message names the item."""


@dataclass(frozen=True)
class Layer:
    """A weight layer: ``fc`` (``size`` units) or ``conv`` (``size`` channels); ``pool_in``:
    the window of the average pooling of its input inside the block (0: none)."""

    kind: str
    size: int
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    pool_in: int = 0


@dataclass(frozen=True)
class Pool:
    """A digital pooling block: ``max`` or ``avg`` over ``size × size`` windows, stride ``size``."""

    kind: str
    size: int = 2


Stage = tuple[tuple[Pool, ...], tuple[Layer, ...]]  # feed-forward ops, then an energy block

PRESETS: dict[str, str] = {
    # the README's mnist5k hybrid network (the default of --model hybrid)
    "mnist-conv": "conv32k5-pool|conv64k5-pool|fc10",
    # the same layers with average pooling: as one energy-based block, and split into three
    "mnist-conv-1block": "conv32k5-apool-conv64k5-apool-fc10",
    "mnist-conv-avg": "conv32k5-avgpool|conv64k5-avgpool|fc10",
    # a deep Hopfield network with 3 hidden layers, as one block and split into blocks
    "dhn-3h": "fc512-fc512-fc512-fc10",
    "dhn-3h-split2": "fc512-fc512|fc512-fc10",
    "dhn-3h-split4": "fc512|fc512|fc512|fc10",
    # a VGG-like CIFAR-10 network (Laborieux et al. 2021 sizes, one layer per block)
    "cifar-vgg": "conv128-pool|conv256-pool|conv512-pool|conv512-pool|fc10",
}

_FC = re.compile(r"fc(\d+)")
_CONV = re.compile(r"conv(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"(pool|maxpool|avgpool)(\d*)")
_APOOL = re.compile(r"apool(\d*)")
_MAX = 4096  # largest unit count, channel count or kernel an item may ask for


def _number(text: str, item: str, lo: int = 1) -> int:
    n = int(text)
    if not lo <= n <= _MAX:
        raise ArchError(f"architecture item {item!r}: {n} is outside [{lo}, {_MAX}]")
    return n


def _item(item: str) -> Layer | Pool | int:
    """A weight layer, a pooling block, or (an int) the window of an in-block average pool."""
    if m := _FC.fullmatch(item):
        return Layer("fc", _number(m[1], item))
    if m := _CONV.fullmatch(item):
        k = _number(m[2], item) if m[2] else 3
        p = _number(m[4], item, lo=0) if m[4] else k // 2
        return Layer("conv", _number(m[1], item), k, _number(m[3], item) if m[3] else 1, p)
    if m := _APOOL.fullmatch(item):
        return _number(m[1], item) if m[1] else 2
    if m := _POOL.fullmatch(item):
        size = _number(m[2], item) if m[2] else 2
        return Pool("avg" if m[1] == "avgpool" else "max", size)
    raise ArchError(
        f"architecture item {item!r} is not one of fcN, convC[kK][sS][pP], pool, maxpoolK, "
        "avgpoolK, apoolK"
    )


def parse_arch(text: str) -> list[Stage]:
    """The stages of an architecture (a preset name or a string): each a tuple of pooling
    blocks applied to the previous block's output (or the input), then an energy-based block's
    weight layers. Raises :class:`ArchError` naming a malformed item."""
    text = PRESETS.get(text, text).strip().replace(" ", "")
    if not text:
        raise ArchError("the architecture is empty; e.g. conv32k5-pool|fc10")
    stages: list[Stage] = []
    pools: list[Pool] = []
    layers: list[Layer] = []
    dense_seen = False
    inner = 0  # the window of an in-block average pool waiting for its weight layer
    for part in text.split("|"):
        for item in part.split("-"):
            if not item:
                raise ArchError(f"architecture {text!r} has an empty item (doubled - or |)")
            spec = _item(item)
            if isinstance(spec, int) or (inner and isinstance(spec, Pool)):
                if not layers or inner:
                    raise ArchError(
                        f"architecture {text!r}: apool sits between two weight layers of one "
                        "block (e.g. conv32-apool-conv64)"
                    )
                inner = spec  # type: ignore[assignment]
            elif isinstance(spec, Pool):
                if layers:
                    stages.append((tuple(pools), tuple(layers)))
                    pools, layers = [], []
                pools.append(spec)
            else:
                if spec.kind == "conv" and dense_seen:
                    raise ArchError(
                        f"architecture item {item!r}: a convolution after a dense layer"
                    )
                dense_seen = dense_seen or spec.kind == "fc"
                layers.append(replace(spec, pool_in=inner))
                inner = 0
        if inner:
            raise ArchError(
                f"architecture {text!r}: apool sits between two weight layers of one block "
                "(e.g. conv32-apool-conv64)"
            )
        if layers:
            stages.append((tuple(pools), tuple(layers)))
            pools, layers = [], []
    if pools:
        raise ArchError(f"architecture {text!r} must end with a weight layer (the output layer)")
    if stages[-1][1][-1].kind != "fc":
        raise ArchError(f"architecture {text!r} must end with a dense output layer, e.g. fc10")
    return stages
