"""Cost of counting: EqProp training throughput with and without the event ledger.

Same configurations as ``bench_train.py`` (DHN-1H batch 16 / 15 sweeps; DRN-1H batch 4 /
4 sweeps, its circuit power evaluated on every 100th step). The ledger's hook is timed inside
the epoch; each line is one JSON object with ``name``, ``samples_per_s_with_ledger`` and
``overhead`` = hook time ÷ rest of the epoch (target: < 0.10).
"""

from __future__ import annotations

import json
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.ledger import Ledger
from npusim.runtime.train import Trainer


class TimedLedger(Ledger):
    """A ledger that also accumulates the wall time (s) spent in its training hook."""

    spent_s: float = 0.0

    def training_step(self, *args, **kw) -> None:
        t0 = time.perf_counter()
        super().training_step(*args, **kw)
        self.spent_s += time.perf_counter() - t0


def overhead(cfg: TrainConfig, samples: int, scale: float | None) -> tuple[float, float]:
    """(samples/s, ledger time ÷ the rest of the epoch) over ``samples`` training samples,
    after a warm-up. Timing the hook itself is robust to a busy machine."""
    led = TimedLedger(power_scale_w=scale)
    tr = Trainer(cfg, ledger=led)
    x, y = tr.data.x_train[: samples + 128], tr.data.y_train[: samples + 128]
    tr.data.x_train, tr.data.y_train = x[:128], y[:128]
    tr.train_epoch()  # warm-up
    tr.data.x_train, tr.data.y_train = x[128:], y[128:]
    led.spent_s = 0.0
    t0 = time.perf_counter()
    tr.train_epoch()
    total = time.perf_counter() - t0
    return samples / total, led.spent_s / (total - led.spent_s)


def main() -> None:
    common = dict(dataset="mnist5k", algorithm="eqprop", variant="centered", augment=0)
    runs = {
        "dhn-1h": (TrainConfig(model="dhn", hidden=[1024], **common), 2000, None),
        "drn-1h": (TrainConfig(model="drn", hidden=[1024], **common), 600, 1e-9),
    }
    for name, (cfg, samples, scale) in runs.items():
        sps, frac = overhead(cfg, samples, scale)
        print(
            json.dumps(
                {
                    "name": f"ledger-overhead-{name}",
                    "samples_per_s_with_ledger": round(sps, 1),
                    "overhead": round(frac, 4),
                    "target_overhead": 0.10,
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
