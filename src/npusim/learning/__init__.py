"""Gradient estimators: EqProp, contrastive learning, backprop baseline."""

from npusim.learning.estimators import (
    ALGORITHMS,
    Backprop,
    Contrastive,
    EqProp,
    GradientEstimate,
    make_estimator,
)
from npusim.learning.outer import OuterProduct, dense

__all__ = [
    "ALGORITHMS",
    "Backprop",
    "Contrastive",
    "EqProp",
    "GradientEstimate",
    "OuterProduct",
    "dense",
    "make_estimator",
]
