"""Cost constants of the analog NPU, each with its unit and its source next to it.

Digital energies are Horowitz's 45 nm / 0.9 V figures scaled to 22 nm / 0.8 V by first-order
C·V² scaling with capacitance ∝ feature size (see :func:`node_scale`). A ``ChipSpec`` supplies
its own values and citations through :func:`constants_from_spec`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

K_B = 1.380649e-23  # J/K, Boltzmann constant (SI 2019 exact definition)

HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, energy table (45 nm, 0.9 V)"
NEUROSIM = (
    "NeuroSim MLP_NeuroSim_V3.0 Cell.cpp RealDevice defaults (Chen, Peng, Yu, "
    "IEEE TCAD 2018; Ag:a-Si synapse)"
)
ISAAC = "Shafiee et al., 'ISAAC', ISCA 2016, Table 6 (32 nm, 128x128 crossbar, 100 ns cycle)"
ASSUMED = "stated assumption of this model (order of magnitude); override in the chip preset"


def const(value: float, unit: str, source: str):
    """A dataclass field holding a default ``value`` with its ``unit`` and ``source``."""
    return field(default=value, metadata={"unit": unit, "source": source})


# NeuroSim V3.0 RealDevice defaults, used to derive per-event array energies below.
_NS_VREAD, _NS_VWRITE, _NS_TREAD, _NS_TWRITE = 0.5, 2.0, 5e-9, 8e-8  # V, V, s, s
_NS_GMID = 0.5 * (1e-5 + 4.76e-7)  # S, mid of maxConductance / minConductance


def node_scale(from_nm: float, from_v: float, to_nm: float, to_v: float) -> float:
    """First-order CMOS energy scaling E ∝ C·V², C ∝ feature size (Dennard; cf. Stillmaker &
    Baas, Integration 2017, for measured factors, which scale less well below 22 nm)."""
    return (to_nm / from_nm) * (to_v / from_v) ** 2


_SCALE = node_scale(45.0, 0.9, 22.0, 0.8)  # Horowitz 45 nm/0.9 V -> 22 nm/0.8 V = 0.386
_SCALED = f"{HOROWITZ}, x{_SCALE:.3f} to 22 nm/0.8 V (E ∝ L·V²)"


@dataclass(frozen=True)
class CostConstants:
    """Everything the NPU cost model needs (SI units; areas m², energies J, times s)."""

    # ---- technology and geometry ----
    node_nm: float = const(
        22.0, "nm", "design point: 22 nm CMOS with embedded 1T1R RRAM (Jain et al., ISSCC 2019)"
    )
    array_rows: int = const(128, "cells", ISAAC)
    array_cols: int = const(128, "cells", ISAAC)
    array_area_m2: float = const(
        128 * 128 * 16 * (22e-9) ** 2, "m^2", NEUROSIM + ": 1T1R cell 4F x 4F, F = 22 nm"
    )
    # ---- memristor arrays: reads while settling, programming pulses ----
    analog_mac_j: float = const(
        _NS_VREAD**2 * _NS_GMID * _NS_TREAD,
        "J",
        NEUROSIM + ": V_read^2 G_mid t_read = (0.5 V)^2 x 5.2 uS x 5 ns per cell and settle step",
    )
    pulse_j: float = const(
        _NS_VWRITE**2 * _NS_GMID * _NS_TWRITE,
        "J",
        NEUROSIM + ": V_w^2 G_mid t_pulse = (2 V)^2 x 5.2 uS x 80 ns (its write-energy model)",
    )
    t_sweep_s: float = const(_NS_TREAD, "s", NEUROSIM + ": readPulseWidth, one settle step")
    write_pulse_s: float = const(_NS_TWRITE, "s", NEUROSIM + ": writePulseWidth")
    # ---- converters ----
    adc_bits: int = const(8, "bit", ISAAC + ": 8-bit SAR ADC")
    adc_walden_fom_j: float = const(
        6.1e-15,
        "J/conv-step",
        ISAAC + ": 2 mW at 1.28 GS/s, 8 b (Kull et al., ISSCC 2013) = P/(2^B fs), "
        "Walden FoM as tabulated in the Murmann ADC survey",
    )
    adc_rate_hz: float = const(1.28e9, "S/s", ISAAC)
    adc_area_m2: float = const(1.2e-9, "m^2", ISAAC + ": 0.0012 mm^2 per ADC")
    cols_per_adc: int = const(128, "columns", ISAAC + ": one ADC per 128-column crossbar")
    dac_bits: int = const(8, "bit", ISAAC + ": 8-bit inputs streamed bit-serially")
    dac_j: float = const(
        8 * 3.9e-13, "J", ISAAC + ": 1024 1-bit DACs draw 4 mW per 100 ns cycle; x 8 bits"
    )
    dac_area_m2: float = const(1.66e-13, "m^2", ISAAC + ": 0.00017 mm^2 per 1024 1-bit DACs")
    # ---- neurons (amplifiers / nonlinear elements at each node) ----
    amp_power_w: float = const(10e-6, "W", ASSUMED + ": 10 uW low-power OTA per neuron")
    amp_area_m2: float = const(1e-11, "m^2", ASSUMED + ": 10 um^2 per neuron")
    # ---- digital periphery, memory ----
    digital_op_j: float = const(
        0.3e-12 * _SCALE, "J", _SCALED + ": 8b multiply 0.2 pJ + 32b add 0.1 pJ"
    )
    sram_byte_j: float = const(1.25e-12 * _SCALE, "J/B", _SCALED + ": 8 KB SRAM, 10 pJ/64 b")
    dram_byte_j: float = const(
        1.625e-10, "J/B", HOROWITZ + ": DRAM 1.3 nJ per 64 b (off-chip, not scaled)"
    )
    digital_macs_per_s: float = const(1e12, "MAC/s", ASSUMED + ": 1024 MAC units at 1 GHz")
    digital_area_m2: float = const(1e-6, "m^2", ASSUMED + ": 1 mm^2 update engine + buffers")
    static_w_per_array: float = const(
        1e-4, "W", ASSUMED + ": 0.1 mW leakage per array with its periphery"
    )
    # ---- physical limits used by the claims check ----
    temperature_k: float = const(300.0, "K", "room temperature operating point")
    best_walden_fom_j: float = const(
        1e-15, "J/conv-step", "Murmann ADC survey 1997-2024: lowest Walden FoM band ~1 fJ"
    )
    best_schreier_fom_db: float = const(
        185.0, "dB", "Murmann ADC survey 1997-2024: Schreier FoM (SNDR) envelope ~185 dB"
    )

    spec_sources: dict = field(default_factory=dict, compare=False, repr=False)

    # ---- derived quantities ----
    @property
    def adc_j(self) -> float:
        """Energy (J) per ADC conversion: Walden FoM × 2^bits."""
        return self.adc_walden_fom_j * 2**self.adc_bits

    def sources(self) -> dict[str, dict[str, object]]:
        """``{field: {value, unit, source}}`` for every constant (goes into report.json)."""
        over = self.spec_sources
        return {
            f.name: {
                "value": getattr(self, f.name),
                "unit": f.metadata["unit"],
                "source": over.get(f.name) or f.metadata["source"],
            }
            for f in fields(self)
            if f.name != "spec_sources"
        }

    def replace(self, **changes) -> CostConstants:
        """Copy with fields changed; unknown names are an error naming them."""
        names = {f.name for f in fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ValueError(f"unknown cost constants {bad}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)


# cost field <- (ChipSpec section, field, conversion to the cost field's unit)
_SPEC_MAP: dict[str, tuple[str, str, float]] = {
    "node_nm": ("energy", "node", 1e9),
    "array_rows": ("array", "rows", 1),
    "array_cols": ("array", "cols", 1),
    "array_area_m2": ("energy", "array_area", 1),
    "pulse_j": ("energy", "program_pulse", 1),
    "t_sweep_s": ("timing", "settle_tau", 1),
    "write_pulse_s": ("timing", "pulse_width", 1),
    "adc_walden_fom_j": ("energy", "adc_fom", 1),
    "adc_area_m2": ("energy", "adc_area", 1),
    "dac_area_m2": ("energy", "dac_area", 1),
    "amp_power_w": ("energy", "amplifier_power", 1),
    "amp_area_m2": ("energy", "amplifier_area", 1),
    "digital_op_j": ("energy", "digital_mac", 1),
    "sram_byte_j": ("energy", "sram_per_byte", 1),
    "dram_byte_j": ("energy", "dram_per_byte", 1),
    "static_w_per_array": ("energy", "static_power", 1),
}


def constants_from_spec(spec=None, **overrides) -> CostConstants:
    """Cost constants of a ``ChipSpec`` (its ``energy``, ``array``, ``timing``, ``converters``
    sections; its ``sources`` tables become the sources), then ``overrides`` by field name.
    Without a spec, the defaults above. Ideal (0-bit) converters are costed at the default
    bits: the physical chip still needs converters."""
    c = CostConstants()
    changes: dict[str, object] = {}
    cited: dict[str, str] = {}
    if spec is not None:
        for name, (section, key, scale) in _SPEC_MAP.items():
            sec = getattr(spec, section, None)
            if sec is None or not hasattr(sec, key):
                continue
            value = getattr(sec, key)
            changes[name] = type(getattr(c, name))(value * scale)
            src = (getattr(sec, "sources", None) or {}).get(key)
            cited[name] = f"chip preset {getattr(spec, 'name', '?')} [{section}.{key}]" + (
                f": {src}" if src else ""
            )
        conv, arr, energy = (getattr(spec, s, None) for s in ("converters", "array", "energy"))
        if conv is not None and conv.adc_bits > 0:
            changes["adc_bits"] = int(conv.adc_bits)
        if conv is not None and conv.dac_bits > 0:
            changes["dac_bits"] = int(conv.dac_bits)
        if arr is not None:
            changes["cols_per_adc"] = -(-int(arr.cols) // int(arr.adcs_per_array))
        dev, timing = getattr(spec, "device", None), getattr(spec, "timing", None)
        if arr is not None and dev is not None and timing is not None:
            g_mid = 0.5 * (dev.g_min + dev.g_max)
            changes["analog_mac_j"] = arr.read_voltage**2 * g_mid * timing.settle_tau
            cited["analog_mac_j"] = (
                f"chip preset {getattr(spec, 'name', '?')}: [array.read_voltage]^2 x "
                "mid([device.g_min], [device.g_max]) x [timing.settle_tau], one cell conducting "
                "for one settle step (energy.read_device prices a full read cycle instead)"
            )
        if energy is not None and hasattr(energy, "dac_energy"):
            changes["dac_j"] = float(energy.dac_energy(int(changes.get("dac_bits", c.dac_bits))))
            cited["dac_j"] = f"chip preset {getattr(spec, 'name', '?')} [energy.dac_fom x 2^bits]"
    changes.update(overrides)
    out = c.replace(**changes)
    return dataclasses.replace(out, spec_sources={**cited})


def chip_constants(chip: str | None) -> CostConstants:
    """Cost constants of a chip preset name or TOML path (None: the cost model's defaults)."""
    if not chip:
        return CostConstants()
    from npusim.chip import load_chip

    return constants_from_spec(load_chip(chip))


def drn_power_scale_w(chip: str | None, input_gain: float) -> float | None:
    """Watts per unit of the DRN's simulated Σ G·ΔV²: normalised conductance 1 is the chip's
    ``device.g_max`` (S) and the input-layer voltage ``input_gain`` (an input of 1) is its
    ``array.read_voltage`` (V). None without a chip."""
    if not chip:
        return None
    from npusim.chip import load_chip

    spec = load_chip(chip)
    return spec.device.g_max * (spec.array.read_voltage / input_gain) ** 2
