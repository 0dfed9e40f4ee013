"""Hybrid networks: one deep energy-based block against the same layers split into blocks.

Nest & Ernoult (NeurIPS 2024) split a deep Hopfield network into energy-based blocks chained
by backprop and report simulating it up to 4× faster without losing accuracy: a shallow block
settles in fewer sweeps than a deep one, and a one-layer block is exact in one sweep.

Lines (JSON), side by side in one run, on mnist5k (the first ``SAMPLES`` training images as
they are, one epoch after a warm-up), centered chained BP–EP, batch 16, β = 0.2, every
relaxation stopped once no unit moves by more than ``TOL`` (cap ``CAP`` sweeps) so each block
runs the sweeps it needs:

* ``hybrid-dhn-3h``: 784-512-512-512-10 as one block; ``…-split2`` as two blocks of two layers;
  ``…-split4`` as four one-layer blocks. Each prints samples/s, the mean sweeps a block ran per
  relaxation and ``speedup`` (samples/s ÷ the one block's);
* ``hybrid-mnist-conv-1block``: ``conv32k5-apool-conv64k5-apool-fc10``, the convolutional
  layers as one block (average pooling inside it); ``…-avg``: the same layers split into three
  one-layer blocks by digital average pooling; ``hybrid-mnist-conv``: the same layers with
  max pooling (the README's network without its dense hidden block). ``speedup`` against the
  one block.
"""

from __future__ import annotations

import json
import time

import torch

from npusim.runtime.config import TrainConfig
from npusim.runtime.train import Trainer

SAMPLES = 1024
TOL = 1e-3  # the trainer's convergence tolerance (npusim.runtime.train.CONVERGE_TOL)
CAP = 60


def epoch(arch: str) -> tuple[float, float]:
    """(samples/s, mean sweeps per block relaxation) of one training epoch of ``arch``."""
    cfg = TrainConfig(  # no augmentation: the hybrid's default rotations and zooms off too
        model="hybrid", arch=arch, sweeps=CAP, augment=0, rotate=0.0, zoom=0.0, seed=0
    )
    tr = Trainer(cfg)
    tr.estimator.tol = TOL  # type: ignore[attr-defined]
    x, y = tr.data.x_train, tr.data.y_train
    tr.data.x_train, tr.data.y_train = x[:128], y[:128]
    tr.train_epoch()  # warm-up
    tr.data.x_train, tr.data.y_train = x[128 : 128 + SAMPLES], y[128 : 128 + SAMPLES]
    sweeps = relaxations = 0
    step = tr.step

    def counted(xb, yb):
        nonlocal sweeps, relaxations
        est = step(xb, yb)
        for phases in est.blocks or [est.phases]:
            for rel in phases.values():
                sweeps, relaxations = sweeps + rel.sweeps, relaxations + 1
        return est

    tr.step = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    tr.train_epoch()
    return SAMPLES / (time.perf_counter() - t0), sweeps / max(relaxations, 1)


def compare(archs: tuple[str, ...]) -> None:
    """One line per architecture, its speed-up against the first."""
    base = None
    for arch in archs:
        sps, sweeps = epoch(arch)
        base = base or sps
        _emit(
            name=f"hybrid-{arch}",
            samples_per_s=round(sps, 1),
            mean_sweeps_per_block=round(sweeps, 1),
            speedup=round(sps / base, 2),
            threads=torch.get_num_threads(),
        )


def main() -> None:
    compare(("dhn-3h", "dhn-3h-split2", "dhn-3h-split4"))
    compare(("mnist-conv-1block", "mnist-conv-avg", "mnist-conv"))


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


if __name__ == "__main__":
    main()
