"""SI quantities with units, as a chip file writes them (``"100 uS"``, ``"50 ns"``, ``"25 um2"``).

Pure parsing (no chip classes): :mod:`npusim.chip.spec` validates its fields with it, so
imports flow one way, ``units`` <- ``spec`` <- ``load``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

PREFIX = {  # SI prefix -> power of ten
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
UNIT_NAMES = {
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


def to_si(key: str, raw: Any, unit: str, allowed: str, fail: Callable[[str], Exception]) -> float:
    """``raw`` (a number, or a string with an SI-prefixed ``unit``) as a float in SI units.

    ``fail(message)`` builds the error to raise; the message names ``key`` and ``allowed``.
    """
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
    for prefix, exponent in PREFIX.items():
        if given == prefix + unit:
            return float(number.scaleb(2 * exponent if unit == "m2" else exponent))
    raise fail(
        f"{key} = {raw!r}: wrong unit '{given or 'none'}'; expected {UNIT_NAMES[unit]}; "
        f"allowed {allowed}"
    )


def describe_range(key: str, lo: float, hi: float, unit: str, is_int: bool) -> str:
    """``"lo <= name <= hi (unit)"`` for an error message."""
    name = key.rsplit(".", 1)[-1]
    kind = "integer" if is_int else ("normalised" if not unit else unit)
    return f"{lo:g} <= {name} <= {hi:g} ({kind})"
