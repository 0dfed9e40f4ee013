"""Networks by name: a new energy-based network is one file plus one entry in :data:`NETWORKS`.

A factory takes the layer sizes ``[inputs, hidden…, outputs]`` (logical: as the user gives them;
a hybrid network takes its layers from ``NetworkOptions.arch`` and only its outputs from them),
the initialisation seed and the run's network options, and returns a
:class:`npusim.core.interfaces.Network`; options a network does not use are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from npusim.circuits.hopfield import DeepHopfield
from npusim.circuits.hybrid import HybridNetwork
from npusim.circuits.resistive import DeepResistive
from npusim.core.interfaces import Network


@dataclass(frozen=True)
class NetworkOptions:
    """Options of the built-in networks: the DRN's input gain (V per unit input) and diodes;
    a hybrid network's architecture (:mod:`npusim.circuits.arch`; None: one dense block of the
    given sizes) and input image shape ``(C, H, W)`` (None: ``(1, 1, inputs)``)."""

    input_gain: float = 480.0
    diode: str = "ideal"
    arch: str | None = None
    image: tuple[int, int, int] | None = None


def _hybrid(sizes: list[int], seed: int, opt: NetworkOptions) -> HybridNetwork:
    arch = opt.arch or "-".join(f"fc{n}" for n in sizes[1:])
    return HybridNetwork(arch, opt.image or (1, 1, sizes[0]), sizes[-1], seed=seed)


NetworkFactory = Callable[[list[int], int, NetworkOptions], Network]

NETWORKS: dict[str, NetworkFactory] = {
    "dhn": lambda sizes, seed, opt: DeepHopfield(sizes, seed=seed),
    "drn": lambda sizes, seed, opt: DeepResistive(
        sizes, input_gain=opt.input_gain, seed=seed, diode=opt.diode
    ),
    "hybrid": _hybrid,
}


def make_network(
    name: str, sizes: list[int], seed: int, options: NetworkOptions | None = None
) -> Network:
    """The network registered as ``name``, initialised from ``seed``."""
    if name not in NETWORKS:
        raise ValueError(f"model must be one of {', '.join(NETWORKS)}, got {name!r}")
    return NETWORKS[name](list(sizes), int(seed), options or NetworkOptions())
