"""Energy-based networks and their exact relaxation."""

from npusim.circuits.hopfield import DeepHopfield
from npusim.circuits.layered import LayeredNetwork, Relaxation, RelaxationDiverged
from npusim.circuits.resistive import DeepResistive

__all__ = ["DeepHopfield", "DeepResistive", "LayeredNetwork", "Relaxation", "RelaxationDiverged"]
