"""The update formed in the array (``--outer-product coincidence``): held signals become pulse
trains whose coincidences program the devices (DHN), or each device converts its own held
change to pulses (DRN); see :mod:`npusim.devices.coincidence` and :mod:`npusim.learning.inarray`.

Samples of a batch are applied one after another, as the array would (all relaxed with the
weights before the batch). Per array ``k`` (its weights and bias row) the updater counts:

* ``pulse_slots``: line-slots driven, BL × (rows + columns) per sample and train (a bias row
  counts as one row; a DRN's local conversion drives its rows and columns for BL slots);
* ``coincidences``: coincidence events on the devices (DHN), or devices pulsed in a slot
  (DRN); ``pulses``: the device pulses they fire (× pulses per coincidence);
* ``bias_coincidences``: coincidences on the bias row, each a digital register increment;
* ``slot_cycles``: the trains' duration in pulse widths (BL × pulses per coincidence per sample
  and train, trains of one array in sequence);
* ``sample_hold``: values held: each free unit at both equilibria (DHN), each device's voltage
  in both phases (DRN).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from npusim.chip.spec import DeviceSpec
from npusim.core.interfaces import Estimator, GradientEstimate, Network, Synapses
from npusim.core.outer import OuterProduct
from npusim.devices.coincidence import local_pulses, pulse_trains
from npusim.devices.ideal import IdealSynapses, add_exact
from npusim.devices.synapses import DeviceSynapses
from npusim.learning.inarray import InArrayError, LocalTerm, OuterTerm, in_array_terms

IN_ARRAY_EVENTS: tuple[str, ...] = (
    "pulse_slots", "coincidences", "pulses", "bias_coincidences", "slot_cycles", "sample_hold",
)  # fmt: skip
_SEED_TRAINS = 0x5EED_0016


def nominal_unit(dev: DeviceSpec, peak: float, signed: bool) -> float:
    """Weight change of one pulse on a chip without a device model (the ideal chip): the
    nominal step of its device window, a full swing of ``2·weight_range·peak`` (signed) or
    ``weight_range·peak`` (non-negative) over ``n_states`` steps, applied exactly."""
    swing = dev.weight_range * (peak if peak > 0 else 1.0) * (2.0 if signed else 1.0)
    return swing / dev.n_states


class InArrayUpdater:
    """Applies a batch's contrastive update in the array. ``pulse_train``: BL slots per train;
    ``seed``: the trains' random stream; ``dev``: the chip's device spec (its nominal step
    prices a pulse where no device model holds a weight)."""

    def __init__(self, pulse_train: int, seed: int, dev: DeviceSpec) -> None:
        self.bl = int(pulse_train)
        self.dev = dev
        self.gen = np.random.Generator(np.random.SFC64(int(seed) ^ _SEED_TRAINS))
        self._units: list[float] | None = None

    def units(
        self, params: list[Tensor], signed: list[bool], synapses: Synapses | None
    ) -> list[float]:
        """Weight change per pulse of each weight tensor: the device's step where devices hold
        it, else the nominal step (fixed from the weights when first called)."""
        held = isinstance(synapses, DeviceSynapses)
        if self._units is None:
            n_w = len(params) // 2
            self._units = [
                nominal_unit(self.dev, float(p.abs().max()), s)
                for p, s in zip(params[:n_w], signed[:n_w], strict=True)
            ]
        return [
            synapses.pulse_unit(i) if held and synapses.y[i] is not None else u
            for i, u in enumerate(self._units)
        ]

    @torch.no_grad()
    def apply(
        self,
        model: Network,
        x: Tensor,
        estimator: Estimator,
        est: GradientEstimate,
        lrs: list[float],
        synapses: Synapses | None,
    ) -> dict[str, list[int]]:
        """Program one batch's update; returns the events per array (:data:`IN_ARRAY_EVENTS`).
        ``lrs``: learning rate per parameter (order of ``model.params()``); ``synapses``:
        the device model (None or ideal: exact weights, quantised to the nominal step)."""
        if synapses is not None and type(synapses) not in (DeviceSynapses, IdealSynapses):
            raise InArrayError(
                f"{type(synapses).__name__} keeps digital state between updates; in-array "
                "updates need --update sgd"
            )
        params, signed = model.params(), model.signed
        terms = in_array_terms(model, x, estimator, est)
        L = len(params) // 2
        units = self.units(params, signed, synapses)
        devices = synapses if isinstance(synapses, DeviceSynapses) else None
        ev = {name: [0] * L for name in IN_ARRAY_EVENTS}
        n = x.shape[0]
        for i, (p, ts) in enumerate(zip(params, terms, strict=True)):
            k = i % L
            bias = i >= L
            unit = units[k]
            on_devices = devices is not None and devices.y[i] is not None
            for t in ts:
                if isinstance(t, LocalTerm):  # values() carries the term's scale
                    held = devices if on_devices else None
                    self._local(i, p, t, lrs[i] / unit, unit, signed[i], held, ev, k)
                    continue
                eta = lrs[i] * t.scale
                assert isinstance(t, OuterTerm)
                tr = pulse_trains(t.rows, t.cols, eta, unit, self.bl, self.gen)
                co, fired = tr.coincidences()
                ev["pulse_slots"][k] += tr.slots
                ev["slot_cycles"][k] += tr.slot_cycles
                if bias:
                    ev["bias_coincidences"][k] += co
                    add_exact(
                        p, (tr.rows.sum(2, keepdim=True) * tr.cols).sum((0, 1)) * unit, signed[i]
                    )
                    continue
                ev["coincidences"][k] += co
                if on_devices:
                    devices.program_batch(i, tr.rows, tr.cols)
                else:
                    ev["pulses"][k] += fired
                    rows = tr.rows.reshape(-1, tr.rows.shape[2])
                    add_exact(
                        p,
                        OuterProduct(rows, tr.cols.reshape(-1, tr.cols.shape[2]) * unit),
                        signed[i],
                    )
            if not bias:
                held = (
                    2 * n * p.shape[0] * p.shape[1]
                    if isinstance(ts[0], LocalTerm)
                    else 2 * n * p.shape[1]
                )
                ev["sample_hold"][k] += held
        if devices is not None:  # its pulses are counted by the synapses (total_pulses)
            devices.finish_update()
        elif isinstance(synapses, IdealSynapses):
            synapses.updates += 1
        return ev

    def _local(
        self,
        i: int,
        p: Tensor,
        t: LocalTerm,
        gain: float,
        unit: float,
        signed: bool,
        devices: DeviceSynapses | None,
        ev: dict[str, list[int]],
        k: int,
    ) -> None:
        """A DRN weight tensor: each device converts its own desired change to pulses."""
        rows, cols = p.shape
        batch = []
        for s in range(t.a.shape[0]):
            counts = local_pulses(t.values(s) * gain, self.bl, self.gen)
            ev["coincidences"][k] += int((counts != 0).sum())
            ev["pulse_slots"][k] += self.bl * (rows + cols)
            ev["slot_cycles"][k] += self.bl
            if devices is not None:
                batch.append(counts)
            else:
                ev["pulses"][k] += int(counts.abs().sum())
                add_exact(p, counts.mul_(unit), signed)
        if devices is not None:
            devices.program_batch(i, torch.stack(batch))

    def state_dict(self) -> dict:
        return {"gen": self.gen.bit_generator.state, "units": self._units}

    def load_state_dict(self, state: dict) -> None:
        self.gen.bit_generator.state = state["gen"]
        self._units = state["units"]
