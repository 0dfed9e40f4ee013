"""Device wear: how long a chip's devices last at the pulse rate its own throughput sets."""

from __future__ import annotations

import math


def lifetime_s(pulses: float, samples: int, time_per_sample_s: float, endurance: float) -> float:
    """Seconds until a device that took ``pulses`` programming pulses in ``samples`` training
    samples reaches its ``endurance`` (pulses), training continuously at ``time_per_sample_s``
    (s) per sample: endurance / (pulses / (samples × time per sample)). ``inf`` when it took no
    pulses or its endurance is unlimited."""
    if samples <= 0 or time_per_sample_s <= 0:
        raise ValueError("lifetime needs a positive sample count and time per sample")
    if pulses <= 0 or math.isinf(endurance):
        return math.inf
    return endurance * samples * time_per_sample_s / pulses


SECONDS_PER_YEAR = 3.15576e7  # Julian year (365.25 d)


def lifetime_text(seconds: float) -> str:
    """A lifetime for a table: '—' (unlimited), minutes, hours, days or years."""
    if math.isinf(seconds):
        return "—"
    for unit, size in (("y", SECONDS_PER_YEAR), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{seconds:.1f} s"
