"""npusim: a simulated analog in-memory NPU that learns on the chip by Equilibrium Propagation."""

__version__ = "0.1.0"
