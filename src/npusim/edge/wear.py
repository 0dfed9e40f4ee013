"""Device wear on the edge: pulses each device took along the stream, and how long the devices
last at the update rate the power budget allows."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.core.interfaces import Synapses
from npusim.cost.wear import SECONDS_PER_YEAR
from npusim.devices.mixed import MixedPrecisionSynapses
from npusim.devices.synapses import DeviceSynapses
from npusim.devices.tikitaka import TikiTakaSynapses


def device_counts(syn: Synapses | None) -> Tensor | None:
    """Pulses each device has received (flat, int64), over every device array of the update
    rule (both arrays of Tiki-Taka); None for exact synapses."""
    if isinstance(syn, DeviceSynapses):
        parts = [syn]
    elif isinstance(syn, MixedPrecisionSynapses):
        parts = [syn.devices]
    elif isinstance(syn, TikiTakaSynapses):
        parts = [syn.fast, syn.slow]
    else:
        return None
    counts = [s.device_counts(i) for s in parts for i in range(len(s.rec))]
    flat = [c.reshape(-1).to(torch.int64) for c in counts if c is not None]
    return torch.cat(flat) if flat else None


def lifetime_s(
    before: Tensor, after: Tensor, updates: int, updates_per_s: float, endurance: float
) -> tuple[float, float]:
    """Seconds until devices reach their ``endurance`` (pulses) when updates continue at
    ``updates_per_s`` with the pulses each device took in the last ``updates`` updates
    (``after − before``): (the mean device, the first device to wear out). ``inf`` when no
    device was pulsed or the endurance is unlimited."""
    if math.isinf(endurance) or updates <= 0 or updates_per_s <= 0:
        return math.inf, math.inf
    taken = (after - before).double()
    left = (endurance - after.double()).clamp_min(0.0)
    per_s = taken / updates * updates_per_s  # pulses/s of each device
    mean_rate = float(per_s.mean())
    mean = float(left.mean()) / mean_rate if mean_rate > 0 else math.inf
    hit = per_s > 0
    first = float((left[hit] / per_s[hit]).min()) if bool(hit.any()) else math.inf
    return mean, first


def years(seconds: float) -> float | None:
    """Seconds as years (None when unlimited)."""
    return None if math.isinf(seconds) else seconds / SECONDS_PER_YEAR
