"""Load and validate a :class:`ChipSpec` from TOML (a preset name or a file path).

Numbers are SI; a string with a unit is accepted too (``g_max = "100 uS"``,
``pulse_width = "50 ns"``, ``array_area = "25 um2"``). Any problem raises one
:class:`ChipSpecError` whose single-line message names the key and what is
allowed.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from npusim.chip.spec import SECTIONS, ChipSpec, ChipSpecError, spec_from_dict

__all__ = ["list_presets", "load_chip", "spec_from_dict", "spec_to_toml"]


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
    spec = spec_from_dict(data, origin=origin)
    if "device" not in data:  # an empty or partial file must not train on silent defaults
        raise ChipSpecError(
            f"{origin}: defines no [device] table; a chip file needs at least its device model "
            "(start from a preset: npusim.chip.spec_to_toml(npusim.chip.load_chip('rram')))"
        )
    return spec


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
    try:
        return path.read_text(encoding="utf-8"), f"chip file '{path}'"
    except UnicodeDecodeError:
        raise ChipSpecError(f"chip file '{path}': not UTF-8 text (a TOML file is)") from None


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
