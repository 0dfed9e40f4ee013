"""Architecture strings of hybrid networks: energy-based blocks and feed-forward blocks.

Layers are separated by ``-``; ``|`` also ends an energy-based block. Items:

* ``fcN``: a dense weight layer of N units;
* ``convC[kK][sS][pP]``: a 2-D convolution with C output channels, a K×K kernel (default 3),
  stride S (default 1) and zero padding P (default K // 2, "same" at stride 1);
* ``pool`` / ``maxpoolK`` / ``avgpoolK``: a digital pooling block (K×K windows, stride K,
  default 2; ``pool`` is a 2×2 max pool);
* ``bn``: digital batch normalisation (per channel of convolutional units, per feature of
  dense ones), with a trained scale and shift;
* ``ffN`` / ``ffconvC[kK][sS][pP]``: an analog feed-forward layer: a crossbar read once,
  ``y = clip(W x + b, 0, 1)``, with no feedback and no relaxation (trained by backprop);
* ``apoolK``: average pooling inside an energy-based block, between two weight layers joined by
  ``-`` (part of the coupling into the next layer, as pooling sits between the layers of
  Laborieux et al. 2021's convolutional EqProp; averaging keeps the energy exact).

Weight layers that follow one another (with ``apool`` between them or not) form one
energy-based block (they settle together, coupled both ways); a pooling block, a ``bn``, an
``ff`` layer or a ``|`` ends the block, and what follows starts the next one. The last item must
be a dense weight layer of an energy-based block: the output layer. Examples:
``conv32k5-pool|conv64k5-pool|fc10`` (three one-layer blocks),
``conv32k5-apool-conv64k5-apool-fc10`` (the same layers as one block, average-pooled),
``fc512-fc512-fc10`` (one block: a 2-hidden-layer deep Hopfield network), ``fc512|fc512|fc10``
(the same layers split into three blocks), ``conv32k5-bn-pool|ff256-bn-fc10`` (batch
normalisation and an analog feed-forward layer between energy-based blocks).

An architecture may also be a TOML file (a path ending in ``.toml``)::

    # one table per energy-based block, with the feed-forward items around it
    [[block]]
    layers = ["conv32k5", "bn", "pool"]
    [[block]]
    layers = ["conv64k5", "bn", "pool"]
    [[block]]
    layers = ["fc10"]

or one list, ``layers = ["conv32k5", "bn", "pool", "|", "fc10"]``. Tables are joined by ``|``,
the items of a list by ``-``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from npusim.core.errors import NpusimError


class ArchError(NpusimError, ValueError):
    """An architecture string is malformed; the message names the item."""


@dataclass(frozen=True)
class Layer:
    """A weight layer: ``fc`` (``size`` units) or ``conv`` (``size`` channels); ``pool_in``:
    the window of the average pooling of its input inside the block (0: none); ``ff``: an
    analog feed-forward layer (a block of its own, read once) rather than an energy-based one."""

    kind: str
    size: int
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    pool_in: int = 0
    ff: bool = False


@dataclass(frozen=True)
class Pool:
    """A digital pooling block: ``max`` or ``avg`` over ``size × size`` windows, stride ``size``."""

    kind: str
    size: int = 2


@dataclass(frozen=True)
class Norm:
    """A digital batch normalisation (trained scale and shift)."""


Op = Pool | Norm
Stage = tuple[tuple[Op, ...], tuple[Layer, ...]]  # feed-forward ops, then a block's layers

PRESETS: dict[str, str] = {
    # the README's mnist5k hybrid network (the default of --model hybrid): two convolutional
    # blocks and a dense hidden block, each one layer (exact in one sweep)
    "mnist-conv-fc": "conv32k5-pool|conv64k5-pool|fc256|fc10",
    # the same without the dense hidden block
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

_FC = re.compile(r"(ff|fc)(\d+)")
_CONV = re.compile(r"(ffconv|conv)(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?")
_POOL = re.compile(r"(pool|maxpool|avgpool)(\d*)")
_APOOL = re.compile(r"apool(\d*)")
_MAX = 4096  # largest unit count, channel count or kernel an item may ask for
_ITEMS = "fcN, convC[kK][sS][pP], ffN, ffconvC[kK][sS][pP], pool, maxpoolK, avgpoolK, apoolK, bn"


def _number(text: str, item: str, lo: int = 1) -> int:
    n = int(text)
    if not lo <= n <= _MAX:
        raise ArchError(f"architecture item {item!r}: {n} is outside [{lo}, {_MAX}]")
    return n


def _item(item: str) -> Layer | Op | int:
    """A weight layer, a feed-forward op, or (an int) the window of an in-block average pool."""
    if m := _FC.fullmatch(item):
        return Layer("fc", _number(m[2], item), ff=m[1] == "ff")
    if m := _CONV.fullmatch(item):
        k = _number(m[3], item) if m[3] else 3
        p = _number(m[5], item, lo=0) if m[5] else k // 2
        s = _number(m[4], item) if m[4] else 1
        return Layer("conv", _number(m[2], item), k, s, p, ff=m[1] == "ffconv")
    if m := _APOOL.fullmatch(item):
        return _number(m[1], item) if m[1] else 2
    if m := _POOL.fullmatch(item):
        size = _number(m[2], item) if m[2] else 2
        return Pool("avg" if m[1] == "avgpool" else "max", size)
    if item == "bn":
        return Norm()
    raise ArchError(f"architecture item {item!r} is not one of {_ITEMS}")


def _from_toml(path: str) -> str:
    """The architecture string a TOML file describes (see the module's docstring)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchError(f"architecture file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchError(f"architecture file {path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ArchError(f"architecture file {path}: not valid TOML ({e})") from None
    extra = sorted(set(data) - {"layers", "block"})
    if extra or ("layers" in data) == ("block" in data):
        raise ArchError(
            f"architecture file {path}: give either a layers list or [[block]] tables with "
            f"layers lists{f' (unknown keys: {extra})' if extra else ''}"
        )

    def items(layers: object, where: str) -> str:
        if not (isinstance(layers, list) and layers and all(isinstance(t, str) for t in layers)):
            raise ArchError(f"architecture file {path}: {where} must be a list of item strings")
        return "-".join(layers).replace("-|-", "|")

    if "layers" in data:
        return items(data["layers"], "layers")
    blocks = data["block"]
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise ArchError(f"architecture file {path}: block must be [[block]] tables")
    for i, b in enumerate(blocks):
        if set(b) != {"layers"}:
            raise ArchError(f"architecture file {path}: [[block]] {i + 1} needs only a layers list")
    return "|".join(items(b["layers"], f"[[block]] {i + 1}'s layers") for i, b in enumerate(blocks))


def parse_arch(text: str) -> list[Stage]:
    """The stages of an architecture (a preset name, a string, or a ``.toml`` file): each a
    tuple of feed-forward ops (pooling, batch normalisation) applied to the previous block's
    output (or the input), then a block's weight layers (an energy-based block, or one analog
    feed-forward layer). Raises :class:`ArchError` naming a malformed item (and the file)."""
    text = text.strip()
    if text.endswith(".toml"):
        try:
            return _parse(_from_toml(text))
        except ArchError as e:
            if str(e).startswith("architecture file"):
                raise
            raise ArchError(f"architecture file {text}: {e}") from None
    return _parse(text)


def trained_layers(text: str) -> int:
    """Layers with a learning rate of their own: weight layers (energy-based and feed-forward)
    and batch normalisations, in the order of the network's parameters."""
    stages = parse_arch(text)
    return sum(len(layers) + sum(isinstance(op, Norm) for op in ops) for ops, layers in stages)


def _apool_error(text: str) -> ArchError:
    return ArchError(
        f"architecture {text!r}: apool sits between two weight layers of one block "
        "(e.g. conv32-apool-conv64)"
    )


def _parse(text: str) -> list[Stage]:
    text = PRESETS.get(text, text).strip().replace(" ", "")
    if not text:
        raise ArchError("the architecture is empty; e.g. conv32k5-pool|fc10")
    stages: list[Stage] = []
    ops: list[Op] = []
    layers: list[Layer] = []
    dense_seen = False
    inner = 0  # the window of an in-block average pool waiting for its weight layer
    for part in text.split("|"):
        for item in part.split("-"):
            if not item:
                raise ArchError(f"architecture {text!r} has an empty item (doubled - or |)")
            spec = _item(item)
            in_block = isinstance(spec, Layer) and not spec.ff
            if isinstance(spec, int) or (inner and not in_block):
                if not layers or inner:
                    raise _apool_error(text)
                inner = spec  # type: ignore[assignment]
                continue
            if isinstance(spec, Layer):
                if spec.kind == "conv" and dense_seen:
                    raise ArchError(
                        f"architecture item {item!r}: a convolution after a dense layer"
                    )
                dense_seen = dense_seen or spec.kind == "fc"
            if in_block:
                layers.append(replace(spec, pool_in=inner))  # type: ignore[type-var]
                inner = 0
                continue
            if layers:  # a feed-forward item ends the energy-based block
                stages.append((tuple(ops), tuple(layers)))
                ops, layers = [], []
            if isinstance(spec, Layer):  # an analog feed-forward layer: a block of its own
                stages.append((tuple(ops), (spec,)))
                ops = []
            else:
                ops.append(spec)  # type: ignore[arg-type]
        if inner:
            raise _apool_error(text)
        if layers:
            stages.append((tuple(ops), tuple(layers)))
            ops, layers = [], []
    if ops:
        raise ArchError(f"architecture {text!r} must end with a weight layer (the output layer)")
    out = stages[-1][1][-1]
    if out.kind != "fc" or out.ff:
        raise ArchError(
            f"architecture {text!r} must end with a dense output layer of an energy-based "
            "block, e.g. fc10"
        )
    return stages
