"""What the cost model knows beyond the chip: physical limits, and how it reads a ``ChipSpec``.

Every constant of the chip itself (energies per event, areas, times, geometry) lives in its
:class:`npusim.chip.ChipSpec`, cited in its preset (``chip/presets/*.toml``); the cost model
reads the spec directly (:mod:`npusim.cost.npu`). What stays here is not a chip property:

* :class:`PhysicalLimits`: the temperature and the best published ADCs, for the claims check;
* :data:`IDEAL_CONVERTER_BITS`: the resolution at which an ideal (0-bit) converter is priced,
  since a physical chip still needs converters;
* per-event quantities derived from the spec (:func:`analog_mac_j`, :func:`adc_j`, ...) with
  their formulas, and :func:`constants_table`, every value with unit and source for
  ``report.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from npusim.chip import ChipSpec, load_chip
from npusim.chip.spec import SECTIONS
from npusim.core.errors import NpusimError

K_B = 1.380649e-23  # J/K, Boltzmann constant (SI 2019 exact definition)

ISAAC = "Shafiee et al., 'ISAAC', ISCA 2016, Table 6 (32 nm, 128x128 crossbar, 100 ns cycle)"
IDEAL_CONVERTER_BITS = 8  # bit
IDEAL_CONVERTER_SOURCE = (
    ISAAC + ": 8-bit ADCs and 8-bit (bit-serial) inputs; an ideal (0-bit) converter of a chip "
    "spec is priced at this resolution"
)
DEFAULT_CHIP = "ideal"  # preset that prices a ledger when no chip is named


class CostError(NpusimError, ValueError):
    """Something cannot be priced as asked (an empty ledger, a target ratio out of range)."""


def cited(obj: Any) -> dict[str, dict[str, object]]:
    """``{field: {value, unit, source}}`` for every :func:`const` field of dataclass ``obj``."""
    return {
        f.name: {
            "value": getattr(obj, f.name),
            "unit": f.metadata["unit"],
            "source": f.metadata["source"],
        }
        for f in fields(obj)
    }


def const(value: float, unit: str, source: str) -> Any:
    """A dataclass field holding a default ``value`` with its ``unit`` and ``source``."""
    return field(default=value, metadata={"unit": unit, "source": source})


@dataclass(frozen=True)
class PhysicalLimits:
    """Physical limits the claims check compares the chip with (not chip properties)."""

    temperature_k: float = const(300.0, "K", "room temperature operating point")
    best_walden_fom_j: float = const(
        1e-15, "J/conv-step", "Murmann ADC survey 1997-2024: lowest Walden FoM band ~1 fJ"
    )
    best_schreier_fom_db: float = const(
        185.0, "dB", "Murmann ADC survey 1997-2024: Schreier FoM (SNDR) envelope ~185 dB"
    )

    def sources(self) -> dict[str, dict[str, object]]:
        """``{field: {value, unit, source}}`` for every limit."""
        return cited(self)

    def replace(self, **changes: float) -> PhysicalLimits:
        """Copy with fields changed; unknown names are an error naming them."""
        names = {f.name for f in fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ValueError(f"unknown physical limits {bad}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)


# ---- the chip, as the cost model prices it ------------------------------------------------
def cost_spec(chip: str | ChipSpec | None) -> ChipSpec:
    """The spec that prices a ledger: a ``ChipSpec``, a preset name or TOML path, or (None or
    empty) the ``ideal`` preset."""
    if isinstance(chip, ChipSpec):
        return chip
    return load_chip(chip or DEFAULT_CHIP)


def chip_constants(chip: str | None) -> ChipSpec:
    """Alias of :func:`cost_spec` (the name ``report.command`` imports)."""
    return cost_spec(chip)


def adc_bits(spec: ChipSpec) -> int:
    """Bits an ADC conversion is priced at (an ideal 0-bit ADC: :data:`IDEAL_CONVERTER_BITS`)."""
    return spec.converters.adc_bits or IDEAL_CONVERTER_BITS


def dac_bits(spec: ChipSpec) -> int:
    """Bits a DAC conversion is priced at (an ideal 0-bit DAC: :data:`IDEAL_CONVERTER_BITS`)."""
    return spec.converters.dac_bits or IDEAL_CONVERTER_BITS


def adc_j(spec: ChipSpec) -> float:
    """Energy (J) of one ADC conversion: ``energy.adc_fom · 2^bits``."""
    return spec.energy.adc_energy(adc_bits(spec))


def dac_j(spec: ChipSpec) -> float:
    """Energy (J) of one DAC conversion: ``energy.dac_fom · 2^bits``."""
    return spec.energy.dac_energy(dac_bits(spec))


def g_mid(spec: ChipSpec) -> float:
    """Mid-window conductance (S), ``(device.g_min + device.g_max) / 2``."""
    return 0.5 * (spec.device.g_min + spec.device.g_max)


def analog_mac_j(spec: ChipSpec) -> float:
    """Energy (J) of one array cell conducting for one settle step:
    ``array.read_voltage² · G_mid · timing.settle_tau``."""
    return spec.array.read_voltage**2 * g_mid(spec) * spec.timing.settle_tau


def read_integration_s(spec: ChipSpec) -> float:
    """Integration time (s) of one read-out implied by ``energy.read_device`` (J), the energy of
    a mid-window cell at the read voltage: ``read_device / (read_voltage² · G_mid)``."""
    return spec.energy.read_device / (spec.array.read_voltage**2 * g_mid(spec))


def amplifiers_per_column(spec: ChipSpec) -> float:
    """Amplifiers biased per neuron (array column): ``amplifier.per_array / array.cols``."""
    return spec.amplifier.per_array / spec.array.cols


def digital_ops_per_s(spec: ChipSpec) -> float:
    """Throughput (op/s) of the digital periphery: ``timing.digital_lanes · timing.clock``."""
    return spec.timing.digital_lanes * spec.timing.clock


def drn_power_scale_w(chip: str | None, input_gain: float) -> float | None:
    """Watts per unit of the DRN's simulated Σ G·ΔV²: normalised conductance 1 is the chip's
    ``device.g_max`` (S) and the input-layer voltage ``input_gain`` (an input of 1) is its
    ``array.read_voltage`` (V). None without a chip."""
    if not chip:
        return None
    spec = load_chip(chip)
    return spec.device.g_max * (spec.array.read_voltage / input_gain) ** 2


# ---- report.json: every value with unit and source ----------------------------------------
# ChipSpec fields the cost model prices with (the device physics fields act in devices/).
COST_FIELDS: dict[str, tuple[str, ...]] = {
    "array": ("rows", "cols", "tiles", "adcs_per_array", "read_voltage", "rows_per_write"),
    "device": ("g_min", "g_max"),
    "converters": ("adc_bits", "dac_bits"),
    "amplifier": ("gain", "per_array"),
    "timing": tuple(f.name for f in fields(SECTIONS["timing"]) if f.name != "sources"),
    "energy": tuple(f.name for f in fields(SECTIONS["energy"]) if f.name != "sources"),
}


def constants_table(
    spec: ChipSpec, limits: PhysicalLimits | None = None
) -> dict[str, dict[str, object]]:
    """``{name: {value, unit, source}}``: the chip fields the cost model reads (``section.key``,
    cited by the chip's ``sources``), the per-event quantities derived from them (with their
    formula) and the physical limits of the claims check."""
    limits = limits or PhysicalLimits()
    out: dict[str, dict[str, object]] = {}
    chip = f"chip '{spec.name}'"
    for section, names in COST_FIELDS.items():
        sec = getattr(spec, section)
        meta = {f.name: f.metadata for f in fields(sec)}
        for name in names:
            cited = sec.sources.get(name)
            out[f"{section}.{name}"] = {
                "value": getattr(sec, name),
                "unit": meta[name]["unit"] or "1",
                "source": f"{chip} [{section}.{name}]: {cited}"
                if cited
                else f"{chip}: npusim default of [{section}.{name}] (not cited by the chip)",
            }
    derived = {
        "analog_mac_j": (analog_mac_j(spec), "J", "read_voltage^2 x G_mid x settle_tau"),
        "adc_j": (adc_j(spec), "J", f"adc_fom x 2^{adc_bits(spec)}"),
        "dac_j": (dac_j(spec), "J", f"dac_fom x 2^{dac_bits(spec)}"),
        "amplifiers_per_column": (amplifiers_per_column(spec), "1", "per_array / cols"),
        "read_integration_s": (
            read_integration_s(spec),
            "s",
            "read_device / (read_voltage^2 x G_mid), for a measured circuit power",
        ),
        "digital_ops_per_s": (digital_ops_per_s(spec), "op/s", "digital_lanes x clock"),
    }
    for name, (value, unit, formula) in derived.items():
        out[name] = {"value": value, "unit": unit, "source": f"derived from {chip}: {formula}"}
    out["ideal_converter_bits"] = {
        "value": IDEAL_CONVERTER_BITS,
        "unit": "bit",
        "source": IDEAL_CONVERTER_SOURCE,
    }
    out.update(limits.sources())
    return out
