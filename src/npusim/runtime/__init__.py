"""npusim.runtime: configuration, the training loop (``Trainer``), checkpoints, the ``Ledger``."""

from npusim.runtime.config import TrainConfig
from npusim.runtime.ledger import Ledger
from npusim.runtime.train import Trainer

__all__ = ["Ledger", "TrainConfig", "Trainer"]
