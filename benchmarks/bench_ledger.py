"""Cost of counting: EqProp training throughput with and without the event ledger.

Same configurations as ``bench_train.py`` (DHN-1H batch 16 / 15 sweeps; DRN-1H batch 4 /
4 sweeps, its circuit power evaluated on every 10th step). Each line is one JSON object with
``name``, ``samples_per_s`` without and with the ledger and ``overhead`` (target: < 0.10).
"""

from __future__ import annotations

import json
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.ledger import Ledger
from npusim.runtime.train import Trainer


def throughput(cfg: TrainConfig, samples: int, ledger: Ledger | None) -> float:
    """Samples/s of training steps over ``samples`` training samples, after a warm-up."""
    tr = Trainer(cfg, ledger=ledger)
    x, y = tr.data.x_train[: samples + 128], tr.data.y_train[: samples + 128]
    tr.data.x_train, tr.data.y_train = x[:128], y[:128]
    tr.train_epoch()  # warm-up
    tr.data.x_train, tr.data.y_train = x[128:], y[128:]
    t0 = time.perf_counter()
    tr.train_epoch()
    return samples / (time.perf_counter() - t0)


def main() -> None:
    common = dict(dataset="mnist5k", algorithm="eqprop", variant="centered", augment=0)
    runs = {
        "dhn-1h": (TrainConfig(model="dhn", hidden=[1024], **common), 2000, None),
        "drn-1h": (TrainConfig(model="drn", hidden=[1024], **common), 600, 1e-9),
    }
    for name, (cfg, samples, scale) in runs.items():
        base, counted = [], []
        for _ in range(3):  # interleaved, best of three: robust to machine noise
            base.append(throughput(cfg, samples, None))
            counted.append(throughput(cfg, samples, Ledger(power_scale_w=scale)))
        b, c = max(base), max(counted)
        print(
            json.dumps(
                {
                    "name": f"ledger-overhead-{name}",
                    "samples_per_s": round(b, 1),
                    "samples_per_s_with_ledger": round(c, 1),
                    "overhead": round(b / c - 1, 4),
                    "target_overhead": 0.10,
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
