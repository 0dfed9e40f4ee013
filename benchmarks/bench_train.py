"""EqProp training throughput (samples/s) on mnist5k and the machine's float32 matmul peak.

Configurations (centered EqProp, phases free / +β / −β):
* DHN-1H: 784-1024-10, batch 16, 15 sweeps per phase, β = 0.2;
* DRN-1H: 2×784 inputs, 1024 hidden, 10 outputs, batch 4, 4 sweeps per phase, β = 1.0,
  input gain 480.
Each line is one JSON object with ``name``, ``threads`` and ``samples_per_s`` (or
``gflop_per_s``), measured with 1 torch thread and with all cores in the same run: the
relaxation is many small operations, so extra threads pay only for the large products and
cost a great deal when the cores are shared with other work.

Then one ``train-<config>-busy-neighbour`` line per configuration: the default thread choice
(:func:`npusim.runtime.threads.apply_default_threads`, from the cores free when it is made)
measured without and then with a busy-loop process pinned to one core beside it, side by side:
``samples_per_s`` and ``threads`` beside the neighbour, ``idle_samples_per_s`` and
``idle_threads`` without it (idle of our neighbour only: other jobs on the machine still count,
``free_cores`` says what each choice saw), ``ratio_busy_to_idle``, and
``all_cores_samples_per_s``: all cores beside the neighbour, the collapse the default avoids.
"""

from __future__ import annotations

import json
import os
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.threads import apply_default_threads, busy_neighbour, free_cores
from npusim.runtime.train import Trainer

TARGETS = {"dhn-1h": 6000.0, "drn-1h": 1200.0}


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` float32 GFLOP/s of an n×n by n×n matrix product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def training_throughput(cfg: TrainConfig, samples: int) -> float:
    """Samples/s of the training step (relaxations, gradient estimate, update) over ``samples``
    samples of the training split, after a warm-up."""
    tr = Trainer(cfg)
    tr.data.x_train = tr.data.x_train[: samples + 256]
    tr.data.y_train = tr.data.y_train[: samples + 256]
    full_x, full_y = tr.data.x_train, tr.data.y_train
    tr.data.x_train, tr.data.y_train = full_x[:256], full_y[:256]
    tr.train_epoch()  # warm-up
    tr.data.x_train, tr.data.y_train = full_x[256:], full_y[256:]
    _, sps = tr.train_epoch()
    return sps


def configurations() -> dict[str, TrainConfig]:
    common = dict(dataset="mnist5k", algorithm="eqprop", variant="centered", augment=0)
    return {
        "dhn-1h": TrainConfig(
            model="dhn", hidden=[1024], batch_size=16, sweeps=15, beta=0.2, **common
        ),
        "drn-1h": TrainConfig(
            model="drn", hidden=[1024], batch_size=4, sweeps=4, beta=1.0, input_gain=480.0, **common
        ),
    }


SAMPLES = {"dhn-1h": 3000, "drn-1h": 1200}


def main() -> None:
    runs = configurations()
    cores = os.cpu_count() or 1
    for threads in sorted({1, min(2, cores), cores}):
        torch.set_num_threads(threads)
        _emit(name="matmul-f32-2048", gflop_per_s=round(matmul_peak(), 1), threads=threads)
        for name, cfg in runs.items():
            sps = training_throughput(cfg, SAMPLES[name])
            _emit(
                name=f"train-{name}",
                samples_per_s=round(sps, 1),
                threads=threads,
                target_samples_per_s=TARGETS[name],
                ratio_to_target=round(sps / TARGETS[name], 2),
            )

    for name, cfg in runs.items():
        busy_neighbour_line(name, cfg, cores)


def busy_neighbour_line(name: str, cfg: TrainConfig, cores: int) -> None:
    """The default thread choice's samples/s without and with a busy-loop neighbour (and all
    cores with it, on fewer samples: the collapse can be 30x)."""
    idle_free = round(free_cores(), 2)
    idle_threads = apply_default_threads(None)
    idle = training_throughput(cfg, SAMPLES[name])
    with busy_neighbour():
        busy_free = round(free_cores(), 2)
        threads = apply_default_threads(None)
        busy = training_throughput(cfg, SAMPLES[name])
        torch.set_num_threads(cores)
        all_cores = training_throughput(cfg, SAMPLES[name] // 10)
    _emit(
        name=f"train-{name}-busy-neighbour",
        samples_per_s=round(busy, 1),
        threads=threads,
        free_cores=busy_free,
        idle_samples_per_s=round(idle, 1),
        idle_threads=idle_threads,
        idle_free_cores=idle_free,
        ratio_busy_to_idle=round(busy / idle, 2),
        all_cores_samples_per_s=round(all_cores, 1),
        all_cores_threads=cores,
    )


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


if __name__ == "__main__":
    main()
