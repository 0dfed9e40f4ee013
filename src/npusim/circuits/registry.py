"""Networks by name: a new energy-based network is one file plus one entry in :data:`NETWORKS`.

A factory takes the layer sizes ``[inputs, hidden…, outputs]`` (logical: as the user gives them),
the initialisation seed and the run's network options, and returns a
:class:`npusim.core.interfaces.Network`; options a network does not use are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from npusim.circuits.hopfield import DeepHopfield
from npusim.circuits.resistive import DeepResistive
from npusim.core.interfaces import Network


@dataclass(frozen=True)
class NetworkOptions:
    """Options of the built-in networks: the DRN's input gain (V per unit input) and diodes."""

    input_gain: float = 480.0
    diode: str = "ideal"


NetworkFactory = Callable[[list[int], int, NetworkOptions], Network]

NETWORKS: dict[str, NetworkFactory] = {
    "dhn": lambda sizes, seed, opt: DeepHopfield(sizes, seed=seed),
    "drn": lambda sizes, seed, opt: DeepResistive(
        sizes, input_gain=opt.input_gain, seed=seed, diode=opt.diode
    ),
}


def make_network(
    name: str, sizes: list[int], seed: int, options: NetworkOptions | None = None
) -> Network:
    """The network registered as ``name``, initialised from ``seed``."""
    if name not in NETWORKS:
        raise ValueError(f"model must be one of {', '.join(NETWORKS)}, got {name!r}")
    return NETWORKS[name](list(sizes), int(seed), options or NetworkOptions())
