"""``npusim report RUN [--target-ratio R]`` and the energy table printed after training."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from npusim.cost.baselines import GPUS
from npusim.cost.constants import chip_constants
from npusim.report.report import build_report, load_run_ledger, write_report
from npusim.report.table import print_report
from npusim.runtime.ledger import Ledger


def gpu_list(first: str) -> list:
    if first not in GPUS:
        raise ValueError(f"unknown GPU preset {first!r}; choose one of {', '.join(GPUS)}")
    return [GPUS[first], *(g for k, g in GPUS.items() if k != first)]


def report_ledger(
    ledger: Ledger,
    out_dir: str | Path | None,
    *,
    chip: str | None = None,
    gpu: str = "h100",
    target_ratio: float | None = None,
    measure_gpu: bool = False,
    console: Console | None = None,
) -> dict:
    """Build the report of ``ledger``, print its tables, write its files into ``out_dir``.
    ``measure_gpu`` also trains the same MLP by backprop on the local GPU, read through NVML."""
    measured = None
    if measure_gpu:
        import torch

        from npusim.cost.baselines import measure_backprop_training

        updates = ledger.count("updates", "update")
        batch = max(1, round(ledger.training_samples / updates)) if updates else 64
        sizes = ledger.logical_sizes or ledger.sizes
        measured = measure_backprop_training(sizes, batch=batch)
        measured["name"] = torch.cuda.get_device_name()
    rep = build_report(
        ledger,
        chip_constants(chip),
        gpus=gpu_list(gpu),
        target_ratio=target_ratio,
        measured_gpu=measured,
    )
    rep["chip"] = chip
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: wide enough for the tables
            console = Console(width=120)
    print_report(rep, console)
    if out_dir is not None:
        paths = write_report(rep, out_dir)
        console.print(f"wrote {paths['json']} and {paths['png']}")
    return rep


def add_report_args(p: argparse.ArgumentParser) -> None:
    """Energy, time and area of a finished run next to a GPU and a phone NPU."""
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
    ledger, results = load_run_ledger(a.run)
    chip = a.chip or results.get("config", {}).get("chip")
    if a.target_ratio is not None and not a.target_ratio > 0:
        raise ValueError(f"--target-ratio must be > 0, got {a.target_ratio}")
    report_ledger(
        ledger,
        None if a.no_files else a.run,
        chip=chip,
        gpu=a.gpu,
        target_ratio=a.target_ratio,
        measure_gpu=a.measure_gpu,
    )
    return 0
