"""``npusim report RUN [--target-ratio R]``: energy, time and area of a finished run."""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path

from npusim.cli.options import CliError, check_chip_arg

__all__ = ["add_report_args", "run_report"]


def add_report_args(p: argparse.ArgumentParser) -> None:
    """Energy, time and area of a finished run next to a GPU and a phone NPU."""
    from npusim.cost.baselines import GPUS

    p.add_argument("run", type=Path, help="run folder holding results.json")
    p.add_argument(
        "--target-ratio",
        type=float,
        metavar="R",
        help="claims check: what must hold for the NPU to be R times more efficient",
    )
    p.add_argument("--gpu", choices=list(GPUS), default="h100", help="reference GPU")
    p.add_argument("--chip", help="chip preset or TOML for the costs (default: the run's chip)")
    p.add_argument(
        "--measure-gpu",
        action="store_true",
        help="also train the same MLP by backprop on this machine's GPU, energy read via NVML",
    )
    p.add_argument("--no-files", action="store_true", help="print only; write no files")


def run_report(a: argparse.Namespace) -> int:
    from npusim.report import report_ledger
    from npusim.runtime.io import RunLock
    from npusim.runtime.run import read_ledger

    if a.target_ratio is not None and not (math.isfinite(a.target_ratio) and a.target_ratio > 0):
        raise CliError(f"--target-ratio must be a finite number > 0, got {a.target_ratio}")
    if a.measure_gpu:
        import torch

        if not torch.cuda.is_available():
            raise CliError("--measure-gpu needs a CUDA GPU; none is visible")
    ledger, results = read_ledger(a.run)
    if ledger.training_samples == 0:
        raise CliError(f"{a.run / 'results.json'}: its ledger counts no training sample")
    chip = a.chip or results.get("config", {}).get("chip")
    check_chip_arg(chip)
    with contextlib.nullcontext() if a.no_files else RunLock(a.run):  # writes into the run
        report_ledger(
            ledger,
            None if a.no_files else a.run,
            chip=chip,
            gpu=a.gpu,
            target_ratio=a.target_ratio,
            measure_gpu=a.measure_gpu,
        )
    return 0
