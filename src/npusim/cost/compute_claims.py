"""The compute claim checked: is the chip R× faster than a GPU on the same work?

Every system does the same work (the run's network, per training sample and per inference):
the NPU on the schedule of :mod:`npusim.cost.latency` (one copy of the network with its
periphery is the *unit*: arrays, converters, amplifiers and one digital periphery), the GPU and
the phone NPU as priced by :mod:`npusim.cost.baselines`. Throughput is samples per second of one
unit, 1 / ``time_s``; effective operations per second are the FLOPs the same work costs a digital
machine (:func:`~npusim.cost.baselines.training_flops`, ``forward_flops``) × throughput.

Two fair comparisons scale every system to the GPU's budget by copying its unit (throughput
adds up; copies are fractional):

* **equal area**: ``copies = A_gpu / A_unit``, throughput ``A_gpu / (A_unit · T)``;
* **equal power**: ``copies = P_gpu / P_unit`` with ``P = E / T`` on this work, throughput
  ``P_gpu / E``: at equal power the compute ratio *is* the energy ratio ``E_gpu / E_npu``.

What R× would need: each timing assumption of the chip is moved alone (others as they are) to
the value that gives R× at each basis, solved by bisection through the latency and energy models
(``per_sample`` recomputed with the changed ``ChipSpec``), and compared with a physical or
published limit (:class:`ComputeLimits`), as the energy claims check (:mod:`.claims`) does per
term. "∞" means no value within the field's allowed range reaches R× alone. Copies of the
network in parallel are solved in closed form: ``R · T_npu / T_gpu`` copies, whose area and
power are set against a single die's reticle limit and the GPU's power.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from npusim.chip import ChipSpec
from npusim.cost.baselines import (
    H100_SXM,
    PHONE_NPU,
    GpuPreset,
    PhoneNpuPreset,
    forward_flops,
    logical_arrays,
    training_flops,
)
from npusim.cost.compute_limits import PUBLISHED, ComputeLimits
from npusim.cost.constants import CostError, cost_spec
from npusim.cost.npu import npu_area, per_sample
from npusim.runtime.ledger import Ledger

KINDS: tuple[str, ...] = ("train", "inference")
BASES: tuple[str, ...] = ("equal_area", "equal_power")


@dataclass(frozen=True)
class Assumption:
    """A ``ChipSpec`` field the check moves: its key, whether larger is faster, and its limit
    (a function of the chip and the limits)."""

    label: str
    key: str
    larger_is_faster: bool
    limit: Callable[[ChipSpec, ComputeLimits], float]
    limit_source: Callable[[ComputeLimits], str] = field(default=lambda lim: "")
    integer: bool = False


def _src(name: str) -> Callable[[ComputeLimits], str]:
    return lambda lim: lim.table()[name]["source"]  # type: ignore[return-value]


ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption(
        "settle time per sweep (s)",
        "timing.settle_tau",
        False,
        lambda s, lim: lim.settle_s,
        _src("settle_s"),
    ),
    Assumption(
        "ADC conversion rate (Hz)",
        "timing.adc_rate",
        True,
        lambda s, lim: lim.adc_rate_hz,
        _src("adc_rate_hz"),
    ),
    Assumption(
        "read cycle (s)",
        "timing.read_time",
        False,
        lambda s, lim: lim.read_time_s,
        _src("read_time_s"),
    ),
    Assumption(
        "digital lanes (op per clock)",
        "timing.digital_lanes",
        True,
        lambda s, lim: lim.digital_ops_per_s_per_m2 * s.energy.digital_area / s.timing.clock,
        lambda lim: (
            "digital_area x "
            + str(lim.table()["digital_ops_per_s_per_m2"]["source"])
            + ", at the chip's clock"
        ),
        integer=True,
    ),
    Assumption(
        "programming pulse width (s)",
        "timing.pulse_width",
        False,
        lambda s, lim: lim.pulse_width_s,
        _src("pulse_width_s"),
    ),
    Assumption(
        "rows programmed at once",
        "array.rows_per_write",
        True,
        lambda s, lim: float(s.array.rows),
        lambda lim: (
            "every row of an array at once: the fully parallel update of Gokmen & "
            "Vlasov, Front. Neurosci. 10:333 (2016)"
        ),
        integer=True,
    ),
)


def _field_range(spec: ChipSpec, key: str) -> tuple[float, float]:
    section, name = key.split(".")
    meta = {f.name: f.metadata for f in fields(getattr(spec, section))}
    return meta[name]["range"]


def _field_value(spec: ChipSpec, key: str) -> float:
    section, name = key.split(".")
    return float(getattr(getattr(spec, section), name))


def _without_simulated_settle(ledger: Ledger) -> Ledger:
    """A copy whose settle steps all last ``timing.settle_tau`` (simulated settle time removed),
    so the settle assumption can be moved."""
    d = ledger.to_dict()
    for ph in d["phases"].values():
        ph["settle_s"] = 0.0
    return Ledger.from_dict(d)


@dataclass(frozen=True)
class _Npu:
    """The NPU unit's figures per sample for one kind of work: J, s, m²."""

    energy_j: float
    time_s: float
    latency_s: float
    area_m2: float


def _npu(ledger: Ledger, spec: ChipSpec, kind: str) -> _Npu:
    d = per_sample(ledger, spec)[kind]
    return _Npu(
        energy_j=sum(d["energy_j"].values()),
        time_s=d["time_s"],
        latency_s=d["latency_s"],
        area_m2=sum(npu_area(ledger.array_shapes(), spec).values()),
    )


def scaled_throughput(time_s: float, energy_j: float, area_m2: float, budget: dict) -> dict:
    """Samples/s of one unit and of copies filling ``budget`` (``area_m2``, ``power_w``)."""
    power = energy_j / time_s
    return {
        "one_unit": 1.0 / time_s,
        "equal_area": budget["area_m2"] / (area_m2 * time_s),
        "equal_power": budget["power_w"] / energy_j,
        "copies_equal_area": budget["area_m2"] / area_m2,
        "copies_equal_power": budget["power_w"] / power,
    }


def _ratio(npu: _Npu, gpu_time_s: float, budget: dict, basis: str) -> float:
    """NPU throughput over the GPU's (one GPU = the budget) at ``basis``."""
    return scaled_throughput(npu.time_s, npu.energy_j, npu.area_m2, budget)[basis] * gpu_time_s


def _solve(
    ratio_of: Callable[[float], float], now: float, bound: float, target: float, integer: bool
) -> tuple[float | None, float]:
    """The value between ``now`` and ``bound`` where ``ratio_of`` first reaches ``target`` (None
    when even ``bound`` does not), and the ratio at ``bound``. Bisection in log space."""
    at_bound = ratio_of(bound)
    if ratio_of(now) >= target:
        return now, at_bound
    if at_bound < target:
        return None, at_bound
    lo, hi = now, bound  # ratio(lo) < target <= ratio(hi)
    for _ in range(200):
        if integer and abs(hi - lo) <= 1:
            break
        mid = math.sqrt(lo * hi) if not integer else float(round(math.sqrt(lo * hi)))
        if integer and mid in (lo, hi):
            mid = float(math.floor((lo + hi) / 2)) if mid == hi else float(math.ceil((lo + hi) / 2))
        if ratio_of(mid) >= target:
            hi = mid
        else:
            lo = mid
        if not integer and abs(math.log(hi / lo)) < 1e-9:
            break
    return hi, at_bound


def _verdict(needed: float | None, limit: float, larger_is_faster: bool, met: bool) -> str:
    if met:
        return "met already"
    if needed is None:
        return "NO: not enough alone (∞)"
    ok = needed <= limit if larger_is_faster else needed >= limit
    gap = (limit / needed) if larger_is_faster else (needed / limit)
    return f"ok: {gap:.3g}x inside the limit" if ok else f"NO: {1 / gap:.3g}x beyond the limit"


def compute_claims(
    ledger: Ledger,
    spec: ChipSpec | str | None = None,
    *,
    target_ratio: float = 100.0,
    batch: int = 1,
    gpu: GpuPreset = H100_SXM,
    phone: PhoneNpuPreset = PHONE_NPU,
    limits: ComputeLimits | None = None,
) -> dict:
    """Throughput of the NPU, ``gpu`` and ``phone`` on the ledger's work, per training sample and
    per inference, one unit each and scaled to the GPU's area and power; the ratios; and what
    ``target_ratio``× over the GPU would need (see the module docstring). ``batch``: the GPU's
    training batch (as in the report)."""
    if not (target_ratio > 0 and math.isfinite(target_ratio)):
        raise CostError(f"the target ratio must be a finite number > 0, got {target_ratio}")
    spec, lim = cost_spec(spec), limits or ComputeLimits()
    logical = logical_arrays(ledger)
    kinds = [k for k in KINDS if k != "train" or ledger.training_samples]
    flops = {"train": training_flops(logical), "inference": forward_flops(logical)}
    gpu_cost = gpu.cost(logical, batch)
    phone_cost = phone.cost(logical, spec.energy.dram_per_byte)
    phone_area = phone.area_m2
    solve_ledger = _without_simulated_settle(ledger) if ledger.count("settle_s") else ledger
    out: dict = {
        "target_ratio": target_ratio,
        "reference_gpu": gpu.name,
        "systems": {},
        "ratios": {},
        "needed": {},
        "copies_needed": {},
        "ratio_at_limits": {},
        "verdict": {},
        "published": [dict(p) for p in PUBLISHED],
        "limits": lim.table(),
        "notes": {
            "unit": "NPU: one copy of the network on the arrays it uses, with their converters, "
            "amplifiers and one digital periphery (area = its npu_area); copies are fractional",
            "equal_power": "at equal power the throughput ratio is the energy ratio E_gpu/E_npu",
            "settle": "simulated settle time replaced by settle_tau for the solve"
            if solve_ledger is not ledger
            else "settle_tau",
        },
    }
    for kind in kinds:
        g = gpu_cost[kind]
        g_e, g_t = sum(g["energy_j"].values()), g["time_s"]
        budget = {"area_m2": gpu.die_area_m2, "power_w": g_e / g_t}
        npu = _npu(ledger, spec, kind)
        p = phone_cost[kind]
        p_e, p_t = sum(p["energy_j"].values()), p["time_s"]
        rows = {
            "NPU": (npu.energy_j, npu.time_s, npu.area_m2, npu.latency_s),
            gpu.name: (g_e, g_t, gpu.die_area_m2, g_t),
            phone.name: (p_e, p_t, phone_area, p_t),
        }
        systems = {}
        for name, (e, t, a, lat) in rows.items():
            s = scaled_throughput(t, e, a, budget)
            systems[name] = {
                "energy_j": e,
                "time_s": t,
                "latency_s": lat,
                "area_m2": a,
                "power_w": e / t,
                "ops": flops[kind],
                "samples_per_s": s,
                "ops_per_s": {b: v * flops[kind] for b, v in s.items() if "copies" not in b},
            }
        for name in systems:
            out["systems"].setdefault(name, {})[kind] = systems[name]
        npu_s = systems["NPU"]["samples_per_s"]
        out["ratios"][kind] = {
            basis: {
                "vs_gpu": npu_s[basis] / systems[gpu.name]["samples_per_s"][basis],
                "vs_phone": npu_s[basis] / systems[phone.name]["samples_per_s"][basis],
            }
            for basis in ("one_unit", *BASES)
        }
        out["budget"] = {"area_m2": gpu.die_area_m2}
        out.setdefault("budget_power_w", {})[kind] = budget["power_w"]
        base_npu = _npu(solve_ledger, spec, kind)
        needed: dict = {}
        for basis in BASES:
            rows_n = {}
            for a in ASSUMPTIONS:
                now = _field_value(spec, a.key)
                lo, hi = _field_range(spec, a.key)
                bound = hi if a.larger_is_faster else lo
                bound = min(bound, 1e12) if a.larger_is_faster else bound

                def ratio_of(
                    x: float,
                    a: Assumption = a,
                    basis: str = basis,
                    kind: str = kind,
                    g_t: float = g_t,
                    budget: dict = budget,
                ) -> float:
                    v = int(x) if a.integer else x
                    npu_x = _npu(solve_ledger, spec.replace(**{a.key: v}), kind)
                    return _ratio(npu_x, g_t, budget, basis)

                need, at_bound = _solve(ratio_of, now, bound, target_ratio, a.integer)
                limit = a.limit(spec, lim)
                met = _ratio(base_npu, g_t, budget, basis) >= target_ratio
                rows_n[a.key] = {
                    "assumption": a.label,
                    "now": now,
                    "needed_alone": need,
                    "limit": limit,
                    "limit_source": a.limit_source(lim),
                    "ratio_at_field_bound": at_bound,
                    "verdict": _verdict(need, limit, a.larger_is_faster, met),
                }
            needed[basis] = rows_n
            at_lim = spec.replace(
                **{
                    a.key: (int(a.limit(spec, lim)) if a.integer else a.limit(spec, lim))
                    for a in ASSUMPTIONS
                }
            )
            out["ratio_at_limits"].setdefault(kind, {})[basis] = _ratio(
                _npu(solve_ledger, at_lim, kind), g_t, budget, basis
            )
        out["needed"][kind] = needed
        copies = target_ratio * npu.time_s / g_t
        out["copies_needed"][kind] = {
            "copies": copies,
            "area_m2": copies * npu.area_m2,
            "power_w": copies * npu.energy_j / npu.time_s,
            "area_limit_m2": lim.reticle_m2,
            "power_limit_w": budget["power_w"],
            "verdict": "ok"
            if copies * npu.area_m2 <= lim.reticle_m2
            and copies * npu.energy_j / npu.time_s <= budget["power_w"]
            else "NO: "
            + ", ".join(
                w
                for w, bad in (
                    (
                        f"{copies * npu.area_m2 / lim.reticle_m2:.3g}x the reticle area",
                        copies * npu.area_m2 > lim.reticle_m2,
                    ),
                    (
                        f"{copies * npu.energy_j / npu.time_s / budget['power_w']:.3g}x the "
                        "GPU's power",
                        copies * npu.energy_j / npu.time_s > budget["power_w"],
                    ),
                )
                if bad
            ),
        }
        out["verdict"][kind] = _statement(out, kind, target_ratio, gpu.name)
    return out


def _statement(out: dict, kind: str, target: float, gpu_name: str) -> str:
    """One plain sentence per basis: does the claim hold, and what fails."""
    what = "training samples" if kind == "train" else "inferences"
    parts = []
    for basis in BASES:
        r = out["ratios"][kind][basis]["vs_gpu"]
        rows = out["needed"][kind][basis]
        ok = [v["assumption"] for v in rows.values() if v["verdict"].startswith("ok")]
        at_lim = out["ratio_at_limits"][kind][basis]
        name = basis.replace("_", " ")
        if r >= target:
            parts.append(f"at {name} the chip does {r:.3g}x the {what}/s of the {gpu_name}: holds")
            continue
        how = (
            f"only {', '.join(ok)} could reach it alone within its limit"
            if ok
            else "no single assumption reaches it within its limit"
        )
        verdict = "holds at the limits" if at_lim >= target else "fails even at the limits"
        parts.append(
            f"at {name} {r:.3g}x, not {target:g}x: {how}; with every assumption at its limit "
            f"{at_lim:.3g}x ({verdict})"
        )
    return "; ".join(parts)
