"""Learning on the edge: simulated stream samples per second when the chip learns one sample at
a time (batch 1, as ``npusim edge`` runs it), against the same samples in batches of 16 (as
``npusim train`` runs them). DHN-1H (784-1024-10), centered EqProp, mnist5k, on the ``rram``
chip (device pulses and 8-bit converters) and on the ideal chip. Each line is one JSON object
with ``name``, ``samples_per_s`` and, for batch 1, ``time_ratio_to_batch16`` (simulation time
per sample relative to batch 16 on the same chip).

Rounds alternate between the configurations and the best round of each counts, so a busy
machine disturbs the ratio less.
"""

from __future__ import annotations

import json
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer

CHIPS = ("ideal", "rram")
SAMPLES, ROUNDS = 64, 5


def _seconds_per_sample(tr: Trainer, batch: int, start: int) -> float:
    x_all, y_all = tr.data.x_train, tr.data.y_train
    t0 = time.perf_counter()
    for i in range(start, start + SAMPLES, batch):
        tr.step(x_all[i : i + batch], y_all[i : i + batch])
    return (time.perf_counter() - t0) / SAMPLES


def main() -> None:
    cfg = {c: TrainConfig(dataset="mnist5k", hidden=[1024], augment=0, chip=c) for c in CHIPS}
    runs = {(c, b): Trainer(cfg[c]) for c in CHIPS for b in (1, 16)}
    best = dict.fromkeys(runs, float("inf"))
    for r in range(ROUNDS + 1):
        for (c, b), tr in runs.items():
            t = _seconds_per_sample(tr, b, r * SAMPLES)
            if r > 0:  # round 0 warms up
                best[c, b] = min(best[c, b], t)
    for c, b in runs:
        line = {"name": f"edge-dhn-1h-{c}-batch{b}", "samples_per_s": round(1 / best[c, b], 1)}
        if b == 1:
            line["time_ratio_to_batch16"] = round(best[c, 1] / best[c, 16], 2)
        line["threads"] = torch.get_num_threads()
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
