"""Build, save and show the energy/latency/area report of a run (``report.json``, table, PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from npusim.chip import ChipSpec
from npusim.core.errors import NpusimError
from npusim.core.phases import TRAIN_PHASES, Phase
from npusim.cost.baselines import GPUS, PHONE_NPU, GpuPreset, PhoneNpuPreset, logical_arrays
from npusim.cost.claims import EVENT_OF_TERM, claims_check, ratio_columns
from npusim.cost.compute_claims import compute_claims
from npusim.cost.constants import PhysicalLimits, constants_table, cost_spec
from npusim.cost.npu import arrays_in_use, npu_area, per_sample
from npusim.runtime.ledger import Ledger, LedgerError

NPU = "NPU EqProp"
TERM_NOTES: dict[str, str] = {
    "array": "resistive arrays conducting while the circuit settles (Σ G·ΔV² × t, or per MAC)",
    "read": "every cell conducting through one read-out integration while the ADCs sample",
    "neurons": "node amplifiers biased during each settle step",
    "dac": "input (and output-nudge) digital-to-analog conversions",
    "adc": "equilibrium read-out conversions (both phases for EqProp)",
    "programming": "memristor programming pulses applying the updates (SET and RESET)",
    "digital": "8-bit periphery arithmetic: EqProp outer products, argmax, bias increments",
    "fp32": "fp32 periphery arithmetic: nudges, the update's scale-and-quantise",
    "sram": "converted values moved between arrays and tile buffers",
    "dram": "inputs fetched from off-chip memory",
    "static": "leakage of arrays and periphery over the run time",
    "pulse_trains": "row and column lines driven in the slots of in-array update pulse trains",
    "sample_hold": "analog values held for an in-array update (instead of ADC reads)",
}


def _finite(x):
    """JSON-safe: non-finite floats become strings ("inf"), recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def build_report(
    ledger: Ledger,
    spec: ChipSpec | str | None = None,
    *,
    gpus: list[GpuPreset] | None = None,
    phone: PhoneNpuPreset = PHONE_NPU,
    target_ratio: float | None = None,
    target_compute: float | None = None,
    measured_gpu: dict | None = None,
    limits: PhysicalLimits | None = None,
) -> dict:
    """Everything the report shows, as plain data (J, s, m²), the NPU priced by ``spec`` (a
    ``ChipSpec``, preset name or TOML path; None: the ``ideal`` preset). The first GPU is the
    reference for ratios and for the claims check. ``measured_gpu``: ``{"name", "energy_j",
    "time_s"}`` per training sample from :func:`npusim.cost.measure_backprop_training`.
    ``target_compute``: adds ``compute_claims`` (:func:`npusim.cost.compute_claims.
    compute_claims` against the first GPU and ``phone``)."""
    c = cost_spec(spec)
    gpus = gpus or list(GPUS.values())
    logical = ledger.logical_sizes or ledger.sizes
    shapes, baseline = ledger.array_shapes(), logical_arrays(ledger)
    updates = ledger.count("updates", Phase.UPDATE)
    batch = max(1, round(ledger.training_samples / updates)) if updates else 1
    npu = per_sample(ledger, c)
    area = npu_area(shapes, c)
    systems: dict[str, dict] = {}

    def entry(d: dict, area_m2: float | None) -> dict:
        out = {"area_m2": area_m2}
        for kind in ("train", "inference"):
            if kind in d:
                out[kind] = {
                    "energy_j": sum(d[kind]["energy_j"].values()),
                    "breakdown_j": d[kind]["energy_j"],
                    "time_s": d[kind]["time_s"],
                }
        return out

    systems[NPU] = entry(npu, sum(area.values()))
    for g in gpus:
        systems[f"{g.name} BP"] = entry(g.cost(baseline, batch), g.die_area_m2)
    systems[f"{phone.name} BP"] = entry(phone.cost(baseline, c.energy.dram_per_byte), phone.area_m2)
    if measured_gpu is not None:
        systems[f"{measured_gpu['name']} BP measured"] = {
            "area_m2": None,
            "train": {
                "energy_j": measured_gpu["energy_j"],
                "breakdown_j": {"measured (NVML)": measured_gpu["energy_j"]},
                "time_s": measured_gpu["time_s"],
            },
        }
    ref_name = f"{gpus[0].name} BP"
    npu_row = systems[NPU]
    for row in systems.values():
        row["ratio_vs_npu"] = {
            kind: row[kind]["energy_j"] / npu_row[kind]["energy_j"]
            for kind in ("train", "inference")
            if kind in row and kind in npu_row and npu_row[kind]["energy_j"] > 0
        }
    n_train = ledger.training_samples
    events = {  # per training sample, inference excluded
        ev: sum(ledger.count(ev, p) for p in TRAIN_PHASES) / n_train if n_train else 0.0
        for ev in sorted({e for e in EVENT_OF_TERM.values() if e})
    }
    report = {
        "network": {
            "physical_sizes": ledger.sizes,
            "logical_sizes": logical,
            "training_samples": n_train,
            "inference_samples": ledger.inference_samples,
            "batch": batch,
            "mean_sweeps": {p: ledger.mean_sweeps(p) for p in ledger.phases if p != Phase.UPDATE},
            "arrays": {"in_use": arrays_in_use(shapes, c), "on_chip": c.array.tiles},
            "array_shapes": [f"{a.rows}×{a.cols}×{a.uses}" for a in shapes],  # rows×cols×uses
        },
        "chip_spec": c.name,
        "systems": systems,
        "reference_gpu": ref_name,
        "npu_area_breakdown_m2": area,
        "npu_events_per_training_sample": events,
        "ledger_totals": ledger.totals(),
        "term_notes": TERM_NOTES,
        "constants": constants_table(c, limits),
        "baseline_sources": {
            **{g.name: {"precision": g.precision, **g.sources} for g in gpus},
            phone.name: phone.sources,
        },
    }
    if "train" in npu_row:  # the NPU as priced, at the physical floors and at the edge
        phone_name = f"{phone.name} BP"
        refs = {n: systems[n]["train"]["energy_j"] for n in (ref_name, phone_name)}
        static_w = c.energy.static_power * arrays_in_use(shapes, c)
        report["ratios"] = {
            "update_mode": ledger.update_mode,
            **ratio_columns(npu_row["train"]["breakdown_j"], events, refs, static_w, c, limits),
        }
    if target_ratio is not None and "train" in npu_row:
        report["claims"] = claims_check(
            npu_row["train"]["breakdown_j"],
            events,
            systems[ref_name]["train"]["energy_j"],
            float(target_ratio),
            c,
            limits,
        )
    if target_compute is not None:
        report["compute_claims"] = compute_claims(
            ledger, c, target_ratio=float(target_compute), batch=batch, gpu=gpus[0], phone=phone
        )
    return report


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``energy_breakdown.png`` (and ``compute_claims.png`` with a
    compute claims check) into ``out_dir``; return the paths."""
    from npusim.report.plot import breakdown_png, compute_png
    from npusim.runtime.io import atomic_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "png": out / "energy_breakdown.png"}
    atomic_json(_finite(report), paths["json"])
    breakdown_png(report, paths["png"])
    if "compute_claims" in report:
        paths["compute_png"] = compute_png(report["compute_claims"], out / "compute_claims.png")
    return paths


class ReportError(NpusimError, ValueError):
    """A run folder cannot be reported on; the message names the file and what to do."""


def load_run_ledger(run_dir: str | Path) -> tuple[Ledger, dict]:
    """The ledger saved in a run folder's ``results.json`` (key ``ledger``) and the results.

    A missing, unreadable or malformed file raises :class:`ReportError` naming it."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ReportError(f"{path} not found: pass the folder of a finished `npusim train`")
    try:
        results = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, dict) or "ledger" not in results:
        raise ReportError(f"{path} has no 'ledger' entry; re-run training with this npusim")
    try:
        ledger = Ledger.from_dict(results["ledger"])
    except LedgerError as err:
        raise ReportError(f"{path}: ledger {err}") from None
    if not ledger.sizes:
        raise ReportError(f"{path}: the ledger counted nothing; train for at least one epoch")
    return ledger, results
