"""A :class:`~npusim.runtime.ledger.Ledger`'s counter names and its saved form: the JSON-ready
dict of ``Ledger.to_dict`` and the checks ``Ledger.from_dict`` runs on a saved one.

A saved ledger holds its scalar settings, ``sizes``/``logical_sizes``, ``arrays`` (one object
per crossbar array with the fields of :class:`~npusim.core.interfaces.ArrayShape`), and the
per-phase tables ``layers`` (one count per array) and ``phases``. A ledger saved before
``arrays`` existed loads with the arrays of a layered network of its ``sizes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any

from npusim.core.errors import NpusimError
from npusim.core.interfaces import ArrayShape, dense_arrays
from npusim.core.phases import PHASES

LAYER_COUNTERS: tuple[str, ...] = (
    "macs",
    "node_sweeps",
    "dac",
    "adc",
    "pulses",
    "reset_pulses",
    "params_written",
    "device_reads",
    "digital_ops",
    "fp32_ops",
    "bytes_tile",
    "bytes_mem",
    "pulse_slots",
    "coincidences",
    "sample_hold",
    "slot_cycles",
)
PHASE_COUNTERS: tuple[str, ...] = ("samples", "relaxations", "sweeps", "updates", "power_measured")
PHASE_FLOATS: tuple[str, ...] = ("settle_s", "power_w_samples")
UPDATE_MODES: tuple[str, ...] = ("digital", "coincidence")  # where an update is formed
RULE_COUNTERS: tuple[str, ...] = (
    "dac", "adc", "device_reads", "digital_ops", "fp32_ops", "bytes_tile",
)  # fmt: skip  # update-rule events a synapse model may report


class LedgerError(NpusimError, ValueError):
    """A saved ledger is malformed; the message names the entry."""


# scalar settings of a saved ledger: key -> (kind, default)
_SCALARS: dict[str, tuple[str, object]] = {
    "word_bytes": ("count", 1),
    "convert_every_sweep": ("bool", False),
    "update_mode": ("str", "digital"),
    "power_scale_w": ("number?", None),
    "power_samples": ("count", 16),
    "power_every": ("count", 100),
    "device_pulses_seen": ("count", 0),
    "device_resets_seen": ("count", 0),
}
_TABLES: tuple[str, ...] = ("device_events_seen", "sizes", "logical_sizes", "arrays")
_ARRAY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ArrayShape))
_ARRAY_OPTIONAL: frozenset[str] = frozenset({"block", "ff_ops_in", "read_back"})
_ARRAY_FLAGS: frozenset[str] = frozenset({"fed_back", "read_back"})


def is_count(v: object) -> bool:
    """A non-negative integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_scalar(key: str, v: object, kind: str) -> object:
    if kind == "count" and is_count(v):
        return int(v)
    if kind == "bool" and isinstance(v, bool):
        return v
    if kind == "str" and isinstance(v, str):
        return v
    if kind == "number?" and (v is None or (_is_number(v) and math.isfinite(v) and v >= 0)):
        return None if v is None else float(v)
    want = {
        "count": "a non-negative integer",
        "bool": "true or false",
        "str": "a string",
        "number?": "null or a non-negative finite number",
    }[kind]
    raise LedgerError(f"{key}: expected {want}, got {v!r}")


def zeros(n: int) -> list[int]:
    return [0] * n


def arrays_to_list(arrays: list[ArrayShape]) -> list[dict[str, Any]]:
    """JSON-ready arrays: one object of :class:`ArrayShape`'s fields each."""
    return [asdict(a) for a in arrays]


def arrays_from_list(vals: object) -> list[ArrayShape]:
    """Saved arrays, checked: a list of objects with :class:`ArrayShape`'s fields (``block``,
    ``ff_ops_in`` and ``read_back`` optional); rows, cols, uses and units positive integers,
    ``fed_back`` and ``read_back`` bools, ``block`` and ``ff_ops_in`` non-negative integers."""
    if not isinstance(vals, list):
        raise LedgerError(f"arrays: expected a list of objects, got {vals!r}")
    out = []
    for i, a in enumerate(vals):
        if not isinstance(a, dict):
            raise LedgerError(f"arrays[{i}]: expected an object of {_ARRAY_FIELDS}, got {a!r}")
        unknown = sorted(set(a) - set(_ARRAY_FIELDS))
        missing = sorted(set(_ARRAY_FIELDS) - set(a) - _ARRAY_OPTIONAL)
        if unknown or missing:
            raise LedgerError(f"arrays[{i}]: unknown keys {unknown}, missing keys {missing}")
        for key, v in a.items():
            if key in _ARRAY_FLAGS:
                ok = isinstance(v, bool)
            else:
                ok = is_count(v) and (key in _ARRAY_OPTIONAL or v >= 1)
            if not ok:
                want = "true or false" if key in _ARRAY_FLAGS else "a non-negative integer"
                want = want if key in _ARRAY_OPTIONAL | _ARRAY_FLAGS else "a positive integer"
                raise LedgerError(f"arrays[{i}].{key}: expected {want}, got {v!r}")
        out.append(ArrayShape(**a))
    return out


def ledger_dict(led: Any, arrays: list[ArrayShape]) -> dict:
    """JSON-ready copy of ledger ``led`` whose network is ``arrays`` (ints stay ints, so a
    resumed run continues counts exactly)."""
    return {
        **{key: getattr(led, key) for key in _SCALARS},
        "device_events_seen": dict(led.device_events_seen),
        "sizes": list(led.sizes),
        "logical_sizes": list(led.logical_sizes),
        "arrays": arrays_to_list(arrays),
        "layers": {p: {c: list(v) for c, v in lay.items()} for p, lay in led.layers.items()},
        "phases": {p: dict(ph) for p, ph in led.phases.items()},
    }


def _layer_table(layers: dict, nl: int) -> dict[str, dict[str, list[int]]]:
    out = {}
    for p, lay in layers.items():
        counts = {c: zeros(nl) for c in LAYER_COUNTERS}
        for c, v in lay.items():
            ok = isinstance(v, list) and len(v) == nl and all(is_count(x) for x in v)
            if c not in LAYER_COUNTERS or not ok:
                raise LedgerError(
                    f"layers.{p}.{c}: expected one of {LAYER_COUNTERS} holding {nl} "
                    f"non-negative integers, got {v!r}"
                )
            counts[c] = [int(x) for x in v]
        out[p] = counts
    return out


def _phase_table(phases: dict) -> dict[str, dict[str, float]]:
    out = {}
    for p, ph in phases.items():
        vals: dict[str, float] = {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS}
        for c, v in ph.items():
            if c in PHASE_FLOATS:
                ok = _is_number(v) and math.isfinite(v) and v >= 0
            else:
                ok = c in PHASE_COUNTERS and is_count(v)
            if not ok:
                raise LedgerError(
                    f"phases.{p}.{c}: expected one of {PHASE_COUNTERS + PHASE_FLOATS} "
                    f"holding a non-negative finite number, got {v!r}"
                )
            vals[c] = float(v) if c in PHASE_FLOATS else int(v)
        out[p] = vals
    return out


def ledger_fields(d: object) -> dict[str, Any]:
    """The constructor arguments of a ledger saved by :func:`ledger_dict`, every entry checked:
    a malformed dict (a damaged ``results.json`` or checkpoint) raises :class:`LedgerError`
    naming the entry; counters a ledger saved by an older npusim lacks start at 0, and its
    missing ``arrays`` are those of a layered network of its ``sizes``."""
    if not isinstance(d, dict):
        raise LedgerError(f"a ledger is a JSON object, got {type(d).__name__}")
    unknown = set(d) - set(_SCALARS) - set(_TABLES) - {"layers", "phases"}
    if unknown:
        raise LedgerError(f"unknown ledger keys {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for key, (kind, default) in _SCALARS.items():
        kw[key] = _check_scalar(key, d.get(key, default), kind)
    if kw["update_mode"] not in UPDATE_MODES:
        raise LedgerError(f"update_mode: one of {UPDATE_MODES}, got {kw['update_mode']!r}")
    seen = d.get("device_events_seen", {})
    if not isinstance(seen, dict) or not all(
        k in RULE_COUNTERS and is_count(v) for k, v in seen.items()
    ):
        raise LedgerError(
            f"device_events_seen: expected an object of {RULE_COUNTERS} holding "
            f"non-negative integers, got {seen!r}"
        )
    kw["device_events_seen"] = {k: int(v) for k, v in seen.items()}
    for key in ("sizes", "logical_sizes"):
        vals = d.get(key, [])
        if not isinstance(vals, list) or not all(is_count(n) and n >= 1 for n in vals):
            raise LedgerError(f"{key}: expected a list of positive integers, got {vals!r}")
        kw[key] = [int(n) for n in vals]
    if "arrays" in d:
        kw["arrays"] = arrays_from_list(d["arrays"])
        n = len(kw["arrays"])
        if kw["sizes"] and len(kw["sizes"]) != n + 1:
            raise LedgerError(
                f"sizes: expected {n + 1} layer sizes for {n} arrays, got {kw['sizes']}"
            )
        if n and not kw["sizes"]:
            raise LedgerError(f"sizes: expected {n + 1} layer sizes for {n} arrays, got none")
    else:  # saved before arrays were recorded: a layered network
        kw["arrays"] = dense_arrays(kw["sizes"]) if len(kw["sizes"]) >= 2 else []
    nl = len(kw["arrays"])
    layers, phases = d.get("layers", {}), d.get("phases", {})
    for name, table in (("layers", layers), ("phases", phases)):
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise LedgerError(f"{name}: expected an object of phases, each an object")
        bad = sorted(set(table) - set(PHASES))
        if bad:
            raise LedgerError(f"{name}: unknown phases {bad}; expected some of {PHASES}")
    kw["layers"] = _layer_table(layers, nl)
    kw["phases"] = _phase_table(phases)
    return kw
