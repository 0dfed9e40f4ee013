"""In-array (coincidence) updates versus digital outer products on the same chip: DHN-1H
(784-1024-10), centered EqProp, mnist5k, batch 16, as ``npusim train --outer-product MODE
--chip CHIP`` runs it. Each line is one JSON object with ``name``, ``samples_per_s`` of each
mode and ``time_ratio_coincidence_to_digital`` (time per training step; target <= 3).

Rounds alternate between the two modes and the best round of each counts, so a busy machine
disturbs the ratio less.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer

CHIPS = ("ideal", "rram")
MODES = ("digital", "coincidence")
BATCHES, ROUNDS = 25, 6
TARGET = 3.0


def _trainer(chip: str, mode: str) -> Trainer:
    cfg = TrainConfig(
        dataset="mnist5k", model="dhn", hidden=[1024], augment=0, chip=chip, outer_product=mode
    )
    return Trainer(cfg)


def _seconds_per_batch(tr: Trainer, start: int) -> float:
    x_all, y_all, bs = tr.data.x_train, tr.data.y_train, tr.cfg.batch_size
    t0 = time.perf_counter()
    for b in range(start, start + BATCHES):
        tr.step(x_all[b * bs : (b + 1) * bs], y_all[b * bs : (b + 1) * bs])
    return (time.perf_counter() - t0) / BATCHES


def main() -> None:
    chips = [c for c in CHIPS if len(sys.argv) < 2 or c in sys.argv[1:]]
    for chip in chips:
        trainers = {m: _trainer(chip, m) for m in MODES}
        best = dict.fromkeys(MODES, float("inf"))
        for r in range(ROUNDS + 1):
            for m, tr in trainers.items():
                t = _seconds_per_batch(tr, r * BATCHES)
                if r > 0:  # round 0 warms up (and compiles the kernels)
                    best[m] = min(best[m], t)
        bs = trainers["digital"].cfg.batch_size
        line = {
            "name": f"train-dhn-1h-coincidence-{chip}",
            "samples_per_s_digital": round(bs / best["digital"], 1),
            "samples_per_s_coincidence": round(bs / best["coincidence"], 1),
            "time_ratio_coincidence_to_digital": round(best["coincidence"] / best["digital"], 2),
            "target_ratio": TARGET,
            "pulse_train_length": trainers["coincidence"].cfg.pulse_train_length,
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
