"""npusim.chip: typed, validated chip descriptions (``ChipSpec``) and TOML presets."""

from npusim.chip.load import list_presets, load_chip, spec_from_dict, spec_to_toml
from npusim.chip.spec import (
    AmplifierSpec,
    ArraySpec,
    ChipSpec,
    ChipSpecError,
    ConverterSpec,
    DeviceSpec,
    EnergySpec,
    TimingSpec,
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
    "list_presets",
    "load_chip",
    "spec_from_dict",
    "spec_to_toml",
]
