"""Energy (J), time (s) and area (m²) of the analog NPU: a pure function of (ledger, constants).

Terms of the energy breakdown:

* ``array``: the resistive arrays conducting while the circuit settles. If the simulation
  recorded its steady-state dissipated power (Σ G·ΔV², W) this is power × settle time;
  otherwise analog MACs × V_r²·G_mid·t_sweep.
* ``neurons``: node amplifiers biased during each settle step (node-sweeps × t × P_amp).
* ``dac`` / ``adc``: conversions × energy per conversion.
* ``programming``: pulses × V_w²·G_mid·t_pulse.
* ``digital``: periphery MACs/ops (EqProp update, nudges, argmax).
* ``sram`` / ``dram``: bytes moved on chip between arrays and tile buffers / fetched off chip.
* ``static``: leakage per array (with its periphery) × arrays × run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from npusim.core.phases import TRAIN_PHASES
from npusim.cost.constants import CostConstants
from npusim.runtime.ledger import Ledger

TERMS: tuple[str, ...] = (
    "array",
    "neurons",
    "dac",
    "adc",
    "programming",
    "digital",
    "sram",
    "dram",
    "static",
)


@dataclass
class NpuCost:
    """Energy (J) per phase and term, time (s) per phase, area (m²) per block."""

    energy_j: dict[str, dict[str, float]]
    time_s: dict[str, float]
    area_m2: dict[str, float]
    events: dict[str, dict[str, float]]

    def phase_energy(self, phases) -> dict[str, float]:
        """Energy (J) per term summed over ``phases``."""
        out = dict.fromkeys(TERMS, 0.0)
        for p in phases:
            for t, e in self.energy_j.get(p, {}).items():
                out[t] += e
        return out

    @property
    def total_energy_j(self) -> float:
        return sum(sum(d.values()) for d in self.energy_j.values())

    @property
    def total_area_m2(self) -> float:
        return sum(self.area_m2.values())


def tiles(sizes: list[int], c: CostConstants) -> list[tuple[int, int]]:
    """(row tiles, column tiles) of each weight matrix on ``array_rows × array_cols`` arrays."""
    return [
        (math.ceil(a / c.array_rows), math.ceil(b / c.array_cols))
        for a, b in zip(sizes[:-1], sizes[1:], strict=False)
    ]


def npu_area(sizes: list[int], c: CostConstants) -> dict[str, float]:
    """Area (m²) per block for a chip holding the whole network at once."""
    tl = tiles(sizes, c)
    arrays = sum(r * q for r, q in tl)
    adcs = arrays * math.ceil(c.array_cols / c.cols_per_adc)
    return {
        "arrays": arrays * c.array_area_m2,
        "adc": adcs * c.adc_area_m2,
        "dac": arrays * c.array_rows * c.dac_area_m2,
        "neurons": sum(sizes[1:]) * c.amp_area_m2,
        "digital": c.digital_area_m2,
    }


def _sweep_time(ledger: Ledger, phase: str, c: CostConstants) -> float:
    """Time (s) of one settle step in ``phase``: simulated if recorded, else ``t_sweep_s``."""
    settle, sweeps = ledger.count("settle_s", phase), ledger.count("sweeps", phase)
    return settle / sweeps if settle > 0 and sweeps else c.t_sweep_s


def phase_time(ledger: Ledger, phase: str, c: CostConstants) -> float:
    """Wall time (s) of a phase: settling + ADC read-out + programming + digital periphery.

    Samples run one after another on one copy of the network; arrays (layers) work in
    parallel, each column tile with its own ADCs, each row tile writing one row at a time.
    """
    n = ledger.sizes
    tl = tiles(n, c)
    t = ledger.count("sweeps", phase) * _sweep_time(ledger, phase, c)
    adc_t, prog_t = 0.0, 0.0
    for k, (rt, ct) in enumerate(tl):
        adcs = ct * math.ceil(c.array_cols / c.cols_per_adc)
        adc_t = max(adc_t, ledger.count("adc", phase, k) / (adcs * c.adc_rate_hz))
        prog_t = max(prog_t, ledger.count("pulses", phase, k) * c.write_pulse_s / (rt * n[k + 1]))
    return t + adc_t + prog_t + ledger.count("digital_ops", phase) / c.digital_macs_per_s


def npu_cost(ledger: Ledger, c: CostConstants | None = None) -> NpuCost:
    """Energy, time and area of everything the ledger counted."""
    c = c or CostConstants()
    if not ledger.sizes:
        raise ValueError("the ledger is empty: count some relaxations first")
    area = npu_area(ledger.sizes, c)
    static_w = c.static_w_per_array * sum(r * q for r, q in tiles(ledger.sizes, c))
    energy, time, events = {}, {}, ledger.by_phase()
    for p in ledger.phases:
        ev = events[p]
        t_sweep = _sweep_time(ledger, p, c)
        # measured power of this phase; inference is a free relaxation of the same circuit
        src = ev if ev["power_measured"] > 0 else events.get("free") if p == "inference" else None
        if src is not None and src["power_measured"] > 0:  # mean power × all settle time
            array_j = src["power_w_samples"] / src["power_measured"] * ev["sweeps"] * t_sweep
        else:
            array_j = ev["macs"] * c.analog_mac_j
        time[p] = phase_time(ledger, p, c)
        energy[p] = {
            "array": array_j,
            "neurons": ev["node_sweeps"] * t_sweep * c.amp_power_w,
            "dac": ev["dac"] * c.dac_j,
            "adc": ev["adc"] * c.adc_j,
            "programming": ev["pulses"] * c.pulse_j,
            "digital": ev["digital_ops"] * c.digital_op_j,
            "sram": ev["bytes_tile"] * c.sram_byte_j,
            "dram": ev["bytes_mem"] * c.dram_byte_j,
            "static": static_w * time[p],
        }
    return NpuCost(energy_j=energy, time_s=time, area_m2=area, events=events)


def inference_ledger(ledger: Ledger) -> Ledger:
    """The ledger's own inference counts, or one sample relaxed like a free phase if none."""
    if ledger.inference_samples:
        out = Ledger(word_bytes=ledger.word_bytes, convert_every_sweep=ledger.convert_every_sweep)
        out.sizes = list(ledger.sizes)
        out.layers = {"inference": ledger.layers["inference"]}
        out.phases = {"inference": ledger.phases["inference"]}
        return out
    out = Ledger(word_bytes=ledger.word_bytes, convert_every_sweep=ledger.convert_every_sweep)
    sweeps = max(1, round(ledger.mean_sweeps("free")))
    out.relax("inference", ledger.sizes, 1, sweeps)
    free_p, free_n = ledger.count("power_w_samples", "free"), ledger.count("power_measured", "free")
    if free_n:
        out.add_circuit_power("inference", free_p / free_n)
    return out


def per_sample(ledger: Ledger, c: CostConstants | None = None) -> dict[str, dict]:
    """Energy (J) by term and time (s) per training sample and per inference."""
    c = c or CostConstants()
    out: dict[str, dict] = {}
    n_train = ledger.training_samples
    if n_train:
        cost = npu_cost(ledger, c)
        e = cost.phase_energy(TRAIN_PHASES)
        out["train"] = {
            "energy_j": {t: v / n_train for t, v in e.items()},
            "time_s": sum(cost.time_s.get(p, 0.0) for p in TRAIN_PHASES) / n_train,
        }
    inf = inference_ledger(ledger)
    cost = npu_cost(inf, c)
    n_inf = inf.inference_samples
    out["inference"] = {
        "energy_j": {t: v / n_inf for t, v in cost.phase_energy(["inference"]).items()},
        "time_s": cost.time_s["inference"] / n_inf,
    }
    return out
