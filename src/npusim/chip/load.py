"""Load and validate a :class:`ChipSpec` from TOML (a preset name or a file path).

Numbers are SI; a string with a unit is accepted too (``g_max = "100 uS"``,
``pulse_width = "50 ns"``, ``array_area = "25 um2"``). Any problem raises one
:class:`ChipSpecError` whose single-line message names the key and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from npusim.chip.spec import SECTIONS, ChipSpec, ChipSpecError

_PREFIX = {  # SI prefix -> power of ten
    "": 0,
    "T": 12,
    "G": 9,
    "M": 6,
    "k": 3,
    "m": -3,
    "u": -6,
    "µ": -6,
    "μ": -6,
    "n": -9,
    "p": -12,
    "f": -15,
    "a": -18,
}
_UNIT_NAMES = {
    "S": "siemens (e.g. '100 uS')",
    "V": "volts (e.g. '200 mV')",
    "A": "amperes (e.g. '10 uA')",
    "s": "seconds (e.g. '10 ns')",
    "J": "joules (e.g. '1 pJ')",
    "W": "watts (e.g. '2 mW')",
    "J/B": "joules per byte (e.g. '1.25 pJ/B')",
    "m2": "square metres (e.g. '25 um2')",
    "m": "metres (e.g. '32 nm')",
    "Hz": "hertz (e.g. '1 GHz')",
    "V/A": "volts per ampere (e.g. '10 kV/A')",
}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")
_TOP_KEYS = ("name", "description", *SECTIONS)


def list_presets() -> list[str]:
    """Names of the chip presets shipped with npusim."""
    folder = resources.files("npusim.chip") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_chip(name_or_path: str | Path) -> ChipSpec:
    """Load a preset by name (``"rram"``) or a TOML file by path; validate it."""
    text, origin = _read(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ChipSpecError(f"{origin}: not valid TOML ({err})") from None
    if "name" not in data and isinstance(name_or_path, str) and name_or_path in list_presets():
        data["name"] = name_or_path
    return spec_from_dict(data, origin=origin)


def _read(name_or_path: str | Path) -> tuple[str, str]:
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and path.suffix != ".toml" and "/" not in name_or_path:
        if name_or_path not in list_presets():
            raise ChipSpecError(
                f"chip '{name_or_path}': no such preset; choose one of "
                f"{', '.join(list_presets())} or give a path to a .toml file"
            )
        res = resources.files("npusim.chip") / "presets" / f"{name_or_path}.toml"
        return res.read_text(encoding="utf-8"), f"preset '{name_or_path}'"
    if not path.is_file():
        raise ChipSpecError(f"chip file '{path}': not found")
    return path.read_text(encoding="utf-8"), f"chip file '{path}'"


def spec_from_dict(data: dict[str, Any], origin: str = "chip") -> ChipSpec:
    """Build a validated :class:`ChipSpec` from a nested dict (as parsed from TOML)."""

    def fail(msg: str) -> ChipSpecError:
        return ChipSpecError(f"{origin}: {msg}")

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(f"unknown key '{key}'; allowed top-level keys: {', '.join(_TOP_KEYS)}")
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


def _build_section(section: str, cls: type, table: dict[str, Any], fail: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in fields:
            allowed = ", ".join(n for n in fields)
            raise fail(f"{section}.{key}: unknown key; allowed keys in [{section}]: {allowed}")
        values[key] = _coerce(f"{section}.{key}", fields[key], raw, fields, fail)
    return cls(**values)


def _coerce(key: str, f: dataclasses.Field, raw: Any, fields: dict, fail: Any) -> Any:
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
    allowed = _describe_range(key, lo, hi, unit, is_int)
    value = _to_si(key, raw, unit, allowed, fail)
    if is_int:
        if isinstance(value, float) and not (value.is_integer() or math.isinf(value)):
            raise fail(f"{key} = {raw!r}: expected an integer; allowed {allowed}")
        value = int(value) if math.isfinite(value) else value
    if math.isnan(value) or not (lo <= value <= hi):
        raise fail(f"{key} = {raw!r} is out of range; allowed {allowed}")
    return value


def _to_si(key: str, raw: Any, unit: str, allowed: str, fail: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise fail(f"{key}: expected a number, got {type(raw).__name__} {raw!r}; allowed {allowed}")
    if not isinstance(raw, str):
        return raw
    m = _QUANTITY.match(raw)
    if m is None:
        expected = "a number with a unit" if unit else "a number"
        raise fail(f"{key} = {raw!r}: expected {expected}; allowed {allowed}")
    number, given = Decimal(m.group(1)), m.group(2)
    if not unit:
        if given:
            raise fail(f"{key} = {raw!r}: this quantity has no unit; allowed {allowed}")
        return float(number)
    for prefix, exponent in _PREFIX.items():
        if given == prefix + unit:
            return float(number.scaleb(2 * exponent if unit == "m2" else exponent))
    raise fail(
        f"{key} = {raw!r}: wrong unit '{given or 'none'}'; expected {_UNIT_NAMES[unit]}; "
        f"allowed {allowed}"
    )


def _describe_range(key: str, lo: float, hi: float, unit: str, is_int: bool) -> str:
    name = key.rsplit(".", 1)[-1]
    kind = "integer" if is_int else ("normalised" if not unit else unit)
    return f"{lo:g} <= {name} <= {hi:g} ({kind})"


def _cross_checks(spec: ChipSpec, fail: Any) -> None:
    d, c = spec.device, spec.converters
    if not d.g_min < d.g_max:
        raise fail(f"device.g_min = {d.g_min:g} S must be below device.g_max = {d.g_max:g} S")
    if d.stuck_min_fraction + d.stuck_max_fraction > 1.0:
        raise fail("device.stuck_min_fraction + device.stuck_max_fraction must be <= 1")
    if not c.dac_lo < c.dac_hi:
        raise fail("converters.dac_lo must be below converters.dac_hi")
    if not c.adc_lo < c.adc_hi:
        raise fail("converters.adc_lo must be below converters.adc_hi")


def spec_to_toml(spec: ChipSpec) -> str:
    """A TOML text that :func:`load_chip` reads back to an equal :class:`ChipSpec` (SI numbers)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"name = {value(spec.name)}", f"description = {value(spec.description)}"]
    data = spec.to_dict()
    for section in SECTIONS:
        table = data[section]
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {value(v)}" for k, v in table.items() if k != "sources"]
        if table["sources"]:
            lines += ["", f"[{section}.sources]"]
            lines += [f"{k} = {value(v)}" for k, v in table["sources"].items()]
    return "\n".join(lines) + "\n"
