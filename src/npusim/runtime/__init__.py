"""npusim.runtime."""
