"""Claims check: what would have to be true for the NPU to be R× more energy-efficient.

For the NPU's energy per training sample E = Σ_t e_t and the GPU's G, the NPU must spend at most
G/R. Per term t: alone, it must fall by e_t / (G/R − (E − e_t)) (∞ when G/R ≤ E − e_t: removing
it is not enough); with every term falling by the same factor E/(G/R), its energy per event
must reach (e_t / n_t)·(G/R)/E, which is compared with a stated physical floor.
"""

from __future__ import annotations

import math

from npusim.chip import ChipSpec
from npusim.cost.constants import K_B, CostError, PhysicalLimits, adc_bits, cost_spec, dac_bits

LANDAUER = "Landauer, IBM J. Res. Dev. 1961: kT ln 2 per irreversible bit operation"
THERMAL_MAC = (
    "thermal-noise (kT/C) limit of an analog MAC or conversion, E >= kT*SNR at the read-out "
    "SNR (Murmann, 'Mixed-signal computing for deep neural network inference', IEEE TVLSI 2021)"
)
ADC_BEST = "best published ADCs, Murmann ADC survey 1997-2024 (Walden and Schreier FoM envelopes)"

# Which ledger event each energy term is paid per.
EVENT_OF_TERM: dict[str, str | None] = {
    "array": "macs",
    "read": "device_reads",
    "neurons": "node_sweeps",
    "dac": "dac",
    "adc": "adc",
    "programming": "pulses",
    "digital": "digital_ops",
    "fp32": "fp32_ops",
    "sram": "bytes_tile",
    "dram": "bytes_mem",
    "static": None,
    "pulse_trains": "pulse_slots",
    "sample_hold": "sample_hold",
}


def snr(bits: int) -> float:
    """Ideal quantisation SNR (power ratio) of a ``bits``-bit signal: 6.02·B + 1.76 dB."""
    return 10 ** ((6.02 * bits + 1.76) / 10)


def floors(
    spec: ChipSpec | str | None = None, limits: PhysicalLimits | None = None
) -> dict[str, tuple[float, str]]:
    """Physical floor (J per event) of each term of a chip (None: ``ideal``), with its source."""
    spec, lim = cost_spec(spec), limits or PhysicalLimits()
    a_bits, d_bits = adc_bits(spec), dac_bits(spec)
    kt = K_B * lim.temperature_k
    adc_walden = lim.best_walden_fom_j * 2**a_bits
    sndr_db = 6.02 * a_bits + 1.76
    adc_schreier = 0.5 * 10 ** ((sndr_db - lim.best_schreier_fom_db) / 10)
    return {
        "array": (kt * snr(a_bits), THERMAL_MAC),
        "read": (kt * snr(a_bits), THERMAL_MAC),
        "neurons": (kt * snr(a_bits), THERMAL_MAC),
        "dac": (kt * snr(d_bits), THERMAL_MAC),
        "adc": (max(adc_walden, adc_schreier), ADC_BEST),
        "programming": (kt * math.log(2), LANDAUER + " (one bit of state per pulse)"),
        "digital": (kt * math.log(2), LANDAUER),
        "fp32": (32 * kt * math.log(2), LANDAUER + " (32 result bits per operation)"),
        "sram": (8 * kt * math.log(2), LANDAUER + " (8 bits per byte)"),
        "dram": (8 * kt * math.log(2), LANDAUER + " (8 bits per byte)"),
        "static": (0.0, "leakage can be power-gated to zero"),
        "pulse_trains": (kt * math.log(2), LANDAUER + " (one bit, pulse or none, per slot)"),
        "sample_hold": (kt * snr(a_bits), THERMAL_MAC + " (kT/C of the held value)"),
    }


def claims_check(
    npu_terms_j: dict[str, float],
    npu_events: dict[str, float],
    gpu_j: float,
    target_ratio: float,
    spec: ChipSpec | str | None = None,
    limits: PhysicalLimits | None = None,
) -> dict:
    """Per term: factor it must fall by alone, energy per event needed under a uniform
    reduction, the physical floor per event, and a verdict.

    ``npu_terms_j``: NPU energy per training sample by term (J); ``npu_events``: ledger events
    per training sample; ``gpu_j``: the GPU's energy per training sample (J); ``spec``: the
    chip (its converter resolutions set the floors; None: ``ideal``).
    """
    if not (target_ratio > 0 and math.isfinite(target_ratio)):
        raise CostError(f"the target ratio must be a finite number > 0, got {target_ratio}")
    total = sum(npu_terms_j.values())
    budget = gpu_j / target_ratio
    fl = floors(spec, limits)
    uniform = total / budget if budget > 0 else math.inf
    rows = {}
    floor_total = 0.0
    for term, e in npu_terms_j.items():
        ev_name = EVENT_OF_TERM.get(term)
        n_ev = npu_events.get(ev_name, 0.0) if ev_name else 0.0
        floor_j, floor_src = fl.get(term, (0.0, "none stated"))
        floor_total += floor_j * n_ev
        rest = total - e
        if e <= 0:
            alone = 1.0 if rest <= budget else math.inf
        elif rest >= budget:
            alone = math.inf
        else:
            alone = e / (budget - rest)
        per_event = e / n_ev if n_ev else None
        required = per_event / uniform if per_event is not None and uniform > 0 else None
        if uniform <= 1:
            verdict = "met already"
        elif required is None:
            verdict = "ok (no floor)"
        elif required >= floor_j:
            verdict = f"ok: {required / floor_j:.3g}x above floor" if floor_j else "ok"
        else:
            verdict = f"NO: {floor_j / required:.3g}x below floor"
        rows[term] = {
            "energy_j": e,
            "must_fall_by_alone": alone,
            "events": n_ev,
            "energy_per_event_j": per_event,
            "required_per_event_j": required,
            "floor_per_event_j": floor_j,
            "floor_source": floor_src,
            "verdict": verdict,
        }
    ratio = gpu_j / total if total else math.inf
    return {
        "target_ratio": target_ratio,
        "current_ratio": ratio,
        "npu_j_per_sample": total,
        "gpu_j_per_sample": gpu_j,
        "budget_j_per_sample": budget,
        "all_terms_must_fall_by": uniform,
        "gpu_must_rise_by": target_ratio / ratio if ratio else math.inf,
        "npu_floor_j_per_sample": floor_total,
        "ratio_at_floors": gpu_j / floor_total if floor_total else math.inf,
        "target_physically_possible": floor_total <= budget,
        "terms": rows,
    }


# Edge assumptions (stated in the report, not chip constants): a camera-rate sensor
EDGE_SAMPLE_PERIOD_S = 1 / 30  # s between samples of a 30 frame/s image sensor (common video rate)


def edge_terms(
    npu_terms_j: dict[str, float],
    static_w: float,
    *,
    sensor_inputs: bool = True,
    power_gated: bool = True,
    sample_period_s: float = EDGE_SAMPLE_PERIOD_S,
) -> dict[str, float]:
    """Energy per training sample by term (J) at the edge. ``sensor_inputs``: inputs reach the
    DACs straight from a sensor, so no DRAM fetch (``dram`` → 0). ``power_gated``: the chip
    is powered only while it works on a sample (the cost model's ``static`` term, leakage over
    the busy time, stays); otherwise it leaks ``static_w`` (W, arrays in use × static power)
    over the whole ``sample_period_s`` (s)."""
    out = dict(npu_terms_j)
    if sensor_inputs and "dram" in out:
        out["dram"] = 0.0
    if not power_gated:
        out["static"] = max(out.get("static", 0.0), static_w * sample_period_s)
    return out


def ratio_columns(
    npu_terms_j: dict[str, float],
    npu_events: dict[str, float],
    references_j: dict[str, float],
    static_w: float,
    spec: ChipSpec | str | None = None,
    limits: PhysicalLimits | None = None,
) -> dict:
    """How many times less energy per training sample the NPU spends than each reference
    (``references_j``: name → J per training sample), in three columns: ``now`` (as priced),
    ``at_floors`` (every event at its physical floor, :func:`floors`) and ``edge`` (sensor
    inputs and power gating, :func:`edge_terms`); ``edge_always_on`` as ``edge`` without power
    gating at :data:`EDGE_SAMPLE_PERIOD_S`. Also the NPU's J per sample in each column."""
    fl = floors(spec, limits)
    floor_j = sum(
        fl[t][0] * npu_events.get(EVENT_OF_TERM[t], 0.0)
        for t in npu_terms_j
        if t in fl and EVENT_OF_TERM.get(t)
    )
    npu = {
        "now": sum(npu_terms_j.values()),
        "at_floors": floor_j,
        "edge": sum(edge_terms(npu_terms_j, static_w).values()),
        "edge_always_on": sum(edge_terms(npu_terms_j, static_w, power_gated=False).values()),
    }
    rows = {
        name: {col: (ref / e if e > 0 else math.inf) for col, e in npu.items()}
        for name, ref in references_j.items()
    }
    return {
        "npu_j_per_sample": npu,
        "ratio": rows,
        "assumptions": {
            "edge": "inputs straight from a sensor into the DACs (no DRAM fetch); the chip "
            "power-gated between samples (leakage only over its busy time)",
            "edge_always_on": f"as edge, but leaking between samples at one sample every "
            f"{EDGE_SAMPLE_PERIOD_S * 1e3:.1f} ms (a 30 frame/s sensor)",
            "at_floors": "every counted event at its physical floor (see floors)",
        },
    }
