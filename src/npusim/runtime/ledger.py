"""Ledger: closed-form counts of the events a layered analog network spends while it learns.

Counting model (one *relaxation* = one sample settling once; ``sizes = [n_0, …, n_L]`` physical):

* analog MACs (array reads), per sweep and sample: array ``k`` (``W_k``, ``n_k × n_{k+1}``) is
  read forward (drives layer ``k+1``) and, for ``k ≥ 1``, backward (feeds layer ``k``; the input
  layer is clamped so ``W_0`` is never read backward). The analog array computes continuously; a
  sweep stands for one settling step of every layer.
* node-sweeps: ``n_{k+1}`` neurons (amplifiers) of layer ``k+1`` settle once per sweep.
* DAC conversions: the ``n_0`` inputs once per relaxation; the ``n_L`` output nudges once per
  nudged relaxation. With ``convert_every_sweep`` every free layer is also re-driven each sweep.
* ADC conversions: training phases read every free layer once at equilibrium (EqProp needs both
  equilibria); inference reads only the output layer. ``convert_every_sweep`` reads every free
  layer each sweep instead.
* device reads: every read-out (the relaxation's equilibrium sampled for the ADCs: once per
  relaxation, or every sweep with ``convert_every_sweep``) holds the whole network at its
  equilibrium for one read integration, so every cell of every array conducts once
  (``n_k·n_{k+1}`` per array and sample), inference included.
* digital ops (8-bit integer operations of the periphery, on ADC codes): argmax (``n_L``,
  inference), one activation per converted node when ``convert_every_sweep``; at an update,
  EqProp's outer products (2 MACs per weight or bias per sample: one per phase, 8-bit codes
  into wide accumulators).
* fp32 ops (real-valued arithmetic of the periphery): the output error and nudge of a nudged
  phase (``y − t`` and ``× β``: 2 per output); at an update one scale-and-quantise per
  parameter per batch (the accumulated sum × lr/β, rounded to a pulse count). Parameters =
  weights ``n_k·n_{k+1}`` + biases ``n_{k+1}``.
* bytes: every converted value (``word_bytes`` each) travels between an array and its tile
  buffer (``bytes_tile``); inputs are fetched from off-chip memory once per sample
  (``bytes_mem``, free and inference phases); an update reads both phases' stored states.
* in-array updates (``update_mode="coincidence"``, :mod:`npusim.runtime.inarray`): the array
  forms the update itself from pulse trains (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016),
  so training phases convert only the free phase's output layer (the loss and the nudge need
  it; the equilibria are held, not converted) and an update counts no outer-product MACs, no
  scale-and-quantise and no bytes. It counts, per array, what the trainer reports:
  ``pulse_slots`` (line-slots driven), ``coincidences``, ``sample_hold`` (held values),
  ``slot_cycles`` (the trains' duration in pulse widths), the device pulses, one 8-bit
  increment per coincidence on a bias row (``digital_ops``: biases are periphery registers)
  and 4 fp32 operations per train and sample (the trains' gains from two held peaks).
* programming pulses: as reported by the device layer; when it reports 0 (ideal / unknown
  device) one pulse-equivalent per parameter written per update is counted. ``reset_pulses``
  is the part of them that are abrupt RESETs (one-sided devices re-programmed on refresh),
  priced apart from the gradual SET/depress pulses.
* update-rule work: what the synapses report in ``periphery_events()`` beyond the update
  itself (a mixed-precision accumulator's fp32 operations and SRAM bytes; a Tiki-Taka
  transfer's DAC conversions, device reads, ADC conversions, buffer operations and bytes) is
  added to the update phase's counters of the same names, spread over the arrays like
  pulses, so the cost model prices it with the chip's constants.

Per-layer lists are indexed by array ``k`` (its weights and its output layer ``k+1``; the input
DACs belong to array 0). Counts are Python ints (exact on resume); times are seconds, powers W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from npusim.core.errors import NpusimError
from npusim.core.interfaces import GradientEstimate, Network, Synapses
from npusim.core.phases import PHASES, Phase

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
RULE_COUNTERS: tuple[str, ...] = (
    "dac", "adc", "device_reads", "digital_ops", "fp32_ops", "bytes_tile",
)  # fmt: skip  # update-rule events a synapse model may report


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_scalar(key: str, v: object, kind: str) -> object:
    if kind == "count" and _is_count(v):
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


def _zeros(n: int) -> list[int]:
    return [0] * n


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


@dataclass
class Ledger:
    """Event counts per phase and per array; see the module docstring for the counting model.

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
    layers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)

    # ---- internals ------------------------------------------------------------------------
    def _check(self, phase: str, sizes: list[int]) -> tuple[dict, dict]:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"sizes must be >= 2 positive layer sizes, got {sizes}")
        sizes = [int(n) for n in sizes]
        if not self.sizes:
            self.sizes = list(sizes)
        elif sizes != self.sizes:
            raise ValueError(f"sizes {sizes} differ from the ledger's network {self.sizes}")
        nl = len(sizes) - 1
        lay = self.layers.setdefault(phase, {c: _zeros(nl) for c in LAYER_COUNTERS})
        ph = self.phases.setdefault(phase, {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS})
        for c in PHASE_FLOATS:
            ph[c] = float(ph[c])
        return lay, ph

    # ---- hooks the trainer calls -----------------------------------------------------------
    def relax(
        self,
        phase: str,
        sizes: list[int],
        batch: int,
        sweeps: int,
        settle_s: float | None = None,
    ) -> None:
        """Count ``batch`` samples relaxing for ``sweeps`` sweeps in ``phase``.

        ``settle_s``: simulated settle time per sample (s), if the caller knows it.
        """
        if phase == "update":
            raise ValueError("use Ledger.update for the update phase")
        lay, ph = self._check(phase, sizes)
        b, s, n = int(batch), int(sweeps), self.sizes
        nl = len(n) - 1
        wb = self.word_bytes
        nudged = phase.startswith("nudged")
        readouts = b * s if self.convert_every_sweep else b
        for k in range(nl):
            reads = 2 if k >= 1 else 1
            lay["macs"][k] += b * s * reads * n[k] * n[k + 1]
            lay["device_reads"][k] += readouts * n[k] * n[k + 1]
            lay["node_sweeps"][k] += b * s * n[k + 1]
            if self.convert_every_sweep:
                adc = dac = b * s * n[k + 1]
                lay["digital_ops"][k] += b * s * n[k + 1]
            else:
                last = k == nl - 1
                adc = b * n[k + 1] if (phase != "inference" or last) else 0
                if self.update_mode == "coincidence" and phase != "inference":
                    adc = b * n[k + 1] if (phase == "free" and last) else 0  # held, not read
                dac = 0
            if k == 0:
                dac += b * n[0]
            if nudged and k == nl - 1:
                dac += b * n[-1]
                lay["fp32_ops"][k] += 2 * b * n[-1]
            if phase == "inference" and k == nl - 1:
                lay["digital_ops"][k] += b * n[-1]
            lay["adc"][k] += adc
            lay["dac"][k] += dac
            lay["bytes_tile"][k] += (adc + dac) * wb
        if phase in ("free", "inference"):
            ph["samples"] += b
            lay["bytes_mem"][0] += b * n[0] * wb
        ph["relaxations"] += b
        ph["sweeps"] += b * s
        if settle_s is not None:
            ph["settle_s"] += b * float(settle_s)

    def update(
        self,
        sizes: list[int],
        batch: int,
        pulses: int | list[int] = 0,
        measured: bool = False,
        reset_pulses: int | list[int] = 0,
        rule_events: dict[str, int] | None = None,
        in_array: dict[str, list[int]] | None = None,
    ) -> None:
        """Count one parameter update computed from ``batch`` samples' two equilibria.

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
        lay, ph = self._check("update", sizes)
        b, n = int(batch), self.sizes
        nl = len(n) - 1
        params = [n[k] * n[k + 1] + n[k + 1] for k in range(nl)]
        per = _per_array(pulses, params, measured)
        resets = _per_array(reset_pulses, params, True)
        if self.update_mode not in UPDATE_MODES:
            raise ValueError(f"update_mode must be one of {UPDATE_MODES}, got {self.update_mode!r}")
        for k in range(nl):
            if in_array is None:
                lay["digital_ops"][k] += params[k] * 2 * b
                lay["fp32_ops"][k] += params[k]
                lay["bytes_tile"][k] += 2 * b * (n[k] + n[k + 1]) * self.word_bytes
            else:
                for name in ("pulse_slots", "coincidences", "slot_cycles", "sample_hold"):
                    lay[name][k] += int(in_array[name][k])
                lay["digital_ops"][k] += int(in_array["bias_coincidences"][k])
                trains = 2 if k else 1  # a hidden array's update is two trains (see inarray)
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
        """Count one training step from a gradient estimate's relaxations (``est.phases``) and
        the update that followed.

        ``x``: the batch's inputs, to record the circuit power of networks that have one
        (``dissipated_power`` not None) when ``power_scale_w`` is set. ``synapses``: the device
        model, whose cumulative ``total_pulses`` and ``reset_pulses`` count the pulses fired
        (None: ideal, one pulse-equivalent per parameter written). ``rule_events``: the update
        rule's cumulative extra events (``Synapses.periphery_events()``), whose growth since
        the last step is counted in the update phase. ``in_array``: the events of an update
        formed in the array (:meth:`update`); without device synapses its ``pulses`` are the
        pulses fired.
        """
        sizes = list(model.sizes)
        if not self.logical_sizes:
            self.logical_sizes = list(model.logical_sizes)
        phases = list(est.phases.items())
        for phase, rel in phases:
            self.relax(phase, sizes, batch, rel.sweeps)
        measure = (
            x is not None
            and self.power_scale_w is not None
            and self.count("updates", Phase.UPDATE) % max(self.power_every, 1) == 0
        )
        if measure:  # all phases in one call: one pass over the weights
            m = min(batch, self.power_samples)
            xs = torch.cat([x[:m]] * len(phases))
            states = [
                torch.cat([rel.state[i][:m] for _, rel in phases]) for i in range(len(sizes) - 1)
            ]
            power = model.dissipated_power(xs, states)
            if power is not None:
                p = power.reshape(len(phases), m).sum(1).tolist()
                for (phase, _), p_sum in zip(phases, p, strict=True):
                    self.add_circuit_power(phase, p_sum * self.power_scale_w, samples=m)
        pulses = resets = 0
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
            sizes, batch, pulses, measured=measured, reset_pulses=resets,
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
        if other.sizes and self.sizes and other.sizes != self.sizes:
            raise ValueError(f"cannot merge ledgers of networks {self.sizes} and {other.sizes}")
        if not self.sizes:
            self.sizes = list(other.sizes)
        if not self.logical_sizes:
            self.logical_sizes = list(other.logical_sizes)
        nl = max(len(self.sizes) - 1, 0)
        for p, lay in other.layers.items():
            mine = self.layers.setdefault(p, {c: _zeros(nl) for c in LAYER_COUNTERS})
            for c, vals in lay.items():
                mine[c] = [a + b for a, b in zip(mine.get(c, _zeros(nl)), vals, strict=True)]
        for p, ph in other.phases.items():
            mine = self.phases.setdefault(p, {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS})
            for c, v in ph.items():
                mine[c] = mine.get(c, 0) + v
        return self

    def to_dict(self) -> dict:
        """JSON-ready copy (ints stay ints, so a resumed run continues counts exactly)."""
        return {
            "word_bytes": self.word_bytes,
            "convert_every_sweep": self.convert_every_sweep,
            "update_mode": self.update_mode,
            "power_scale_w": self.power_scale_w,
            "power_samples": self.power_samples,
            "power_every": self.power_every,
            "device_pulses_seen": self.device_pulses_seen,
            "device_resets_seen": self.device_resets_seen,
            "device_events_seen": dict(self.device_events_seen),
            "sizes": list(self.sizes),
            "logical_sizes": list(self.logical_sizes),
            "layers": {p: {c: list(v) for c, v in lay.items()} for p, lay in self.layers.items()},
            "phases": {p: dict(ph) for p, ph in self.phases.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Ledger:
        """Inverse of :meth:`to_dict`. A malformed dict (a damaged ``results.json`` or
        checkpoint) raises :class:`LedgerError` naming the entry; counters a ledger saved by an
        older npusim lacks start at 0."""
        if not isinstance(d, dict):
            raise LedgerError(f"a ledger is a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(_SCALARS) - {"sizes", "logical_sizes", "layers", "phases"}
        unknown -= {"device_events_seen"}
        if unknown:
            raise LedgerError(f"unknown ledger keys {sorted(unknown)}")
        kw: dict = {}
        for key, (kind, default) in _SCALARS.items():
            kw[key] = _check_scalar(key, d.get(key, default), kind)
        if kw["update_mode"] not in UPDATE_MODES:
            raise LedgerError(f"update_mode: one of {UPDATE_MODES}, got {kw['update_mode']!r}")
        seen = d.get("device_events_seen", {})
        if not isinstance(seen, dict) or not all(
            k in RULE_COUNTERS and _is_count(v) for k, v in seen.items()
        ):
            raise LedgerError(
                f"device_events_seen: expected an object of {RULE_COUNTERS} holding "
                f"non-negative integers, got {seen!r}"
            )
        kw["device_events_seen"] = {k: int(v) for k, v in seen.items()}
        for key in ("sizes", "logical_sizes"):
            vals = d.get(key, [])
            if not isinstance(vals, list) or not all(_is_count(n) and n >= 1 for n in vals):
                raise LedgerError(f"{key}: expected a list of positive integers, got {vals!r}")
            kw[key] = [int(n) for n in vals]
        nl = max(len(kw["sizes"]) - 1, 0)
        layers, phases = d.get("layers", {}), d.get("phases", {})
        for name, table in (("layers", layers), ("phases", phases)):
            if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
                raise LedgerError(f"{name}: expected an object of phases, each an object")
            bad = sorted(set(table) - set(PHASES))
            if bad:
                raise LedgerError(f"{name}: unknown phases {bad}; expected some of {PHASES}")
        kw["layers"] = {}
        for p, lay in layers.items():
            counts = {c: _zeros(nl) for c in LAYER_COUNTERS}
            for c, v in lay.items():
                ok = isinstance(v, list) and len(v) == nl and all(_is_count(x) for x in v)
                if c not in LAYER_COUNTERS or not ok:
                    raise LedgerError(
                        f"layers.{p}.{c}: expected one of {LAYER_COUNTERS} holding {nl} "
                        f"non-negative integers, got {v!r}"
                    )
                counts[c] = [int(x) for x in v]
            kw["layers"][p] = counts
        kw["phases"] = {}
        for p, ph in phases.items():
            vals: dict[str, float] = {c: 0 for c in PHASE_COUNTERS + PHASE_FLOATS}
            for c, v in ph.items():
                if c in PHASE_FLOATS:
                    ok = _is_number(v) and math.isfinite(v) and v >= 0
                else:
                    ok = c in PHASE_COUNTERS and _is_count(v)
                if not ok:
                    raise LedgerError(
                        f"phases.{p}.{c}: expected one of {PHASE_COUNTERS + PHASE_FLOATS} "
                        f"holding a non-negative finite number, got {v!r}"
                    )
                vals[c] = float(v) if c in PHASE_FLOATS else int(v)
            kw["phases"][p] = vals
        return cls(**kw)

    def load_dict(self, d: dict) -> None:
        """Replace this ledger's state with a saved one (checkpoint resume)."""
        other = Ledger.from_dict(d)
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))
