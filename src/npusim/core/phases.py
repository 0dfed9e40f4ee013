"""Phase names shared by the learning rules, the runtime's ``Ledger`` and the cost model."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """A stage of learning or inference on the chip (values are the names in results.json).

    FREE: the free relaxation. NUDGED_PLUS / NUDGED_MINUS: relaxations with the output nudged by
    +β / −β (a clamped output is the +β phase with β = ∞). INFERENCE: a free relaxation whose
    output is read out. UPDATE: the parameter update after a batch's relaxations.
    """

    FREE = "free"
    NUDGED_PLUS = "nudged+"
    NUDGED_MINUS = "nudged-"
    INFERENCE = "inference"
    UPDATE = "update"


PHASES: tuple[Phase, ...] = tuple(Phase)
TRAIN_PHASES: tuple[Phase, ...] = (Phase.FREE, Phase.NUDGED_PLUS, Phase.NUDGED_MINUS, Phase.UPDATE)
