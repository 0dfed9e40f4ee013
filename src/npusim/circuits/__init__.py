"""Energy-based networks, their exact relaxation, general netlists and SPICE export."""

from npusim.circuits.hopfield import DeepHopfield
from npusim.circuits.layered import LayeredNetwork, Relaxation, RelaxationDiverged
from npusim.circuits.netlist import DiodeModel, Netlist, drn_to_netlist
from npusim.circuits.netlist_solve import NetlistSolver
from npusim.circuits.registry import NETWORKS, NetworkOptions, make_network
from npusim.circuits.resistive import DeepResistive
from npusim.circuits.spice import to_spice

__all__ = [
    "NETWORKS",
    "NetworkOptions",
    "make_network",
    "DeepHopfield",
    "DeepResistive",
    "DiodeModel",
    "LayeredNetwork",
    "Netlist",
    "NetlistSolver",
    "Relaxation",
    "RelaxationDiverged",
    "drn_to_netlist",
    "to_spice",
]
