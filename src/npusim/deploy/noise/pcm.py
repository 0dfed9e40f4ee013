"""PCM inference statistics of Nandakumar et al., "Phase-change memory models for deep
learning training and inference", ICECS 2019 (fitted on a million-device doped-GST array;
equations as documented for aihwkit's PCMLikeNoiseModel). With g_T the target conductance
in µS on the model's own scale (g_max = 25 µS, normalised conductance y -> g_T = 25 y):

* programming (after iterative program-and-verify):
  sigma_prog = max(-1.1731 (g_T/25)^2 + 1.9650 (g_T/25) + 0.2635, 0) µS;
* drift: nu ~ N(mu_nu, sigma_nu), mu_nu = clip(-0.0155 ln g_T + 0.0244, 0.049, 0.1),
  sigma_nu = clip(-0.0125 ln g_T - 0.0059, 0.008, 0.045), G(t) = G_P (t / t0)^(-nu),
  t0 = the chip's drift_t0 (20 s in the ``pcm`` preset, the model's t_c);
* 1/f read noise: sigma = G(t) Q_s sqrt(ln((t + t_r)/(2 t_r))),
  Q_s = min(0.0088 / g_T^0.65, 0.2), t_r = 250 ns.

These supersede the chip's scalar ``read_noise``, ``drift_nu`` and ``drift_nu_std``; stuck
devices, converters and the rest come from the chip.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.chip.spec import ChipSpec
from npusim.deploy.noise.base import InferenceNoise, cpu_randn, register
from npusim.deploy.noise.chip import OUT_NOISE, WIRE_OHM

#: g_max of the fit (µS), Nandakumar et al., ICECS 2019.
G_MAX_US = 25.0
#: programming-noise polynomial (µS) in g_T / g_max: c0 + c1 g + c2 g^2 (Nandakumar 2019).
PROG_COEFF = (0.2635, 1.9650, -1.1731)
#: read pulse width (s) bounding the 1/f noise bandwidth (Nandakumar 2019).
T_READ = 250e-9
#: floor of g_T (µS) inside the logarithms (a device at 0 µS has the largest drift/noise).
G_FLOOR_US = 1e-3


@register("pcm")
class PcmNoise(InferenceNoise):
    """Nandakumar et al. 2019's statistical PCM model on the chip's conductance window."""

    out_noise = OUT_NOISE
    wire_ohm = WIRE_OHM

    def __init__(self, chip: ChipSpec, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(chip, **kw)

    @staticmethod
    def g_us(y: Tensor) -> Tensor:
        """Normalised conductance -> the model's µS scale, floored for the logarithms."""
        return (y * G_MAX_US).clamp(min=G_FLOOR_US)

    def program_std(self, y_target: Tensor) -> Tensor:
        g = (y_target).clamp(0.0, 1.0)
        c0, c1, c2 = PROG_COEFF
        return (c0 + c1 * g + c2 * g * g).clamp(min=0.0) / G_MAX_US

    def drift_nu_stats(self, y_target: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, s.d.) of the drift exponent at each target conductance."""
        lg = torch.log(self.g_us(y_target))
        mu = (-0.0155 * lg + 0.0244).clamp(0.049, 0.1)
        sd = (-0.0125 * lg - 0.0059).clamp(0.008, 0.045)
        return mu, sd

    def drift_nu(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        mu, sd = self.drift_nu_stats(y_target)
        return mu + sd * cpu_randn(y_target, gen)

    def q_s(self, y_target: Tensor) -> Tensor:
        """1/f noise amplitude Q_s (dimensionless) at each target."""
        return (0.0088 / self.g_us(y_target) ** 0.65).clamp(max=0.2)

    def read_std(self, y_t: Tensor, y_target: Tensor, t: float) -> Tensor:
        t = max(t, T_READ)
        return y_t.abs() * self.q_s(y_target) * math.sqrt(math.log((t + T_READ) / (2 * T_READ)))
