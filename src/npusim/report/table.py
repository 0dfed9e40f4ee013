"""Rich tables of a report: systems side by side, the NPU's breakdown, the claims check."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.table import Table

_PREFIX = [
    (1e-24, "y"),
    (1e-21, "z"),
    (1e-18, "a"),
    (1e-15, "f"),
    (1e-12, "p"),
    (1e-9, "n"),
    (1e-6, "µ"),
    (1e-3, "m"),
    (1, ""),
]


def si(x: float | str | None, unit: str) -> str:
    """``x`` with an SI prefix, e.g. ``si(3.2e-9, "J") == "3.20 nJ"``."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if not math.isfinite(x):
        return "∞"
    if x == 0:
        return f"0 {unit}"
    scale, p = _PREFIX[0]
    for s, q in _PREFIX:
        if abs(x) >= s:
            scale, p = s, q
    if abs(x) >= 1e3:
        return f"{x:.3g} {unit}"
    return f"{x / scale:.3g} {p}{unit}"


def ratio(x: float | str | None) -> str:
    if x is None or isinstance(x, str):
        return "—" if x is None else x
    if not math.isfinite(x):
        return "∞"
    return f"{x:.3g}×"


def systems_table(report: dict) -> Table:
    t = Table(title="Energy, time and area per sample (same network, same samples)")
    cols = ("system", "J/train", "J/infer", "s/train", "s/infer", "area", "÷NPU train", "÷NPU inf")
    for col in cols:
        t.add_column(col, justify="left" if col == "system" else "right")
    for name, row in report["systems"].items():
        tr, inf = row.get("train", {}), row.get("inference", {})
        area = row.get("area_m2")
        t.add_row(
            name,
            si(tr.get("energy_j"), "J"),
            si(inf.get("energy_j"), "J"),
            si(tr.get("time_s"), "s"),
            si(inf.get("time_s"), "s"),
            "—" if area is None else f"{area * 1e6:.3g} mm²",
            ratio(row.get("ratio_vs_npu", {}).get("train")),
            ratio(row.get("ratio_vs_npu", {}).get("inference")),
        )
    return t


def breakdown_table(report: dict) -> Table:
    npu = report["systems"]["NPU EqProp"]
    t = Table(title="NPU energy by term")
    for col in ("term", "per training sample", "share", "per inference", "share"):
        t.add_column(col, justify="left" if col == "term" else "right")
    tr = npu.get("train", {}).get("breakdown_j", {})
    inf = npu.get("inference", {}).get("breakdown_j", {})
    tot_tr, tot_inf = sum(tr.values()) or 1.0, sum(inf.values()) or 1.0
    for term in report["term_notes"]:
        e_tr, e_inf = tr.get(term), inf.get(term, 0.0)
        t.add_row(
            term,
            si(e_tr, "J"),
            "—" if e_tr is None else f"{100 * e_tr / tot_tr:.1f}%",
            si(e_inf, "J"),
            f"{100 * e_inf / tot_inf:.1f}%",
        )
    return t


def claims_table(report: dict) -> Table:
    cl = report["claims"]
    t = Table(
        title=(
            f"Claims check: NPU {ratio(cl['target_ratio'])} more efficient than "
            f"{report['reference_gpu']} per training sample? now {ratio(cl['current_ratio'])}; "
            f"the GPU would have to cost {ratio(cl['gpu_must_rise_by'])} more, or every NPU term "
            f"fall {ratio(cl['all_terms_must_fall_by'])}; at the physical floors the ratio is "
            f"{ratio(cl['ratio_at_floors'])}"
        )
    )
    cols = ("term", "fall alone", "J/event now", "needed", "floor", "plausible (uniform cut)?")
    for col in cols:
        t.add_column(col, justify="left" if col in ("term", cols[-1]) else "right")
    for term, r in cl["terms"].items():
        t.add_row(
            term,
            ratio(r["must_fall_by_alone"]),
            si(r["energy_per_event_j"], "J"),
            si(r["required_per_event_j"], "J"),
            si(r["floor_per_event_j"], "J"),
            r["verdict"],
        )
    return t


def compute_table(cc: dict) -> Table:
    """Throughput per training sample and per inference: one unit, and every system scaled to
    the reference GPU's area and power; the NPU's ratio over each."""
    area = cc["budget"]["area_m2"]
    t = Table(
        title=f"Compute claim: samples/s on the same work, scaled to the {cc['reference_gpu']}'s "
        f"area ({area * 1e6:.0f} mm²) or power on this work; NPU ÷ system"
    )
    cols = ("system", "per", "s/sample", "power", "area", "one unit", "equal area", "÷",
            "equal power", "÷")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("system", "per") else "right")
    for kind in ("train", "inference"):
        npu = cc["systems"]["NPU"].get(kind)
        if npu is None:
            continue
        for name, kinds in cc["systems"].items():
            s = kinds[kind]
            n = s["samples_per_s"]
            rate = npu["samples_per_s"]
            t.add_row(
                name,
                "training sample" if kind == "train" else "inference",
                si(s["time_s"], "s"),
                f"{s['power_w']:.3g} W",
                f"{s['area_m2'] * 1e6:.3g} mm²",
                f"{n['one_unit']:.3g}",
                f"{n['equal_area']:.3g}",
                ratio(rate["equal_area"] / n["equal_area"]),
                f"{n['equal_power']:.3g}",
                ratio(rate["equal_power"] / n["equal_power"]),
            )
    return t


def _value(x: float | str | None, key: str) -> str:
    if x is None:
        return "∞"
    if isinstance(x, str):
        return x
    if key.endswith(("settle_tau", "read_time", "pulse_width")):
        return si(x, "s")
    if key.endswith("adc_rate"):
        return si(x, "Hz")
    return f"{x:.4g}"


def needed_table(cc: dict, kind: str) -> Table:
    """What the target would need, each assumption alone, at equal area and equal power."""
    per = "training sample" if kind == "train" else "inference"
    r, lim = cc["ratios"][kind], cc["ratio_at_limits"][kind]
    t = Table(
        title=f"What {ratio(cc['target_ratio'])} the {cc['reference_gpu']}'s {per}s/s would "
        f"need, each assumption alone (now {ratio(r['equal_area']['vs_gpu'])} at equal area, "
        f"{ratio(r['equal_power']['vs_gpu'])} at equal power; every assumption at its limit: "
        f"{ratio(lim['equal_area'])} and {ratio(lim['equal_power'])})"
    )
    for col in ("assumption", "now", "limit", "equal area", "verdict", "equal power", "verdict"):
        t.add_column(col, justify="left" if col in ("assumption", "verdict") else "right")
    area, power = cc["needed"][kind]["equal_area"], cc["needed"][kind]["equal_power"]
    for key, a in area.items():
        p = power[key]
        t.add_row(
            a["assumption"],
            _value(a["now"], key),
            _value(a["limit"], key),
            _value(a["needed_alone"], key),
            a["verdict"],
            _value(p["needed_alone"], key),
            p["verdict"],
        )
    c = cc["copies_needed"][kind]
    t.add_row(
        "copies of the network in parallel",
        "1",
        "reticle, GPU power",
        f"{c['copies']:.4g}",
        f"{c['area_m2'] * 1e6:.3g} mm², {c['power_w']:.3g} W: {c['verdict']}",
        "",
        "",
    )
    return t


def ratios_table(report: dict) -> Table:
    """Energy per training sample of the references over the NPU's: as priced, at the
    physical floors, and at the edge (sensor inputs; power-gated, or always on)."""
    r = report["ratios"]
    t = Table(
        title=f"Training energy ratio, reference ÷ NPU ({r['update_mode']} updates); edge: "
        + r["assumptions"]["edge"]
    )
    cols = ("now", "at_floors", "edge", "edge_always_on")
    t.add_column("per training sample", justify="left")
    for col in cols:
        t.add_column(col.replace("_", " "), justify="right")
    t.add_row("NPU", *(si(r["npu_j_per_sample"][c], "J") for c in cols))
    for name, row in r["ratio"].items():
        t.add_row(f"÷ {name}", *(ratio(row[c]) for c in cols))
    return t


def render(report: dict) -> Group:
    """All tables of a report as one renderable."""
    parts = [systems_table(report), breakdown_table(report)]
    if "ratios" in report:
        parts.append(ratios_table(report))
    if "claims" in report:
        parts.append(claims_table(report))
    if "compute_claims" in report:
        cc = report["compute_claims"]
        parts.append(compute_table(cc))
        for kind in ("train", "inference"):
            if kind in cc["needed"]:
                parts.append(needed_table(cc, kind))
        parts.extend(f"{k}: {v}" for k, v in cc["verdict"].items())
    return Group(*parts)


def print_report(report: dict, console: Console | None = None) -> None:
    (console or Console()).print(render(report))
