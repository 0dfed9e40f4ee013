"""Typed description of a chip: crossbar arrays, synapse devices, periphery, timing, energy.

Every numeric field carries its unit and allowed range in ``metadata`` so
:func:`spec_from_dict` can validate a table and name the key in one clear error
(:mod:`npusim.chip.load` reads files and presets into it). Quantities are SI
(S, V, A, s, J, W, m^2); "normalised" means dimensionless. Each section has a
``sources`` table: key -> citation.

Every field has a consumer (``tests/test_chip_live.py`` fails otherwise): the device
section drives the device physics (:mod:`npusim.devices`), ``converters`` the DAC/ADC
in the loop, ``amplifier.gain`` the DRN's read-out, ``array.tiles`` the capacity check
(:mod:`npusim.chip.capacity`), and the rest the cost model (:mod:`npusim.cost.npu`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from npusim.chip.units import describe_range, to_si
from npusim.core.errors import NpusimError


class ChipSpecError(NpusimError, ValueError):
    """A chip description is invalid; the message names the key and what is allowed."""


def _num(default: Any, unit: str, lo: float, hi: float, doc: str = "") -> Any:
    """Numeric field with unit (``""`` for normalised/count) and inclusive range."""
    return field(default=default, metadata={"unit": unit, "range": (lo, hi), "doc": doc})


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


def _sources() -> Any:
    return field(default_factory=dict, metadata={"sources": True})


@dataclass(frozen=True)
class ArraySpec:
    """Crossbar arrays and their tiling.

    rows, cols: devices per crossbar array (count). tiles: arrays available on
    the chip (count): a network needing more is refused (:func:`npusim.chip.capacity.
    check_fits`). adcs_per_array: ADCs shared by the columns of one array
    (column multiplexing). read_voltage (V): voltage that encodes a normalised
    input of 1 on a row (and a normalised ADC reading of 1). rows_per_write: rows of one
    array programmed in the same pulse slot (count; every column of those rows is pulsed at
    once), which sets the update time (:mod:`npusim.cost.latency`).
    """

    rows: int = _num(128, "", 1, 65536)
    cols: int = _num(128, "", 1, 65536)
    tiles: int = _num(1024, "", 1, 10**7)
    adcs_per_array: int = _num(8, "", 1, 65536)
    read_voltage: float = _num(0.2, "V", 1e-3, 5.0)
    rows_per_write: int = _num(1, "", 1, 65536)
    sources: dict[str, str] = _sources()


@dataclass(frozen=True)
class DeviceSpec:
    """Synapse device model (see :mod:`npusim.devices.pulsed` for the equations).

    Conductances are normalised by ``g_max`` inside the simulator: y = G / g_max,
    nominally in [g_min/g_max, 1]. One pulse moves y by a state-dependent step

        up:   dy = s_up   * (1 + nl_up   * (1 - 2u))     u = (y - y_lo) / (y_hi - y_lo)
        down: dy = s_down * (1 + nl_down * (2u - 1))

    with s_up / s_down = asymmetry and (s_up + s_down)/2 = (1 - g_min/g_max) / n_states,
    plus cycle-to-cycle noise of std ``write_noise`` * step per pulse.

    model: "ideal" (weights are updated exactly) or "pulsed".
    g_min, g_max (S): conductance bounds. n_states: pulses across the range.
    nonlinearity_up/down (normalised, 0 = linear, 1 = soft bounds).
    nonlinearity_exponent (normalised, >= 0): shape of the state dependence; 0 is the
    linear form above, r > 0 replaces (1 - 2u) by the exponential
    g_r(u) = (2 e^(-r u) - 1 - e^(-r)) / (1 - e^(-r)) (down: g_r(1 - u)), the
    exponential-step device of aihwkit's ``ExpStepDevice`` (same values at the bounds).
    asymmetry: up-step / down-step ratio at the symmetric point.
    write_noise: cycle-to-cycle std of one pulse's step, in units of the step.
    read_noise: std of one read, in units of (g_max - g_min).
    drift_nu, drift_nu_std: drift exponent mean and device-to-device std,
    G(t) = G0 (t / drift_t0)^(-nu) for t > drift_t0 (s).
    d2d_*: device-to-device relative std of step, bounds, asymmetry,
    nonlinearity and write noise, sampled once per chip from the seed.
    stuck_min_fraction / stuck_max_fraction: devices stuck at their g_min / g_max.
    rounding: update-to-pulse-count rounding. scheme: "bidirectional" (both
    devices of a pair move, in opposite directions), "reference" (g+ is
    programmed both ways, g- is a reference at the symmetry point, re-programmed
    only on refresh) or "one_sided" (only potentiating pulses, e.g. PCM gradual
    SET; depression by abrupt RESET on refresh).
    reference_point: where a "reference" pair's fixed device sits, i.e. which
    conductance of the programmed device is weight 0: "middle" of the pair's common
    window, or "symmetry", the programmed device's own symmetry point (where its up and
    down steps are equal; zero-shifting, Kim et al. 2020).
    refresh, refresh_level, refresh_interval: every refresh_interval updates,
    a pair above refresh_level of its devices' range (one-sided: either device;
    bidirectional: both, or both below 1 - level) is re-programmed to the same
    weight with headroom (counted as pulses).
    endurance: pulses after which a device freezes (count).
    weight_range: full-swing |w| of a pair, as a multiple of the tensor's
    initial max |w| (normalised). drift_compensation: rescale read weights
    by a global factor (as calibrated on chip) after drift.
    inference_noise: the statistical model of a programmed device read at inference
    (:mod:`npusim.deploy.noise`): "chip" (this section's own read noise, drift and
    faults) or "pcm" (Nandakumar et al. 2019's PCM model: state-dependent programming
    noise, drift exponent and 1/f read noise).
    """

    model: str = _choice("pulsed", "ideal", "pulsed")
    g_min: float = _num(1e-6, "S", 0.0, 1e-2)
    g_max: float = _num(1e-4, "S", 1e-9, 1e-2)
    n_states: int = _num(1000, "", 2, 10**7)
    nonlinearity_up: float = _num(0.0, "", 0.0, 1.0)
    nonlinearity_down: float = _num(0.0, "", 0.0, 1.0)
    nonlinearity_exponent: float = _num(0.0, "", 0.0, 50.0)
    asymmetry: float = _num(1.0, "", 0.1, 10.0)
    write_noise: float = _num(0.0, "", 0.0, 10.0)
    read_noise: float = _num(0.0, "", 0.0, 1.0)
    drift_nu: float = _num(0.0, "", 0.0, 1.0)
    drift_nu_std: float = _num(0.0, "", 0.0, 1.0)
    drift_t0: float = _num(1.0, "s", 1e-9, 1e6)
    drift_compensation: bool = False
    d2d_step: float = _num(0.0, "", 0.0, 2.0)
    d2d_bounds: float = _num(0.0, "", 0.0, 0.5)
    d2d_asymmetry: float = _num(0.0, "", 0.0, 2.0)
    d2d_nonlinearity: float = _num(0.0, "", 0.0, 2.0)
    d2d_write_noise: float = _num(0.0, "", 0.0, 2.0)
    stuck_min_fraction: float = _num(0.0, "", 0.0, 1.0)
    stuck_max_fraction: float = _num(0.0, "", 0.0, 1.0)
    rounding: str = _choice("stochastic", "stochastic", "deterministic")
    scheme: str = _choice("bidirectional", "bidirectional", "reference", "one_sided")
    reference_point: str = _choice("middle", "middle", "symmetry")
    refresh: bool = True
    refresh_level: float = _num(0.9, "", 0.5, 1.0)
    refresh_interval: int = _num(100, "", 1, 10**9)
    endurance: float = _num(math.inf, "", 1.0, math.inf)
    weight_range: float = _num(3.0, "", 0.01, 1e3)
    inference_noise: str = _choice("chip", "chip", "pcm")
    sources: dict[str, str] = _sources()

    @property
    def on_off_ratio(self) -> float:
        """g_max / g_min (inf when g_min is 0)."""
        return math.inf if self.g_min == 0 else self.g_max / self.g_min


@dataclass(frozen=True)
class ConverterSpec:
    """DAC (inputs to rows) and ADC (column outputs) of the periphery.

    bits = 0 means an ideal converter (no quantisation, no clipping).
    Ranges are normalised signal values (a DAC code of dac_hi drives
    ``array.read_voltage``); values outside are clipped.
    """

    dac_bits: int = _num(0, "", 0, 24)
    dac_lo: float = _num(0.0, "", -1e6, 1e6)
    dac_hi: float = _num(1.0, "", -1e6, 1e6)
    adc_bits: int = _num(0, "", 0, 24)
    adc_lo: float = _num(-1.0, "", -1e6, 1e6)
    adc_hi: float = _num(1.0, "", -1e6, 1e6)
    sources: dict[str, str] = _sources()


@dataclass(frozen=True)
class AmplifierSpec:
    """Column amplifiers (transimpedance + neuron nonlinearity).

    gain (V/A): transimpedance gain of the read-out. The DHN's states are
    normalised signals the ADC reads directly; the DRN's node voltages reach the
    ADC through a g_max sense device and this gain (see
    :meth:`npusim.circuits.resistive.DeepResistive.read_gains`).
    per_array: amplifiers per array (count); the cost model places them all
    (area) and biases ``per_array / cols`` of them per neuron while settling.
    """

    gain: float = _num(1e4, "V/A", 1e-3, 1e12)
    per_array: int = _num(128, "", 1, 65536)
    sources: dict[str, str] = _sources()


@dataclass(frozen=True)
class TimingSpec:
    """Timing. pulse_width (s): one programming pulse. settle_tau (s): RC time
    constant of an array settling to equilibrium (one settle step). read_time (s):
    one array read cycle (integration + conversion). clock (Hz): digital periphery
    clock. digital_lanes: operations the digital periphery completes per clock cycle
    (count). adc_rate (Hz): conversions per second of one ADC (the array's
    ``array.adcs_per_array`` ADCs share its columns)."""

    pulse_width: float = _num(1e-8, "s", 1e-12, 1.0)
    settle_tau: float = _num(1e-9, "s", 1e-15, 1.0)
    read_time: float = _num(1e-7, "s", 1e-12, 1.0)
    clock: float = _num(1e9, "Hz", 1e3, 1e12)
    digital_lanes: int = _num(1024, "", 1, 10**9)
    adc_rate: float = _num(1.28e9, "Hz", 1e3, 1e12)
    sources: dict[str, str] = _sources()


@dataclass(frozen=True)
class EnergySpec:
    """Energy and area constants for the cost model (all per event, SI units).

    adc_fom (J per conversion step): Walden figure of merit; one b-bit ADC
    conversion costs ``adc_fom * 2**b`` (see :meth:`adc_energy`).
    dac_fom (J per conversion step): same for a DAC (:meth:`dac_energy`).
    program_pulse (J): one gradual potentiating/depressing programming pulse.
    reset_pulse (J): one abrupt RESET pulse (one-sided devices re-programmed on
    refresh; the ledger's ``reset_pulses``).
    read_device (J): one device conducting through one read-out integration
    (V^2 G t at mid conductance); paid per ledger ``device_reads``.
    amplifier_power (W): one column amplifier while active.
    sram_per_byte, dram_per_byte (J/B): on-chip SRAM / off-chip DRAM access.
    digital_mac (J): one 8-bit integer multiply-accumulate (ledger ``digital_ops``).
    digital_fp32_op (J): one fp32 multiply or add (ledger ``fp32_ops``).
    static_power (W): leakage of one array with its periphery when powered.
    pulse_slot (J): one row or column line driven for one slot of a stochastic pulse train
    (a pulse or none; ledger ``pulse_slots``, in-array updates).
    sample_hold (J): one sample-and-hold of an analog line value (ledger ``sample_hold``).
    array_area (m^2): one crossbar array. adc_area, dac_area, amplifier_area
    (m^2): one converter / amplifier. digital_area (m^2): the digital periphery
    (update engine, buffers), once per chip.
    """

    adc_fom: float = _num(6e-15, "J", 0.0, 1e-9)
    dac_fom: float = _num(12e-15, "J", 0.0, 1e-9)
    program_pulse: float = _num(1e-12, "J", 0.0, 1e-6)
    reset_pulse: float = _num(1e-12, "J", 0.0, 1e-6)
    read_device: float = _num(2e-15, "J", 0.0, 1e-9)
    amplifier_power: float = _num(1e-5, "W", 0.0, 1.0)
    sram_per_byte: float = _num(1.25e-12, "J/B", 0.0, 1e-6)
    dram_per_byte: float = _num(1.6e-10, "J/B", 0.0, 1e-6)
    digital_mac: float = _num(2.3e-13, "J", 0.0, 1e-6)
    digital_fp32_op: float = _num(3.7e-12, "J", 0.0, 1e-6)
    static_power: float = _num(1e-4, "W", 0.0, 1e3)
    pulse_slot: float = _num(3.9e-13, "J", 0.0, 1e-9)
    sample_hold: float = _num(1e-15, "J", 0.0, 1e-9)
    array_area: float = _num(2.5e-11, "m2", 0.0, 1e-2)
    adc_area: float = _num(1.2e-9, "m2", 0.0, 1e-2)
    dac_area: float = _num(1.7e-13, "m2", 0.0, 1e-2)
    amplifier_area: float = _num(5e-11, "m2", 0.0, 1e-2)
    digital_area: float = _num(1e-6, "m2", 0.0, 1.0)
    sources: dict[str, str] = _sources()

    def adc_energy(self, bits: int) -> float:
        """Energy of one ``bits``-bit ADC conversion (J); 0 for an ideal (0-bit) ADC."""
        return self.adc_fom * 2.0**bits if bits > 0 else 0.0

    def dac_energy(self, bits: int) -> float:
        """Energy of one ``bits``-bit DAC conversion (J); 0 for an ideal (0-bit) DAC."""
        return self.dac_fom * 2.0**bits if bits > 0 else 0.0


SECTIONS: dict[str, type] = {
    "array": ArraySpec,
    "device": DeviceSpec,
    "converters": ConverterSpec,
    "amplifier": AmplifierSpec,
    "timing": TimingSpec,
    "energy": EnergySpec,
}


@dataclass(frozen=True)
class ChipSpec:
    """A whole chip. Load one with :func:`npusim.chip.load_chip`."""

    name: str = "custom"
    description: str = ""
    array: ArraySpec = field(default_factory=ArraySpec)
    device: DeviceSpec = field(default_factory=DeviceSpec)
    converters: ConverterSpec = field(default_factory=ConverterSpec)
    amplifier: AmplifierSpec = field(default_factory=AmplifierSpec)
    timing: TimingSpec = field(default_factory=TimingSpec)
    energy: EnergySpec = field(default_factory=EnergySpec)

    @property
    def is_ideal(self) -> bool:
        """True when weights are updated exactly (no device physics)."""
        return self.device.model == "ideal"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML-friendly; inf stays a float)."""
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> ChipSpec:
        """Copy with fields changed by dotted key, e.g. ``replace(**{"device.n_states": 64})``.

        Values are validated like TOML values (units, types, ranges).
        """
        data = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if not name:
                data[section] = value
            elif section not in data or not isinstance(data[section], dict):
                raise ChipSpecError(f"{key}: unknown section '{section}'")
            else:
                data[section][name] = value
        return spec_from_dict(data, origin=f"{self.name} (modified)")


TOP_KEYS = ("name", "description", *SECTIONS)
Fail = Callable[[str], ChipSpecError]


def spec_from_dict(data: dict[str, Any], origin: str = "chip") -> ChipSpec:
    """Build a validated :class:`ChipSpec` from a nested dict (as parsed from TOML).

    Any problem raises one :class:`ChipSpecError` whose message starts with ``origin``.
    """

    def fail(msg: str) -> ChipSpecError:
        return ChipSpecError(f"{origin}: {msg}")

    for key in data:
        if key not in TOP_KEYS:
            raise fail(f"unknown key '{key}'; allowed top-level keys: {', '.join(TOP_KEYS)}")
    kwargs: dict[str, Any] = {}
    for key in ("name", "description"):
        if key in data:
            if not isinstance(data[key], str):
                raise fail(f"{key}: expected a string, got {type(data[key]).__name__}")
            kwargs[key] = data[key]
    for section, cls in SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise fail(f"{section}: expected a table [{section}], got {type(table).__name__}")
        kwargs[section] = _build_section(section, cls, table, fail)
    spec = ChipSpec(**kwargs)
    _cross_checks(spec, fail)
    return spec


def _build_section(section: str, cls: type, table: dict[str, Any], fail: Fail) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in fields:
            allowed = ", ".join(n for n in fields)
            raise fail(f"{section}.{key}: unknown key; allowed keys in [{section}]: {allowed}")
        values[key] = _coerce(f"{section}.{key}", fields[key], raw, fields, fail)
    return cls(**values)


def _coerce(key: str, f: dataclasses.Field, raw: Any, fields: dict, fail: Fail) -> Any:
    meta = f.metadata
    if meta.get("sources"):
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise fail(f'{key}: expected a table of key = "citation" strings')
        for name in raw:
            if name not in fields or name == "sources":
                raise fail(f"{key}.{name}: source given for an unknown key")
        return dict(raw)
    if "choices" in meta:
        if raw not in meta["choices"]:
            raise fail(f"{key} = {raw!r}: allowed values are {', '.join(meta['choices'])}")
        return raw
    if f.type in ("bool", bool):
        if not isinstance(raw, bool):
            raise fail(f"{key}: expected true or false, got {type(raw).__name__} {raw!r}")
        return raw
    unit, (lo, hi) = meta["unit"], meta["range"]
    is_int = f.type in ("int", int)
    allowed = describe_range(key, lo, hi, unit, is_int)
    value = to_si(key, raw, unit, allowed, fail)
    if is_int:
        if isinstance(value, float) and not (value.is_integer() or math.isinf(value)):
            raise fail(f"{key} = {raw!r}: expected an integer; allowed {allowed}")
        value = int(value) if math.isfinite(value) else value
    if math.isnan(value) or not (lo <= value <= hi):
        raise fail(f"{key} = {raw!r} is out of range; allowed {allowed}")
    return value


def _cross_checks(spec: ChipSpec, fail: Fail) -> None:
    d, c = spec.device, spec.converters
    if not d.g_min < d.g_max:
        raise fail(f"device.g_min = {d.g_min:g} S must be below device.g_max = {d.g_max:g} S")
    if d.stuck_min_fraction + d.stuck_max_fraction > 1.0:
        raise fail("device.stuck_min_fraction + device.stuck_max_fraction must be <= 1")
    if not c.dac_lo < c.dac_hi:
        raise fail("converters.dac_lo must be below converters.dac_hi")
    if not c.adc_lo < c.adc_hi:
        raise fail("converters.adc_lo must be below converters.adc_hi")
