"""DAC / ADC quantisation of the periphery: uniform levels, a range, clipping."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Periphery:
    """A chip's converters where its arrays meet the digital side.

    ``inputs``: the DAC drives each input row (once per relaxation). ``read``: the ADC digitises
    every free layer at an equilibrium (what a learning rule reads); ``read_output``: the output
    layer at inference. Matches the conversions the ledger counts.

    ``gains``: per free layer, the read-out chain's gain from a state unit to the ADC's
    normalised input (per node, signed; see
    :meth:`npusim.circuits.resistive.DeepResistive.read_gains`). The ADC digitises
    ``state · gain`` and the digital side divides the code by ``gain`` again. None: the states
    are normalised signals the ADC reads directly (gain 1).
    """

    spec: ConverterSpec
    gains: tuple[Tensor, ...] | None = None

    def inputs(self, x: Tensor) -> Tensor:
        return dac(x, self.spec)

    def read(self, state: list[Tensor]) -> list[Tensor]:
        if self.gains is None:
            return [adc(s, self.spec) for s in state]
        return [adc(s * g, self.spec).div_(g) for s, g in zip(state, self.gains, strict=True)]

    def read_output(self, y: Tensor) -> Tensor:
        if self.gains is None:
            return adc(y, self.spec)
        return adc(y * self.gains[-1], self.spec).div_(self.gains[-1])


def periphery_for(
    conv: ConverterSpec, normalised_states: bool, gains: list[Tensor] | None = None
) -> Periphery | None:
    """The converters to simulate for a network, or None when there is nothing to convert:
    ideal converters (0 bits), or a network whose states are not normalised signals and for
    which no read-out ``gains`` are given (a DRN's node voltages reach the ADC through the
    column amplifiers: pass ``model.read_gains(spec)``)."""
    if conv.dac_bits == 0 and conv.adc_bits == 0:
        return None
    if gains is not None:
        return Periphery(conv, tuple(gains))
    return Periphery(conv) if normalised_states else None
