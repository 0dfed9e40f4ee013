"""Energy (J), time (s) and area (m²) of the analog NPU: a pure function of (ledger, chip spec).

Every price is read from the :class:`~npusim.chip.ChipSpec` (section.key below); terms of the
energy breakdown:

* ``array``: the resistive arrays conducting while the circuit settles. If the simulation
  recorded its steady-state dissipated power (Σ G·ΔV², W) this is power × settle time;
  otherwise analog MACs × ``array.read_voltage``²·G_mid·``timing.settle_tau``.
* ``read``: every cell conducting through one read-out integration (``device_reads`` ×
  ``energy.read_device``): the network held at equilibrium while the ADCs sample it. With a
  measured circuit power (the DRN) it is that power × read-outs × the integration time
  ``energy.read_device / (read_voltage² · G_mid)``.
* ``neurons``: node amplifiers biased during each settle step: node-sweeps × settle step ×
  ``energy.amplifier_power`` × ``amplifier.per_array / array.cols`` amplifiers per column.
* ``dac`` / ``adc``: conversions × ``energy.dac_fom`` / ``energy.adc_fom`` × 2^bits.
* ``programming``: gradual pulses × ``energy.program_pulse`` + abrupt RESETs ×
  ``energy.reset_pulse``.
* ``digital``: 8-bit periphery operations × ``energy.digital_mac`` (outer-product MACs, argmax).
* ``fp32``: real-valued periphery operations × ``energy.digital_fp32_op`` (nudges, the
  update's scale-and-quantise).
* ``sram`` / ``dram``: bytes moved on chip between arrays and tile buffers / fetched off chip.
* ``static``: ``energy.static_power`` per array in use × arrays × run time.
* ``pulse_trains``: line-slots of an in-array update's stochastic pulse trains ×
  ``energy.pulse_slot`` (ledger ``pulse_slots``; its device pulses are ``programming``).
* ``sample_hold``: values held for an in-array update × ``energy.sample_hold``.

Area: arrays in use (``energy.array_area``), their ADCs (``array.adcs_per_array``), DACs (one
per row), amplifiers (``amplifier.per_array``) and the digital periphery (``energy.digital_area``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from npusim.chip import ChipSpec
from npusim.core.phases import TRAIN_PHASES, Phase
from npusim.cost.constants import (
    CostError,
    adc_j,
    amplifiers_per_column,
    analog_mac_j,
    cost_spec,
    dac_j,
    read_integration_s,
)
from npusim.cost.latency import phase_times, readouts, sweep_time, tiles, train_latency
from npusim.runtime.ledger import Ledger, Shapes

TERMS: tuple[str, ...] = (
    "array",
    "read",
    "neurons",
    "dac",
    "adc",
    "programming",
    "digital",
    "fp32",
    "sram",
    "dram",
    "static",
    "pulse_trains",
    "sample_hold",
)


@dataclass
class NpuCost:
    """Energy (J) per phase and term, time (s) per phase, area (m²) per block."""

    energy_j: dict[str, dict[str, float]]
    time_s: dict[str, float]
    area_m2: dict[str, float]
    events: dict[str, dict[str, float]]

    def phase_energy(self, phases: Iterable[str]) -> dict[str, float]:
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


def arrays_in_use(sizes_or_arrays: Shapes, spec: ChipSpec) -> int:
    """Arrays holding the network's weight matrices (one per tile; the network given by its
    arrays or a layered network's layer sizes)."""
    return sum(r * q for r, q in tiles(sizes_or_arrays, spec))


def npu_area(sizes_or_arrays: Shapes, spec: ChipSpec | None = None) -> dict[str, float]:
    """Area (m²) per block for a chip holding the whole network at once (given by its arrays
    or a layered network's layer sizes)."""
    spec = cost_spec(spec)
    arrays, e = arrays_in_use(sizes_or_arrays, spec), spec.energy
    return {
        "arrays": arrays * e.array_area,
        "adc": arrays * spec.array.adcs_per_array * e.adc_area,
        "dac": arrays * spec.array.rows * e.dac_area,
        "neurons": arrays * spec.amplifier.per_array * e.amplifier_area,
        "digital": e.digital_area,
    }


def phase_time(ledger: Ledger, phase: str, spec: ChipSpec | None = None) -> float:
    """Wall time (s) ``phase`` adds to the schedule of :mod:`npusim.cost.latency` (settling,
    read-outs, digital work, programming; the update's 8-bit work overlapping relaxations)."""
    return phase_times(ledger, spec)[phase]


def npu_cost(ledger: Ledger, spec: ChipSpec | str | None = None) -> NpuCost:
    """Energy, time and area of everything the ledger counted, priced by ``spec`` (a
    ``ChipSpec`` or preset name; None: the ``ideal`` preset)."""
    spec = cost_spec(spec)
    if not ledger.sizes:
        raise CostError("the ledger is empty: count some relaxations first")
    e = spec.energy
    shapes = ledger.array_shapes()
    area = npu_area(shapes, spec)
    static_w = e.static_power * arrays_in_use(shapes, spec)
    mac_j, amp_w = analog_mac_j(spec), e.amplifier_power * amplifiers_per_column(spec)
    conv_adc, conv_dac = adc_j(spec), dac_j(spec)
    t_int = read_integration_s(spec)
    energy, time, events = {}, {}, ledger.by_phase()
    times = phase_times(ledger, spec)
    for p in ledger.phases:
        ev = events[p]
        t_sweep = sweep_time(ledger, p, spec)
        # measured power of this phase; inference is a free relaxation of the same circuit
        free = events.get(Phase.FREE)
        src = ev if ev["power_measured"] > 0 else free if p == Phase.INFERENCE else None
        if src is not None and src["power_measured"] > 0:  # mean power × all settle time
            power_w = src["power_w_samples"] / src["power_measured"]
            array_j = power_w * ev["sweeps"] * t_sweep
            read_j = power_w * readouts(ledger, p) * t_int  # the circuit held for each read-out
        else:
            array_j = ev["macs"] * mac_j
            read_j = ev["device_reads"] * e.read_device
        resets = ev["reset_pulses"]
        time[p] = times[p]
        energy[p] = {
            "array": array_j,
            "read": read_j,
            "neurons": ev["node_sweeps"] * t_sweep * amp_w,
            "dac": ev["dac"] * conv_dac,
            "adc": ev["adc"] * conv_adc,
            "programming": (ev["pulses"] - resets) * e.program_pulse + resets * e.reset_pulse,
            "digital": ev["digital_ops"] * e.digital_mac,
            "fp32": ev["fp32_ops"] * e.digital_fp32_op,
            "sram": ev["bytes_tile"] * e.sram_per_byte,
            "dram": ev["bytes_mem"] * e.dram_per_byte,
            "static": static_w * time[p],
            "pulse_trains": ev["pulse_slots"] * e.pulse_slot,
            "sample_hold": ev["sample_hold"] * e.sample_hold,
        }
    return NpuCost(energy_j=energy, time_s=time, area_m2=area, events=events)


def inference_ledger(ledger: Ledger) -> Ledger:
    """The ledger's own inference counts, or one sample relaxed like a free phase if none
    (each energy-based block in turn, for the free phase's mean sweeps per relaxation)."""
    out = Ledger(word_bytes=ledger.word_bytes, convert_every_sweep=ledger.convert_every_sweep)
    arrays = ledger.array_shapes()
    out.sizes, out.arrays = list(ledger.sizes), arrays
    if ledger.inference_samples:
        out.layers = {"inference": ledger.layers["inference"]}
        out.phases = {"inference": ledger.phases["inference"]}
        return out
    sweeps = max(1, round(ledger.mean_sweeps("free")))
    blocks = sorted({a.block for a in arrays})
    for k in blocks:
        out.relax("inference", arrays, 1, sweeps, block=k if len(blocks) > 1 else None)
    free_p, free_n = ledger.count("power_w_samples", "free"), ledger.count("power_measured", "free")
    if free_n:
        out.add_circuit_power("inference", free_p / free_n)
    return out


def per_sample(ledger: Ledger, spec: ChipSpec | str | None = None) -> dict[str, dict]:
    """Energy (J) by term and time (s) per training sample and per inference: ``time_s`` is the
    schedule's wall time per sample (1 / throughput), ``latency_s`` one sample's own path
    (:mod:`npusim.cost.latency`)."""
    c = cost_spec(spec)
    out: dict[str, dict] = {}
    n_train = ledger.training_samples
    if n_train:
        cost = npu_cost(ledger, c)
        e = cost.phase_energy(TRAIN_PHASES)
        out["train"] = {
            "energy_j": {t: v / n_train for t, v in e.items()},
            "time_s": sum(cost.time_s.get(p, 0.0) for p in TRAIN_PHASES) / n_train,
            "latency_s": train_latency(ledger, c),
        }
    inf = inference_ledger(ledger)
    cost = npu_cost(inf, c)
    n_inf = inf.inference_samples
    out["inference"] = {
        "energy_j": {t: v / n_inf for t, v in cost.phase_energy(["inference"]).items()},
        "time_s": cost.time_s["inference"] / n_inf,
        "latency_s": cost.time_s["inference"] / n_inf,
    }
    return out
