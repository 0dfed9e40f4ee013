"""How many crossbar arrays a network needs, and whether the chip has them (``array.tiles``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from npusim.chip.spec import ChipSpec, ChipSpecError


def arrays_for(rows: int, cols: int, spec: ChipSpec, devices: int = 1) -> int:
    """Arrays holding a ``rows × cols`` weight matrix, ``devices`` devices per weight.

    A matrix is cut into ``ceil(rows / array.rows) × ceil(cols / array.cols)`` tiles;
    a differential pair (``devices = 2``) holds its two devices in two arrays of the
    same shape, as :class:`npusim.devices.DeviceSynapses` programs them.
    """
    a = spec.array
    return math.ceil(rows / a.rows) * math.ceil(cols / a.cols) * devices


def arrays_needed(spec: ChipSpec, shapes: Sequence[Sequence[int]], signed: Sequence[bool]) -> int:
    """Arrays a network's weight matrices need: ``shapes[k] = (rows, cols)``; ``signed[k]``
    True for a differential pair (two devices per weight), False for one device."""
    if len(shapes) != len(signed):
        raise ValueError(f"got {len(shapes)} weight shapes but {len(signed)} signed flags")
    return sum(
        arrays_for(int(r), int(c), spec, 2 if sgn else 1)
        for (r, c), sgn in zip(shapes, signed, strict=True)
    )


def layer_shapes(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Weight-matrix shapes ``(n_k, n_{k+1})`` of a layered network with ``sizes``."""
    return [(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:], strict=False)]


def check_fits(spec: ChipSpec, shapes: Sequence[Sequence[int]], signed: Sequence[bool]) -> int:
    """Arrays the weight matrices need (see :func:`arrays_needed`); raises
    :class:`ChipSpecError` naming both numbers when the chip's ``array.tiles`` are fewer."""
    need = arrays_needed(spec, shapes, signed)
    have = spec.array.tiles
    if need > have:
        desc = ", ".join(f"{int(r)}x{int(c)}" for r, c in shapes)
        raise ChipSpecError(
            f"chip '{spec.name}': the network needs {need} arrays of "
            f"{spec.array.rows}x{spec.array.cols} (weights {desc}, signed weights as "
            f"differential pairs) but the chip has {have} (array.tiles); use a smaller "
            f"network or a chip with more tiles"
        )
    return need
