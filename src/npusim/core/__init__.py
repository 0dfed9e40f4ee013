"""npusim.core: what every stage shares: the error base, phase names, declared interfaces and
the factored (outer-product) update. Imports nothing else of npusim."""

from npusim.core.errors import NpusimError
from npusim.core.outer import OuterProduct, dense
from npusim.core.phases import PHASES, TRAIN_PHASES, Phase

__all__ = ["PHASES", "TRAIN_PHASES", "NpusimError", "OuterProduct", "Phase", "dense"]
