"""DAC / ADC quantisation of the periphery: uniform levels, a range, clipping."""

from __future__ import annotations

import torch
from torch import Tensor

from npusim.chip.spec import ConverterSpec


def quantize(x: Tensor, bits: int, lo: float, hi: float) -> Tensor:
    """Clip ``x`` to [lo, hi] and round to the nearest of 2**bits uniform levels.

    Levels are lo + k * (hi - lo) / (2**bits - 1), k = 0 .. 2**bits - 1, so both
    ends are representable. ``bits = 0`` is an ideal converter: ``x`` is
    returned unchanged (no clipping). Returns a new tensor.
    """
    if bits <= 0:
        return x.clone()
    if not hi > lo:
        raise ValueError(f"quantize: need lo < hi, got lo={lo}, hi={hi}")
    levels = 2**bits - 1
    lsb = (hi - lo) / levels
    q = torch.clamp(x, lo, hi).sub_(lo).div_(lsb).round_()
    return q.mul_(lsb).add_(lo)


def dac(x: Tensor, conv: ConverterSpec) -> Tensor:
    """Row inputs as the chip's DAC produces them (normalised units)."""
    return quantize(x, conv.dac_bits, conv.dac_lo, conv.dac_hi)


def adc(x: Tensor, conv: ConverterSpec) -> Tensor:
    """Column outputs as the chip's ADC digitises them (normalised units)."""
    return quantize(x, conv.adc_bits, conv.adc_lo, conv.adc_hi)
