"""``npusim report RUN [--target-ratio R] [--target-compute R]``: energy, time and area of a
finished run, and the energy and compute claims checks."""

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

    p.add_argument(
        "run",
        type=Path,
        help="run folder holding results.json (npusim train) or deploy.json (npusim deploy)",
    )
    p.add_argument(
        "--target-ratio",
        type=float,
        metavar="R",
        help="claims check: what must hold for the NPU to be R times more efficient",
    )
    p.add_argument(
        "--target-compute",
        type=float,
        metavar="R",
        help="compute claims check: throughput against the GPU and the phone NPU at equal area "
        "and equal power, and what R times the GPU's would need (adds compute_claims to "
        "report.json and writes compute_claims.png)",
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
    tc = a.target_compute
    if tc is not None and not (math.isfinite(tc) and tc > 0):
        raise CliError(f"--target-compute must be a finite number > 0, got {tc}")
    if a.measure_gpu:
        import torch

        if not torch.cuda.is_available():
            raise CliError("--measure-gpu needs a CUDA GPU; none is visible")
    if (a.run / "deploy.json").is_file() and not (a.run / "results.json").exists():
        if tc is not None:
            raise CliError(f"{a.run}: --target-compute needs a training run (results.json)")
        return report_deploy(a.run / "deploy.json")
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
            target_compute=tc,
            measure_gpu=a.measure_gpu,
        )
    return 0


def report_deploy(path: Path) -> int:
    """Print the inference bill a ``npusim deploy`` folder holds (``deploy.json``): energy by
    term per inference for each mapping, latency, arrays and area, and the baselines."""
    import json

    from rich.console import Console
    from rich.table import Table

    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        bills = {"one copy of each layer": d["energy"]}
        if "energy_replicated" in d:
            bills["conv arrays replicated"] = d["energy_replicated"]
        terms = list(d["energy"]["energy_j"])
        rows = [
            (name, [float(b["energy_j"][t]) for t in terms], float(b["total_energy_j"]), b)
            for name, b in bills.items()
        ]
        baselines = {k: float(v["total_j"]) for k, v in d["energy"]["baselines"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CliError(f"{path}: not a deploy.json of 'npusim deploy' ({e!r})") from None
    console = Console() if Console().is_terminal else Console(width=140)
    table = Table(title=f"{d.get('model', '?')} on {d.get('chip', '?')}: nJ per inference")
    for col in ("mapping", *terms, "total", "latency", "arrays", "area"):
        table.add_column(col, justify="left" if col == "mapping" else "right")
    for name, energies, total, b in rows:
        table.add_row(
            name,
            *(f"{1e9 * e:.1f}" for e in energies),
            f"{1e9 * total:.1f}",
            f"{1e6 * float(b['latency_s']):.2f} µs",
            str(b["arrays"]),
            f"{1e6 * float(b['total_area_m2']):.2f} mm²",
        )
    console.print(table)
    best = min(total for _, _, total, _ in rows)
    for name, j in baselines.items():
        console.print(f"{name}: {1e9 * j:.1f} nJ per inference ({j / best:.2f}x the chip's best)")
    return 0
