"""Ledger: closed-form counts of the events an analog network spends while it learns.

Counting model (one *relaxation* = one sample settling once, ``b`` samples, ``s`` sweeps). The
network is a list of crossbar arrays (:class:`~npusim.core.interfaces.ArrayShape`: ``rows ×
cols`` devices read ``uses`` times per sample, joining layers of ``in_units`` and ``out_units``,
``fed_back`` when also read backward, in energy-based ``block``); a layered network of sizes
``[n_0, …, n_L]`` has array ``k`` = ``n_k × n_{k+1}``, used once, fed back for ``k ≥ 1``, all in
block 0 (:func:`~npusim.core.interfaces.dense_arrays`). A block relaxes on its own
(``relax(block=k)``); "the last array of its block" is, for one block, array ``L−1``, and a
block's input array (not ``fed_back``) is, for one block, array 0. Per array and relaxation:

* analog MACs: ``b·s·(2 if fed_back else 1)·uses·rows·cols`` (read forward, and backward when
  its input side is a free layer; the analog array computes continuously, a sweep stands for
  one settling step of every layer).
* node-sweeps: ``b·s·out_units`` (the amplifiers of its output layer settle once per sweep).
* DAC conversions: ``b·in_units`` on a block's input array (its clamped input, once per
  relaxation); ``b·out_units`` on the last array of its block in a nudged phase (the nudges).
  With ``convert_every_sweep`` every output layer is also re-driven each sweep
  (``b·s·out_units``).
* ADC conversions: training phases read every output layer once at equilibrium
  (``b·out_units``; EqProp needs both equilibria); inference reads only the last layer of each
  block (activations moved between blocks go through converters; one block: the output).
  ``convert_every_sweep`` reads every output layer each sweep instead (``b·s·out_units``).
* an analog feed-forward layer trained by backprop (``read_back``) is read once more per
  training sample, through its transpose: in the free phase ``b·uses·rows·cols`` more MACs and
  device reads, its error signal in (``b·out_units`` DAC) and the error on its input out
  (``b·in_units`` ADC).
* device reads: ``readouts·uses·rows·cols``, ``readouts`` = ``b`` (or ``b·s`` with
  ``convert_every_sweep``): every read-out holds the network at its equilibrium for one read
  integration, so every cell of every array conducts once per use, inference included.
* digital ops (8-bit integer operations of the periphery, on ADC codes): argmax
  (``b·out_units`` on the network's last array, inference), one activation per converted
  node when ``convert_every_sweep`` (``b·s·out_units``), the feed-forward block before a
  block's input array (``b·ff_ops_in``, recomputed or back-propagated once per phase); at an
  update, the outer products summed over uses, ``2·b·uses·rows·cols + 2·b·cols`` (2 MACs per
  weight and use or bias per sample: one per phase, 8-bit codes into wide accumulators; a
  dense array: ``2·b·params``).
* fp32 ops (real-valued arithmetic of the periphery): the output error and nudge of a nudged
  phase (``y − t`` and ``× β``: ``2·b·out_units`` on the last array of the nudged block); at an
  update one scale-and-quantise per parameter per batch (the accumulated sum × lr/β, rounded
  to a pulse count). Parameters per array = weights ``rows·cols`` + biases ``cols``.
* bytes: every converted value (``word_bytes`` each) travels between an array and its tile
  buffer (``bytes_tile``); inputs are fetched from off-chip memory once per sample
  (``bytes_mem`` = ``b·in_units`` on the first array of block 0, free and inference phases); an
  update reads both phases' stored states (``2·b·(in_units + out_units)``).
* per phase: ``samples`` (``b`` per free or inference relaxation of block 0, so a forward
  pass through several blocks counts its samples once), ``relaxations`` (``b``) and
  ``sweeps`` (``b·s``) per call.
* in-array updates (``update_mode="coincidence"``, :mod:`npusim.runtime.inarray`): the array
  forms the update from pulse trains (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016), so
  training phases convert only the free phase's last layer of each block (the loss and nudge
  need it) and an update counts no outer products, scale-and-quantise or bytes, but per array
  what the trainer reports: ``pulse_slots``, ``coincidences``, ``sample_hold``, ``slot_cycles``,
  the device pulses, one 8-bit increment per bias-row coincidence (``digital_ops``) and 4 fp32
  operations per train and sample (a fed-back array's update is two trains, + its bias row's).
* programming pulses: as reported by the device layer; when it reports 0 (ideal / unknown
  device) one pulse-equivalent per parameter written per update is counted. ``reset_pulses``
  is the part of them that are abrupt RESETs (one-sided devices re-programmed on refresh),
  priced apart from the gradual SET/depress pulses.
* update-rule work: what the synapses report in ``periphery_events()`` beyond the update
  itself (an accumulator's fp32 ops and SRAM bytes, a Tiki-Taka transfer's conversions and
  reads) is added to the update phase's counters of the same names, spread like pulses.

Per-array lists are indexed by array ``k`` (its weights and its output layer). Counts are
Python ints (exact on resume); times are seconds, powers W. The saved form and the counter
names live in :mod:`npusim.runtime.ledger_io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from npusim.core.interfaces import ArrayShape, GradientEstimate, Network, Synapses, dense_arrays
from npusim.core.phases import PHASES, Phase
from npusim.runtime.ledger_io import (
    LAYER_COUNTERS,
    PHASE_COUNTERS,
    PHASE_FLOATS,
    RULE_COUNTERS,
    UPDATE_MODES,
    LedgerError,
    ledger_dict,
    ledger_fields,
    zeros,
)

__all__ = ["LAYER_COUNTERS", "RULE_COUNTERS", "Ledger", "LedgerError", "Shapes", "as_arrays"]

Shapes = Sequence[int] | Sequence[ArrayShape]  # layer sizes of a layered network, or its arrays


def as_arrays(shapes: Shapes) -> list[ArrayShape]:
    """A network's arrays from its arrays, or from a layered network's layer sizes (>= 2
    positive ints; else a ValueError)."""
    given = list(shapes)
    if given and all(isinstance(a, ArrayShape) for a in given):
        return given  # type: ignore[return-value]
    if len(given) < 2 or any(isinstance(n, ArrayShape) or int(n) < 1 for n in given):
        raise ValueError(f"sizes must be >= 2 positive layer sizes, got {given}")
    return dense_arrays([int(n) for n in given])  # type: ignore[arg-type]


def _per_array(count: int | list[int], params: list[int], measured: bool) -> list[int]:
    """A count per array: given per array, or a total spread in proportion to ``params``
    (exact total); a total of 0 that is not ``measured`` means one per parameter."""
    if isinstance(count, (list, tuple)):
        if len(count) != len(params):
            raise ValueError(f"need {len(params)} per-array counts, got {len(count)}")
        return [int(p) for p in count]
    if int(count) > 0 or measured:
        total = sum(params)
        per = [int(count) * p // total for p in params]
        per[-1] += int(count) - sum(per)
        return per
    return list(params)


def _last_of_block(arrays: list[ArrayShape]) -> list[bool]:
    """Per array: is it the last array of its block."""
    last = {a.block: k for k, a in enumerate(arrays)}
    return [last[a.block] == k for k, a in enumerate(arrays)]


@dataclass
class Ledger:
    """Event counts per phase and per array; see the module docstring for the counting model.

    ``arrays``: the network's crossbar arrays (set on first use); ``sizes``: its physical layer
    sizes (a layered network's; for other networks the input units and each array's
    ``out_units``), ``logical_sizes`` the sizes a user gave.
    ``settle_s`` holds settle time (s) reported by a simulation (0 if none: the cost model then
    uses sweeps × its time per sweep); ``power_w_samples`` is Σ of the circuit's steady-state
    dissipated power (W) over the ``power_measured`` relaxed samples whose power was evaluated;
    the cost model multiplies their mean by every relaxation's settle time.
    ``power_scale_w``: watts per unit of a network's ``dissipated_power`` (its normalised
    conductance × voltage² units); None records no circuit power. ``power_samples`` samples of
    every ``power_every``-th step are evaluated (a few matmuls: negligible next to relaxing).
    ``device_pulses_seen``, ``device_resets_seen``, ``device_events_seen``: the synapses'
    cumulative pulse, RESET pulse and update-rule event counters at the last step.
    """

    word_bytes: int = 1
    convert_every_sweep: bool = False
    update_mode: str = "digital"
    power_scale_w: float | None = None
    power_samples: int = 16
    power_every: int = 100
    device_pulses_seen: int = 0
    device_resets_seen: int = 0
    device_events_seen: dict[str, int] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    logical_sizes: list[int] = field(default_factory=list)
    arrays: list[ArrayShape] = field(default_factory=list)
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    # ---- internals ------------------------------------------------------------------------
    def array_shapes(self) -> list[ArrayShape]:
        """The network's arrays: ``arrays``, or those of a layered network of ``sizes`` (a
        ledger given only its sizes); empty before anything was counted."""
        if self.arrays:
            return list(self.arrays)
        return dense_arrays(self.sizes) if len(self.sizes) >= 2 else []

    def _use(self, shapes: Shapes) -> None:
        """Record the network on first use; a different one is a ValueError. Layer sizes equal
        to the ledger's ``sizes`` stand for its arrays (a network of several blocks too)."""
        if self.arrays and list(shapes) == self.sizes:
            return
        arrays = as_arrays(shapes)
        if isinstance(shapes[0], ArrayShape):
            sizes = [arrays[0].in_units] + [a.out_units for a in arrays]
            what, mine = f"arrays {arrays}", f"{self.array_shapes()}"
        else:
            sizes = [int(n) for n in shapes]  # type: ignore[arg-type]
            what, mine = f"sizes {sizes}", f"{self.sizes}"
        if not self.arrays:
            self.arrays = self.array_shapes() or arrays
        if arrays != self.arrays:
            raise ValueError(f"{what} differ from the ledger's network {mine}")
        if not self.sizes:
            self.sizes = sizes

    def _check(self, phase: str, shapes: Shapes) -> tuple[dict, dict]:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        self._use(shapes)
        nl = len(self.arrays)
        lay = self.layers.setdefault(phase, {c: zeros(nl) for c in LAYER_COUNTERS})
        ph = self.phases.setdefault(phase, {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS})
        for c in PHASE_FLOATS:
            ph[c] = float(ph[c])
        return lay, ph

    # ---- hooks the trainer calls -----------------------------------------------------------
    def relax(
        self,
        phase: str,
        sizes_or_arrays: Shapes,
        batch: int,
        sweeps: int,
        settle_s: float | None = None,
        *,
        block: int | None = None,
    ) -> None:
        """Count ``batch`` samples relaxing for ``sweeps`` sweeps in ``phase``.

        ``sizes_or_arrays``: a layered network's layer sizes or the network's arrays.
        ``settle_s``: simulated settle time per sample (s), if the caller knows it. ``block``:
        count only the arrays of that energy-based block (it relaxes on its own); None: all.
        """
        if phase == "update":
            raise ValueError("use Ledger.update for the update phase")
        lay, ph = self._check(phase, sizes_or_arrays)
        arrays = self.arrays
        blocks = sorted({a.block for a in arrays})
        if block is not None and block not in blocks:
            raise ValueError(f"block {block} is not one of the network's blocks {blocks}")
        b, s, wb = int(batch), int(sweeps), self.word_bytes
        nudged, inference = phase.startswith("nudged"), phase == "inference"
        coincide = self.update_mode == "coincidence" and not inference
        last = _last_of_block(arrays)
        out_k = max(k for k, a in enumerate(arrays) if a.block == blocks[-1])  # argmax
        readouts = b * s if self.convert_every_sweep else b
        for k, a in enumerate(arrays):
            if block is not None and a.block != block:
                continue
            cells = a.uses * a.rows * a.cols
            lay["macs"][k] += b * s * (2 if a.fed_back else 1) * cells
            lay["device_reads"][k] += readouts * cells
            lay["node_sweeps"][k] += b * s * a.out_units
            if self.convert_every_sweep:
                adc = dac = b * s * a.out_units
                lay["digital_ops"][k] += b * s * a.out_units
            else:
                adc = b * a.out_units if (not inference or last[k]) else 0
                if coincide:
                    adc = b * a.out_units if (phase == "free" and last[k]) else 0  # held
                dac = 0
            if not a.fed_back:  # the block's clamped input, and the digital block before it
                dac += b * a.in_units
                lay["digital_ops"][k] += b * a.ff_ops_in
            if nudged and last[k]:
                dac += b * a.out_units
                lay["fp32_ops"][k] += 2 * b * a.out_units
            if a.read_back and phase == "free":  # backprop's transposed read: δ in, error out
                lay["macs"][k] += b * cells
                lay["device_reads"][k] += b * cells
                dac += b * a.out_units
                adc += b * a.in_units
            if inference and k == out_k:
                lay["digital_ops"][k] += b * a.out_units
            lay["adc"][k] += adc
            lay["dac"][k] += dac
            lay["bytes_tile"][k] += (adc + dac) * wb
        if phase in ("free", "inference") and block in (None, blocks[0]):
            first = min(k for k, a in enumerate(arrays) if a.block == blocks[0])
            ph["samples"] += b
            lay["bytes_mem"][first] += b * arrays[first].in_units * wb
        ph["relaxations"] += b
        ph["sweeps"] += b * s
        if settle_s is not None:
            ph["settle_s"] += b * float(settle_s)

    def update(
        self,
        sizes_or_arrays: Shapes,
        batch: int,
        pulses: int | list[int] = 0,
        measured: bool = False,
        reset_pulses: int | list[int] = 0,
        rule_events: dict[str, int] | None = None,
        in_array: dict[str, list[int]] | None = None,
    ) -> None:
        """Count one parameter update computed from ``batch`` samples' two equilibria.

        ``sizes_or_arrays``: a layered network's layer sizes or the network's arrays.
        ``pulses``: programming pulses from the device layer (total, or one count per array);
        0 means ideal/unknown and counts one pulse-equivalent per parameter written, unless
        ``measured`` (a device model really fired no pulse). ``reset_pulses``: how many of
        ``pulses`` were abrupt RESETs (total, spread over the arrays like ``pulses``, or one
        count per array). ``rule_events``: extra events of the update rule (totals keyed by
        :data:`RULE_COUNTERS`), spread over the arrays in proportion to their parameters.
        ``in_array``: the events of an update formed in the array, one count per array
        (``pulse_slots``, ``coincidences``, ``bias_coincidences``, ``slot_cycles``,
        ``sample_hold``; :mod:`npusim.runtime.inarray`); it replaces the digital outer product.
        """
        lay, ph = self._check("update", sizes_or_arrays)
        b, arrays = int(batch), self.arrays
        params = [a.rows * a.cols + a.cols for a in arrays]
        per = _per_array(pulses, params, measured)
        resets = _per_array(reset_pulses, params, True)
        if self.update_mode not in UPDATE_MODES:
            raise ValueError(f"update_mode must be one of {UPDATE_MODES}, got {self.update_mode!r}")
        for k, a in enumerate(arrays):
            if in_array is None:
                lay["digital_ops"][k] += 2 * b * a.uses * a.rows * a.cols + 2 * b * a.cols
                lay["fp32_ops"][k] += params[k]
                lay["bytes_tile"][k] += 2 * b * (a.in_units + a.out_units) * self.word_bytes
            else:
                for name in ("pulse_slots", "coincidences", "slot_cycles", "sample_hold"):
                    lay[name][k] += int(in_array[name][k])
                lay["digital_ops"][k] += int(in_array["bias_coincidences"][k])
                trains = 2 if a.fed_back else 1  # a fed-back array's update is two trains
                lay["fp32_ops"][k] += 4 * b * (trains + 1)  # + its bias row's train
            lay["pulses"][k] += per[k]
            lay["reset_pulses"][k] += resets[k]
            lay["params_written"][k] += params[k]
        for name, total in (rule_events or {}).items():
            if name not in RULE_COUNTERS:
                raise ValueError(f"update-rule event {name!r} is not one of {RULE_COUNTERS}")
            for k, v in enumerate(_per_array(int(total), params, True)):
                lay[name][k] += v
        ph["updates"] += 1

    def training_step(
        self,
        model: Network,
        est: GradientEstimate,
        batch: int,
        *,
        x: Tensor | None = None,
        synapses: Synapses | None = None,
        rule_events: dict[str, int] | None = None,
        in_array: dict[str, list[int]] | None = None,
    ) -> None:
        """Count one training step from a gradient estimate's relaxations and the update that
        followed: ``est.phases`` on every array, or with ``est.blocks`` each block's phases on
        that block's arrays (``model.arrays``).

        ``x``: the batch's inputs, to record the circuit power of single-block networks that
        have one (``dissipated_power`` not None) when ``power_scale_w`` is set. ``synapses``:
        the device model, whose cumulative ``total_pulses`` and ``reset_pulses`` count the
        pulses fired (None: ideal, one pulse-equivalent per parameter written).
        ``rule_events``: the update rule's cumulative extra events
        (``Synapses.periphery_events()``), whose growth since the last step is counted in the
        update phase. ``in_array``: the events of an update formed in the array
        (:meth:`update`); without device synapses its ``pulses`` are the pulses fired.
        """
        arrays = list(model.arrays)
        if not self.logical_sizes:
            self.logical_sizes = list(model.logical_sizes)
        phases = list(est.phases.items())
        if est.blocks is None:
            for phase, rel in phases:
                self.relax(phase, arrays, batch, rel.sweeps)
        else:
            for k, block_phases in enumerate(est.blocks):
                for phase, rel in block_phases.items():
                    self.relax(phase, arrays, batch, rel.sweeps, block=k)
        measure = (
            est.blocks is None
            and x is not None
            and self.power_scale_w is not None
            and self.count("updates", Phase.UPDATE) % max(self.power_every, 1) == 0
        )
        if measure:  # all phases in one call: one pass over the weights
            assert x is not None and self.power_scale_w is not None
            m = min(batch, self.power_samples)
            xs = torch.cat([x[:m]] * len(phases))
            states = [
                torch.cat([rel.state[i][:m] for _, rel in phases])
                for i in range(len(model.sizes) - 1)
            ]
            power = model.dissipated_power(xs, states)
            if power is not None:
                p = power.reshape(len(phases), m).sum(1).tolist()
                for (phase, _), p_sum in zip(phases, p, strict=True):
                    self.add_circuit_power(phase, p_sum * self.power_scale_w, samples=m)
        pulses: int | list[int] = 0
        resets = 0
        events: dict[str, int] = {}
        for name, total in (rule_events or {}).items():
            events[name] = max(int(total) - self.device_events_seen.get(name, 0), 0)
            self.device_events_seen[name] = int(total)
        if synapses is not None:
            pulses = max(int(synapses.total_pulses) - self.device_pulses_seen, 0)
            self.device_pulses_seen = int(synapses.total_pulses)
            resets = max(int(synapses.reset_pulses) - self.device_resets_seen, 0)
            self.device_resets_seen = int(synapses.reset_pulses)
        measured = synapses is not None
        if in_array is not None and synapses is None:
            pulses, measured = list(in_array["pulses"]), True
        self.update(
            arrays, batch, pulses, measured=measured, reset_pulses=resets,
            rule_events=events, in_array=in_array,
        )  # fmt: skip

    def add_circuit_power(self, phase: str, power_w, samples: int | None = None) -> None:
        """Add the steady-state dissipated power (W) of relaxed samples: a tensor with one value
        per sample, or a float summed over ``samples`` samples (default 1)."""
        if phase not in PHASES or phase == "update":
            raise ValueError(f"circuit power belongs to a relaxation phase, got {phase!r}")
        if not self.sizes:
            raise ValueError("count a relaxation (Ledger.relax) before adding its power")
        ph = self.phases.setdefault(phase, {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS})
        if isinstance(power_w, Tensor):
            total, n = float(power_w.sum().item()), int(power_w.numel())
        else:
            total, n = float(power_w), 1
        ph["power_w_samples"] = float(ph.get("power_w_samples", 0.0)) + total
        ph["power_measured"] = int(ph.get("power_measured", 0)) + int(samples or n)

    # ---- queries ---------------------------------------------------------------------------
    def count(self, counter: str, phase: str | None = None, layer: int | None = None) -> float:
        """Total of ``counter`` over the given phase (or all) and array (or all)."""
        phases = [phase] if phase else list(self.phases)
        out = 0
        for p in phases:
            if counter in LAYER_COUNTERS:
                vals = self.layers.get(p, {}).get(counter, [])
                out += vals[layer] if layer is not None and vals else sum(vals)
            elif counter in PHASE_COUNTERS + PHASE_FLOATS:
                out += self.phases.get(p, {}).get(counter, 0)
            else:
                raise KeyError(f"unknown counter {counter!r}")
        return out

    def totals(self) -> dict[str, float]:
        """Every counter summed over phases and arrays."""
        return {c: self.count(c) for c in LAYER_COUNTERS + PHASE_COUNTERS + PHASE_FLOATS}

    def by_phase(self) -> dict[str, dict[str, float]]:
        """Every counter summed over arrays, per phase."""
        keys = LAYER_COUNTERS + PHASE_COUNTERS + PHASE_FLOATS
        return {p: {c: self.count(c, p) for c in keys} for p in self.phases}

    @property
    def training_samples(self) -> int:
        return int(self.count("samples", "free"))

    @property
    def inference_samples(self) -> int:
        return int(self.count("samples", "inference"))

    def mean_sweeps(self, phase: str) -> float:
        """Mean sweeps per relaxation in ``phase`` (0 if none)."""
        r = self.count("relaxations", phase)
        return self.count("sweeps", phase) / r if r else 0.0

    # ---- combination and persistence -------------------------------------------------------
    def merge(self, other: Ledger) -> Ledger:
        """Add ``other``'s counts into this ledger (same network); returns ``self``."""
        mine, theirs = self.array_shapes(), other.array_shapes()
        if mine and theirs and mine != theirs:
            raise ValueError(f"cannot merge ledgers of networks {self.sizes} and {other.sizes}")
        if not self.sizes:
            self.sizes = list(other.sizes)
        if not self.logical_sizes:
            self.logical_sizes = list(other.logical_sizes)
        self.arrays = mine or theirs
        nl = len(self.arrays)
        for p, lay in other.layers.items():
            into = self.layers.setdefault(p, {c: zeros(nl) for c in LAYER_COUNTERS})
            for c, vals in lay.items():
                into[c] = [a + b for a, b in zip(into.get(c, zeros(nl)), vals, strict=True)]
        for p, ph in other.phases.items():
            into_ph = self.phases.setdefault(p, {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS})
            for c, v in ph.items():
                into_ph[c] = into_ph.get(c, 0) + v
        return self

    def to_dict(self) -> dict:
        """JSON-ready copy (ints stay ints, so a resumed run continues counts exactly)."""
        return ledger_dict(self, self.array_shapes())

    @classmethod
    def from_dict(cls, d: dict) -> Ledger:
        """Inverse of :meth:`to_dict`. A malformed dict (a damaged ``results.json`` or
        checkpoint) raises :class:`LedgerError` naming the entry; counters a ledger saved by an
        older npusim lacks start at 0, and without ``arrays`` it is a layered network."""
        return cls(**ledger_fields(d))

    def load_dict(self, d: dict) -> None:
        """Replace this ledger's state with a saved one (checkpoint resume)."""
        other = Ledger.from_dict(d)
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))
