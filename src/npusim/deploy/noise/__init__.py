"""Inference noise models, one file per device family (``ideal``, ``chip``, ``pcm``); a new
family subclasses :class:`InferenceNoise` in a new file, registers itself with
:func:`register` and is imported here."""

from npusim.deploy.noise import chip, ideal, pcm  # noqa: F401  (register the families)
from npusim.deploy.noise.base import (
    FAMILIES,
    DeployError,
    InferenceNoise,
    noise_for,
    one_over_f_growth,
    register,
)

__all__ = [
    "FAMILIES",
    "DeployError",
    "InferenceNoise",
    "noise_for",
    "one_over_f_growth",
    "register",
]
