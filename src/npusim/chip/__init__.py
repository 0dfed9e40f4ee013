"""npusim.chip: typed, validated chip descriptions (``ChipSpec``), TOML presets and the
chip's capacity (arrays a network needs)."""

from npusim.chip.capacity import arrays_needed, check_fits
from npusim.chip.load import list_presets, load_chip, spec_to_toml
from npusim.chip.spec import (
    AmplifierSpec,
    ArraySpec,
    ChipSpec,
    ChipSpecError,
    ConverterSpec,
    DeviceSpec,
    EnergySpec,
    TimingSpec,
    spec_from_dict,
)

__all__ = [
    "AmplifierSpec",
    "ArraySpec",
    "ChipSpec",
    "ChipSpecError",
    "ConverterSpec",
    "DeviceSpec",
    "EnergySpec",
    "TimingSpec",
    "arrays_needed",
    "check_fits",
    "list_presets",
    "load_chip",
    "spec_from_dict",
    "spec_to_toml",
]
