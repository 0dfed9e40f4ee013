"""Time on the chip (s): latency and throughput of the work a ledger counted, from a ``ChipSpec``.

The schedule, for one copy of the network on the arrays it uses:

* **Settling.** Every array of an energy-based block settles at once: the layers are coupled
  both ways (a Hopfield or resistive network is one circuit), so a sweep lasts one settle step
  per use of the block's most-used array (a convolution's kernel, held once, visits its output
  positions one after another; a dense array has one use), and the blocks of a hybrid network
  settle one after another. A settle step lasts the simulated settle time per sweep when the
  ledger has one, else ``timing.settle_tau``. The DACs drive all rows at once when a
  relaxation starts.
* **Read-out.** At equilibrium (and after every sweep when every sweep converts) the network is
  held for one read cycle while the ADCs convert. An array's ``array.adcs_per_array`` ADCs share
  its columns, each converting ``timing.adc_rate`` values per second; the column tiles of a
  layer convert in parallel. A read-out lasts ``max(timing.read_time, conversions per ADC /
  adc_rate)`` of the busiest layer.
* **Digital work on the critical path** (output error and nudge, argmax, the activations of
  every-sweep conversion) runs on ``timing.digital_lanes`` lanes at ``timing.clock``.
* **Phases in sequence**: free, nudged+, nudged−, one sample after another.
* **Update.** A two-stage pipeline: the update phase's 8-bit operations (EqProp's outer products,
  accumulated sample by sample in the digital periphery) run while the arrays relax the next
  sample. After the batch's last sample the fp32 scale-and-quantise runs, then every array is
  programmed at once, ``array.rows_per_write`` of its rows per pulse slot of
  ``timing.pulse_width`` (all their columns pulsed together, pulses spread evenly over the
  cells). The next batch waits for the new weights. A batch of B samples, each relaxing in
  ``a`` and needing ``d`` of 8-bit work, with ``u`` of update after it, takes
  ``B·max(a, d) + min(a, d) + u``.
* No pipelining across layers or samples inside a relaxation: a layer cannot take the next
  sample before the whole circuit has settled and been read out. More throughput needs more
  copies of the network (the compute claims check, :mod:`npusim.cost.compute_claims`).

Latency of a training sample: its relaxations, its 8-bit work and the update after its batch
(the path of a batch's last sample; for batch 1, the time per update). Throughput: samples
divided by the wall time of the whole schedule. Latency of an inference: its relaxation and
read-out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from npusim.chip import ChipSpec
from npusim.core.phases import TRAIN_PHASES, Phase
from npusim.cost.constants import cost_spec, digital_ops_per_s
from npusim.runtime.ledger import Ledger, Shapes, as_arrays

RELAX_TRAIN: tuple[str, ...] = tuple(p for p in TRAIN_PHASES if p != Phase.UPDATE)


def tiles(sizes_or_arrays: Shapes, spec: ChipSpec) -> list[tuple[int, int]]:
    """(row tiles, column tiles) of each weight matrix (its ``rows × cols``; a layered network
    given by its layer sizes) on the chip's ``array.rows × array.cols`` arrays."""
    if not len(sizes_or_arrays):
        return []
    r, c = spec.array.rows, spec.array.cols
    return [(math.ceil(a.rows / r), math.ceil(a.cols / c)) for a in as_arrays(sizes_or_arrays)]


def sweep_time(ledger: Ledger, phase: str, spec: ChipSpec) -> float:
    """Time (s) of one settle step in ``phase``: simulated if recorded, else ``settle_tau``."""
    settle, sweeps = ledger.count("settle_s", phase), ledger.count("sweeps", phase)
    return settle / sweeps if settle > 0 and sweeps else spec.timing.settle_tau


def settle_steps(ledger: Ledger, phase: str) -> float:
    """Settle steps of ``phase``: its sweeps, each lasting as many steps as the most-used array
    of its block has uses (one kernel copy reads a convolution's positions one after another);
    the blocks of a hybrid network settle one after another. Equal to the phase's sweeps for a
    network of dense arrays in one block."""
    per_block: dict[int, float] = {}
    for k, a in enumerate(ledger.array_shapes()):
        steps = ledger.count("node_sweeps", phase, k) / a.out_units * a.uses
        per_block[a.block] = max(per_block.get(a.block, 0.0), steps)
    return sum(per_block.values())


def readouts(ledger: Ledger, phase: str) -> float:
    """Read-outs of ``phase``: one per relaxation, or one per sweep when every sweep converts."""
    return ledger.count("sweeps" if ledger.convert_every_sweep else "relaxations", phase)


def conversion_time(ledger: Ledger, phase: str, spec: ChipSpec) -> float:
    """Time (s) the ADCs need for every conversion of ``phase``: each layer's conversions shared
    by ``column tiles × array.adcs_per_array`` ADCs at ``timing.adc_rate``; layers in parallel."""
    a, rate = spec.array.adcs_per_array, spec.timing.adc_rate
    return max(
        (
            ledger.count("adc", phase, k) / (ct * a * rate)
            for k, (_, ct) in enumerate(tiles(ledger.array_shapes(), spec))
        ),
        default=0.0,
    )


def readout_time(ledger: Ledger, phase: str, spec: ChipSpec) -> float:
    """Time (s) of one read-out of ``phase``: ``max(read_time, conversions per ADC / adc_rate)``
    (0 when the phase reads nothing out)."""
    n = readouts(ledger, phase)
    if not n:
        return 0.0
    return max(spec.timing.read_time, conversion_time(ledger, phase, spec) / n)


def programming_time(ledger: Ledger, spec: ChipSpec, phase: str = Phase.UPDATE) -> float:
    """Time (s) to apply ``phase``'s pulses: all weight matrices in parallel, each writing
    ``array.rows_per_write`` rows per ``timing.pulse_width`` slot (a matrix of ``rows`` on rt
    row tiles writes ``min(rt · rows_per_write, rows)`` rows at once, all ``cols`` columns; a
    convolution's weights are written once, whatever its uses). An in-array (coincidence)
    update drives all rows and columns at once: its ``slot_cycles`` pulse widths."""
    arrays, pw = ledger.array_shapes(), spec.timing.pulse_width
    per_array = min(spec.array.rows_per_write, spec.array.rows)
    return max(
        (
            ledger.count("slot_cycles", phase, k) * pw
            or ledger.count("pulses", phase, k) * pw / (min(rt * per_array, a.rows) * a.cols)
            for k, ((rt, _), a) in enumerate(zip(tiles(arrays, spec), arrays, strict=True))
        ),
        default=0.0,
    )


@dataclass(frozen=True)
class PhaseParts:
    """Busy time (s) of one phase of a ledger, by part: ``settle`` (sweeps × sweep time),
    ``readout`` (read-outs, or an update's conversions), ``digital`` (8-bit and fp32 work on the
    critical path), ``overlap`` (the update's 8-bit work, which may run beside the next
    relaxation) and ``programming`` (pulses)."""

    settle: float = 0.0
    readout: float = 0.0
    digital: float = 0.0
    overlap: float = 0.0
    programming: float = 0.0

    @property
    def busy(self) -> float:
        """All parts one after another (s)."""
        return self.settle + self.readout + self.digital + self.overlap + self.programming


def phase_parts(ledger: Ledger, phase: str, spec: ChipSpec | str | None = None) -> PhaseParts:
    """Busy time (s) of ``phase`` by part, from the ledger's counts and the chip's timing."""
    spec = cost_spec(spec)
    rate = digital_ops_per_s(spec)
    ops8, fp32 = ledger.count("digital_ops", phase), ledger.count("fp32_ops", phase)
    if phase == Phase.UPDATE:
        return PhaseParts(
            readout=conversion_time(ledger, phase, spec),
            digital=fp32 / rate,
            overlap=ops8 / rate,
            programming=programming_time(ledger, spec, phase),
        )
    return PhaseParts(
        settle=settle_steps(ledger, phase) * sweep_time(ledger, phase, spec),
        readout=readouts(ledger, phase) * readout_time(ledger, phase, spec),
        digital=(ops8 + fp32) / rate,
    )


def phase_times(ledger: Ledger, spec: ChipSpec | str | None = None) -> dict[str, float]:
    """Wall time (s) each phase adds to the schedule (they sum to the whole run's time).

    Relaxation phases: their busy time. Update: its fp32 work, conversions and programming,
    plus the part of its 8-bit work the relaxations do not hide: with N training samples, U
    updates, ``a`` relaxation time and ``d`` 8-bit update work per sample,
    ``N·max(a, d) + U·min(a, d) − N·a``."""
    spec = cost_spec(spec)
    parts = {p: phase_parts(ledger, p, spec) for p in ledger.phases}
    out = {p: v.busy for p, v in parts.items()}
    up = parts.get(Phase.UPDATE)
    n, u = ledger.training_samples, ledger.count("updates", Phase.UPDATE)
    if up is not None and n and u:
        a = sum(parts[p].busy for p in RELAX_TRAIN if p in parts) / n
        d = up.overlap / n
        out[Phase.UPDATE] = up.busy - up.overlap + n * max(a, d) + u * min(a, d) - n * a
    return out


def train_latency(ledger: Ledger, spec: ChipSpec | str | None = None) -> float:
    """Latency (s) of one training sample: its relaxations and its 8-bit update work, then the
    update after its batch (fp32 work, conversions, programming), all per sample or per update
    as the ledger counted them. 0 without training samples."""
    spec = cost_spec(spec)
    n, u = ledger.training_samples, ledger.count("updates", Phase.UPDATE)
    if not n:
        return 0.0
    relax = sum(phase_parts(ledger, p, spec).busy for p in RELAX_TRAIN if p in ledger.phases)
    if Phase.UPDATE not in ledger.phases:
        return relax / n
    up = phase_parts(ledger, Phase.UPDATE, spec)
    return (relax + up.overlap) / n + (up.busy - up.overlap) / max(u, 1)


def breakdown(ledger: Ledger, phases: tuple[str, ...], per: float, spec: ChipSpec) -> dict:
    """Busy time (s) by part summed over ``phases`` and divided by ``per`` (samples)."""
    keys = ("settle", "readout", "digital", "overlap", "programming")
    out = dict.fromkeys(keys, 0.0)
    for p in phases:
        if p in ledger.phases:
            parts = asdict(phase_parts(ledger, p, spec))
            for k in keys:
                out[k] += parts[k] / per
    return out
