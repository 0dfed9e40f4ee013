"""Training on a device chip versus the ideal chip: DHN-1H (784-1024-10), centered EqProp,
mnist5k, batch 16, as ``npusim train --chip CHIP`` runs it (device pulses and the chip's
converters). Each line is one JSON object with ``name`` and ``samples_per_s``; device chips also
report ``time_ratio_to_ideal`` (time per epoch relative to ``ideal``; target <= 2). The update
rules ``mixed`` and ``ttv2`` (``RULES``, on ``rram-gong2018``) are timed in the same rounds
against the same ideal trainer (target <= 2).

Rounds alternate between chips and the best round of each counts, so a busy machine
disturbs the ratio less.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer

CHIPS = ("ideal", "rram", "pcm", "ecram")
RULES = (("rram-gong2018", "mixed"), ("rram-gong2018", "ttv2"))  # (chip, update rule)
BATCHES, ROUNDS = 25, 8


def _trainer(chip: str, update: str = "sgd") -> Trainer:
    cfg = TrainConfig(dataset="mnist5k", model="dhn", hidden=[1024], augment=0, chip=chip)
    return Trainer(cfg, update=update)


def _seconds_per_batch(tr: Trainer, start: int) -> float:
    x_all, y_all, bs = tr.data.x_train, tr.data.y_train, tr.cfg.batch_size
    t0 = time.perf_counter()
    for b in range(start, start + BATCHES):
        tr.step(x_all[b * bs : (b + 1) * bs], y_all[b * bs : (b + 1) * bs])
    return (time.perf_counter() - t0) / BATCHES


def main() -> None:
    chips = [c for c in CHIPS if len(sys.argv) < 2 or c in sys.argv[1:] or c == "ideal"]
    trainers = {c: _trainer(c) for c in chips}
    for chip, rule in RULES:
        if len(sys.argv) < 2 or rule in sys.argv[1:]:
            trainers[f"{chip}-update-{rule}"] = _trainer(chip, rule)
    chips = list(trainers)
    best = {c: float("inf") for c in chips}
    for r in range(ROUNDS + 1):
        for c, tr in trainers.items():
            t = _seconds_per_batch(tr, r * BATCHES)
            if r > 0:  # round 0 warms up
                best[c] = min(best[c], t)
    bs = trainers["ideal"].cfg.batch_size
    for c in chips:
        line = {"name": f"train-dhn-1h-chip-{c}", "samples_per_s": round(bs / best[c], 1)}
        if c != "ideal":
            line["time_ratio_to_ideal"] = round(best[c] / best["ideal"], 2)
            line["target_ratio"] = 2.0
            line["pulses_mean"] = round(trainers[c].synapses.pulse_stats()["pulses_mean"], 2)
        line["threads"] = torch.get_num_threads()
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
