"""The energy/time/area summary of a ledger: tables printed, report files written (used by
``npusim train`` and ``npusim report``; the command-line parts live in :mod:`npusim.cli`)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from npusim.cost.baselines import GPUS
from npusim.cost.constants import cost_spec
from npusim.report.report import build_report, write_report
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
    target_compute: float | None = None,
    measure_gpu: bool = False,
    console: Console | None = None,
) -> dict:
    """Build the report of ``ledger``, print its tables, write its files into ``out_dir``.
    ``measure_gpu`` also trains the same MLP by backprop on the local GPU, read through NVML;
    ``target_compute`` adds the compute claims check (:mod:`npusim.cost.compute_claims`)."""
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
        cost_spec(chip),
        gpus=gpu_list(gpu),
        target_ratio=target_ratio,
        target_compute=target_compute,
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
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return rep
