"""Gradient estimators: EqProp, contrastive learning, backprop baseline."""

from npusim.core.outer import OuterProduct, dense
from npusim.learning.estimators import (
    ALGORITHMS,
    ESTIMATORS,
    Backprop,
    Contrastive,
    EqProp,
    GradientEstimate,
    make_estimator,
)

__all__ = [
    "ALGORITHMS",
    "ESTIMATORS",
    "Backprop",
    "Contrastive",
    "EqProp",
    "GradientEstimate",
    "OuterProduct",
    "dense",
    "make_estimator",
]
