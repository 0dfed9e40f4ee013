"""The ``chip`` family: inference statistics from the ChipSpec's own device parameters
(the ``rram`` and ``ecram`` presets, or any pulsed-device chip).

* Programming: closed-loop pulse programming stops at the level nearest the target, so the
  error is one uniform quantisation step plus the last pulse's cycle-to-cycle noise:
  s.d. = step * sqrt(1/12 + write_noise^2), step = (g_max - g_min) / n_states / g_max
  (normalised; the pulse model of :mod:`npusim.devices.pulsed`).
* Drift: nu ~ N(drift_nu, drift_nu_std) per device, kept >= 0
  (:func:`npusim.devices.pulsed.sample_drift_nu`), t0 = drift_t0.
* Read noise: s.d. = read_noise * (g_max - g_min) / g_max at t = drift_t0, growing as 1/f
  noise does with the observation time, sqrt(ln((t + t_r)/(2 t_r)) / ln((t0 + t_r)/(2 t_r)))
  with t_r = timing.read_time (Nandakumar et al., ICECS 2019).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.chip.spec import ChipSpec
from npusim.deploy.noise.base import InferenceNoise, one_over_f_growth, register
from npusim.devices.pulsed import sample_drift_nu

#: Output (amplifier + ADC input) noise, fraction of the ADC range. Estimate: a quarter of an
#: 8-bit LSB (1/1020 of full scale), the noise floor a read-out is designed to stay under
#: (Murmann, "ADC Performance Survey 1997-2024": SNDR of 8-bit SAR ADCs ~ 6.02 b + 1.76 dB).
OUT_NOISE = 1.0 / 1020
#: Wire resistance per cell segment (Ω). Estimate: ~2.5 Ω per cell of a Cu line at a
#: ~100 nm pitch, the value behind the presets' settle_tau (ISAAC-class 128x128 arrays;
#: Hu et al., DAC 2016, "Dot-product engine", study 1-10 Ω per segment).
WIRE_OHM = 2.5


@register("chip")
class ChipNoise(InferenceNoise):
    """Inference statistics from the chip's ``device`` and ``timing`` sections."""

    out_noise = OUT_NOISE
    wire_ohm = WIRE_OHM

    def __init__(self, chip: ChipSpec, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(chip, **kw)
        dev = chip.device
        step = (1.0 - self.y_min) / dev.n_states
        self._prog_std = step * math.sqrt(1.0 / 12.0 + dev.write_noise**2)
        self._read_std = dev.read_noise * (1.0 - self.y_min)
        self.t_read = chip.timing.read_time

    def program_std(self, y_target: Tensor) -> Tensor:
        return torch.full_like(y_target, self._prog_std)

    def drift_nu(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        nu = sample_drift_nu(self.chip.device, tuple(y_target.shape), gen)
        return nu.to(y_target.device, y_target.dtype)

    def read_std(self, y_t: Tensor, y_target: Tensor, t: float) -> Tensor:
        growth = one_over_f_growth(t, self.t_read, self.t0)
        return torch.full_like(y_t, self._read_std * growth)
