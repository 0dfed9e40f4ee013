"""EqProp training throughput (samples/s) on mnist5k and the machine's float32 matmul peak.

Configurations (centered EqProp, phases free / +β / −β):
* DHN-1H: 784-1024-10, batch 16, 15 sweeps per phase, β = 0.2;
* DRN-1H: 2×784 inputs, 1024 hidden, 10 outputs, batch 4, 4 sweeps per phase, β = 1.0,
  input gain 480.
Each line is one JSON object with ``name``, ``threads`` and ``samples_per_s`` (or
``gflop_per_s``); ``samples_per_s`` is the median of three passes over the samples on one
trainer after a warm-up, ``samples_per_s_range`` their [min, max]. Measured with 1 torch
thread and with all cores in the same run: the relaxation is many small operations, so extra
threads pay only for the large products and cost a great deal when the cores are shared with
other work.

Each ``train-<config>`` line also carries ``gflop_per_s``, the useful floating-point work of
the training step per second, and ``fraction_of_peak``, that rate over the float32 matmul peak
measured in the same run at the same thread count (the ``matmul-f32-2048`` line just before).
Useful work of one step on a batch of B samples, layer sizes ``n_0 .. n_L`` (physical: the
DRN's input layer is 2 × 784), S sweeps per phase (the free phase ``S_f``), centered EqProp
(free phase on B rows, the ±β phases side by side on 2B rows), counted as dense products
(2 FLOPs per multiply-add; elementwise work not counted)::

    F = 2·B·n_0·n_1                                   input drive, shared by the phases
      + 4·(B·S_f + 2B·S)·Σ_{k=1}^{L−1} n_k·n_{k+1}    each sweep: every inner weight read
                                                      twice (drive of layer k+1 and of k)
      + 2·r_0·n_0·n_1 + Σ_{k=1}^{L−1} 2·r_k·n_k·n_{k+1}   the rank-r weight updates

with update ranks ``r_0 = B`` and ``r_k = 2B`` (the DHN's outer products), ``B + 1`` and
``2B + 2`` for the DRN (its ΔV² row and column terms). ``gflop_per_s = F / B · samples_per_s``.
(The fused relaxation skips zero inputs in the input drive; F still counts them.)

Then one ``train-<config>-busy-neighbour`` line per configuration: the default thread choice
(:func:`npusim.runtime.threads.apply_default_threads`, from the cores free when it is made)
measured without and then with a busy-loop process pinned to one core beside it, side by side:
``samples_per_s`` and ``threads`` beside the neighbour, ``idle_samples_per_s`` and
``idle_threads`` without it (idle of our neighbour only: other jobs on the machine still count,
``free_cores`` says what each choice saw), ``ratio_busy_to_idle``, and
``all_cores_samples_per_s``: all cores beside the neighbour, the collapse the default avoids.

``--device cuda`` measures on the GPU instead (``--device auto``: the CPU lines, then the GPU's):
``matmul-f32-8192-cuda`` (the GPU's float32 matmul peak), then ``train-<config>-cuda`` for the
ideal chip and ``train-dhn-1h-rram-cuda`` for a device chip (the torch programming kernel),
with ``gpu`` naming the device. Without CUDA one ``cuda-skipped`` line says why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.threads import apply_default_threads, busy_neighbour, free_cores
from npusim.runtime.train import Trainer

TARGETS = {"dhn-1h": 12000.0, "drn-1h": 3000.0}  # samples/s on 2 threads, idle machine


def matmul_peak(n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """Best-of-``reps`` float32 GFLOP/s of an n×n by n×n matrix product on ``device``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = min(_timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def training_throughput(cfg: TrainConfig, samples: int, repeats: int = 1) -> list[float]:
    """Samples/s of the training step (relaxations, gradient estimate, update) over ``samples``
    samples of the training split, after a warm-up: one figure per pass, ``repeats`` passes."""
    tr = Trainer(cfg)
    tr.data.x_train = tr.data.x_train[: samples + 256]
    tr.data.y_train = tr.data.y_train[: samples + 256]
    full_x, full_y = tr.data.x_train, tr.data.y_train
    tr.data.x_train, tr.data.y_train = full_x[:256], full_y[:256]
    tr.train_epoch()  # warm-up
    tr.data.x_train, tr.data.y_train = full_x[256:], full_y[256:]
    return [tr.train_epoch()[1] for _ in range(repeats)]


def median_and_range(rates: list[float]) -> tuple[float, list[float]]:
    """The median of ``rates`` and their [min, max], rounded."""
    return round(statistics.median(rates), 1), [round(min(rates), 1), round(max(rates), 1)]


def step_flops(cfg: TrainConfig, sizes: list[int]) -> float:
    """Useful FLOPs of one training step (centered EqProp) on a batch: the module docstring's
    F, for physical layer sizes ``sizes``."""
    b, s = cfg.batch_size, cfg.sweeps
    s_free = cfg.free_sweeps or s
    inner = sum(a * c for a, c in zip(sizes[1:-1], sizes[2:], strict=True))
    extra = 1 if cfg.model == "drn" else 0  # the DRN's ΔV² row/column terms
    drive = 2 * b * sizes[0] * sizes[1]
    sweeps = 4 * (b * s_free + 2 * b * s) * inner
    update = 2 * (b + extra) * sizes[0] * sizes[1] + 2 * (2 * b + 2 * extra) * inner
    return float(drive + sweeps + update)


def physical_sizes(cfg: TrainConfig) -> list[int]:
    """Layer sizes of the configuration's network (the DRN duplicates its inputs)."""
    return list(Trainer(cfg).model.sizes)


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
REPEATS = 3  # passes per figure: its median, and their range (the host's speed drifts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    device = parser.parse_args().device
    if device in ("cpu", "auto"):
        cpu_lines()
    if device in ("cuda", "auto"):
        cuda_lines()


def cuda_lines() -> None:
    """The GPU's matmul peak and the configurations' samples/s on it (torch's own threads)."""
    if not torch.cuda.is_available():
        why = f"CUDA is not available on this machine (torch {torch.__version__})"
        _emit(name="cuda-skipped", reason=why)
        return
    gpu = torch.cuda.get_device_name()
    peak = matmul_peak(8192, device="cuda")
    _emit(name="matmul-f32-8192-cuda", gflop_per_s=round(peak, 1), gpu=gpu)
    runs = {name: replace(cfg, device="cuda") for name, cfg in configurations().items()}
    runs["dhn-1h-rram"] = replace(runs["dhn-1h"], chip="rram")
    for name, cfg in runs.items():
        flops = step_flops(cfg, physical_sizes(cfg))
        sps, spread = median_and_range(
            training_throughput(cfg, SAMPLES[name.removesuffix("-rram")], REPEATS)
        )
        rate = flops / cfg.batch_size * sps / 1e9
        _emit(
            name=f"train-{name}-cuda",
            samples_per_s=sps,
            samples_per_s_range=spread,
            gpu=gpu,
            gflop_per_s=round(rate, 2),
            fraction_of_peak=round(rate / peak, 4),
        )


def cpu_lines() -> None:
    runs = configurations()
    flops = {name: step_flops(cfg, physical_sizes(cfg)) for name, cfg in runs.items()}
    cores = os.cpu_count() or 1
    for threads in sorted({1, min(2, cores), cores}):
        torch.set_num_threads(threads)
        peak = matmul_peak()
        _emit(name="matmul-f32-2048", gflop_per_s=round(peak, 1), threads=threads)
        for name, cfg in runs.items():
            sps, spread = median_and_range(training_throughput(cfg, SAMPLES[name], REPEATS))
            rate = flops[name] / cfg.batch_size * sps / 1e9
            _emit(
                name=f"train-{name}",
                samples_per_s=sps,
                samples_per_s_range=spread,
                threads=threads,
                target_samples_per_s=TARGETS[name],
                ratio_to_target=round(sps / TARGETS[name], 2),
                gflop_per_s=round(rate, 2),
                mflop_per_step=round(flops[name] / 1e6, 2),
                fraction_of_peak=round(rate / peak, 3),
            )

    for name, cfg in runs.items():
        busy_neighbour_line(name, cfg, cores)


def busy_neighbour_line(name: str, cfg: TrainConfig, cores: int) -> None:
    """The default thread choice's samples/s without and with a busy-loop neighbour (and all
    cores with it, on fewer samples: the collapse can be 30x)."""
    idle_free = round(free_cores(), 2)
    idle_threads = apply_default_threads(None)
    idle = statistics.median(training_throughput(cfg, SAMPLES[name], REPEATS))
    with busy_neighbour():
        busy_free = round(free_cores(), 2)
        threads = apply_default_threads(None)
        busy = statistics.median(training_throughput(cfg, SAMPLES[name], REPEATS))
        torch.set_num_threads(cores)
        all_cores = training_throughput(cfg, SAMPLES[name] // 10)[0]
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
