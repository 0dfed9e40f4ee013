"""``npusim train``: train a network on the simulated chip into a run folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from npusim.cli.options import (
    CliError,
    check_chip_arg,
    config_from_args,
    given_options,
    positive_int,
    set_threads,
)
from npusim.cli.options import add_train_args as add_config_and_run_args

if TYPE_CHECKING:
    from npusim.runtime.config import TrainConfig

__all__ = ["add_train_args", "run_train"]


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Train a network on the simulated chip (default: DHN-1H, centered EqProp, mnist5k)."""
    add_config_and_run_args(p)
    p.add_argument(
        "--nproc",
        type=positive_int,
        help="data-parallel training in N processes (torch.distributed; gloo on CPU): each "
        "relaxes its share of every batch, one all-reduce per step (under torchrun: the "
        "launched ranks)",
    )


def run_train(a: argparse.Namespace) -> int:
    from npusim.cost.constants import drn_power_scale_w
    from npusim.report import report_ledger
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.run import new_run_dir, train_run

    if a.resume and a.out is None:
        raise CliError("--resume needs --out RUN_FOLDER")
    if a.nproc is not None or _under_torchrun():
        return _run_parallel(a)
    if a.seeds is not None:
        return _run_seeds(a)
    given = given_options(a)
    set_threads(a.threads)
    if a.resume:  # the stored configuration; options given must agree with it
        given.pop("epochs", None)
        tr = train_run(
            None,
            a.out,
            resume=True,
            epochs=a.epochs,
            given=given,
            progress=not a.no_progress,
            ledger=Ledger(),  # restored from the checkpoint
        )
    else:
        cfg = config_from_args(a)
        check_chip_arg(cfg.chip)
        out = a.out or new_run_dir(a.runs, cfg)
        scale = drn_power_scale_w(cfg.chip, cfg.input_gain) if cfg.model == "drn" else None
        tr = train_run(cfg, out, progress=not a.no_progress, ledger=Ledger(power_scale_w=scale))
        a.out = out
    best = tr.best
    print(
        f"best validation error {100 * best.val_error:.2f}% at epoch {best.epoch}; "
        f"test error there {100 * best.test_error:.2f}%"
    )
    if tr.ledger is not None and tr.ledger.training_samples > 0:  # none: a run of the Python API
        report_ledger(tr.ledger, a.out, chip=tr.cfg.chip)
    print(f"run folder: {a.out}  (energy claims check: npusim report {a.out} --target-ratio 10000)")
    return 0


def _run_seeds(a: argparse.Namespace) -> int:
    """One run per seed in OUT/seed-S (in parallel processes where the cores allow, ``--jobs``),
    then OUT/results.json with the test error (at each run's best validation epoch) over the
    seeds: mean and sample s.d., with pulses, energy per training sample and lifetimes."""
    import dataclasses

    from npusim.cli.trials import Trial, aggregate, run_trials
    from npusim.runtime.io import atomic_json
    from npusim.runtime.run import new_run_dir

    if a.resume:
        raise CliError("--seeds starts new runs; resume each OUT/seed-S with --resume --out")
    cfg = config_from_args(a)
    check_chip_arg(cfg.chip)
    out = a.out or new_run_dir(a.runs, cfg)
    trials = [
        Trial(f"seed-{s}", dataclasses.replace(cfg, seed=s), out / f"seed-{s}") for s in a.seeds
    ]
    runs = run_trials(
        trials, jobs=a.jobs, threads=a.threads, progress=not a.no_progress, backend=a.backend,
        address=a.address, cpus_per_trial=a.cpus_per_trial,
    )  # fmt: skip
    agg = aggregate(runs)
    ok = [r for r in runs if "error" not in r]
    results = {
        "config": {k: v for k, v in cfg.to_dict().items() if k != "seed"},
        "seeds": list(a.seeds),
        "runs": [r["name"] for r in ok],
        "failed": {r["name"]: r["error"] for r in runs if "error" in r},
        "test_errors": [r["test_error"] for r in ok],
        "val_errors": [r["val_error"] for r in ok],
        "best_epochs": [r["best_epoch"] for r in ok],
        "per_seed": ok,
        **{k: v for k, v in agg.items() if k not in ("seeds", "failed", "best_epochs")},
    }
    atomic_json(results, out / "results.json")
    if ok:
        print(
            f"test error over seeds {','.join(str(r['seed']) for r in ok)}: "
            f"{100 * agg['test_error_mean']:.2f} +- {100 * agg['test_error_std']:.2f}%"
        )
    print(f"runs: {out}/seed-*  summary: {out / 'results.json'}")
    if results["failed"]:
        raise CliError(
            "runs failed: " + "; ".join(f"{k}: {v}" for k, v in results["failed"].items())
        )
    return 0


# ---- data-parallel ----------------------------------------------------------------------------
def _under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _run_parallel(a: argparse.Namespace) -> int:
    """``--nproc N`` (or a torchrun launch): one data-parallel run in N processes, rank 0
    writing the run folder. Spawns the ranks here unless torchrun launched them."""
    from npusim.cli.trials import available_cores
    from npusim.runtime.parallel import spawn
    from npusim.runtime.run import check_fresh, new_run_dir

    if a.seeds is not None:
        raise CliError("--nproc trains one run; train the seeds one after another")
    if a.backend != "local" or a.jobs is not None:
        raise CliError("--backend and --jobs are options of --seeds and sweep, not of --nproc")
    if _under_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if a.nproc is not None and a.nproc != world:
            raise CliError(f"--nproc {a.nproc} under torchrun, which launched {world} processes")
        _train_rank(a)
        return 0
    if a.resume:  # refused here rather than in every rank
        _check_shardable(_stored_config(a.out), a.nproc)
    else:
        cfg = config_from_args(a)
        check_chip_arg(cfg.chip)
        _check_shardable(cfg, a.nproc)
        a.out = a.out or new_run_dir(a.runs, cfg)
        check_fresh(a.out)
    if a.threads is None:
        a.threads = max(1, available_cores() // a.nproc)
    print(f"data-parallel training in {a.nproc} processes, {a.threads} torch thread(s) each")
    spawn(_train_rank, a.nproc, a)
    return 0


def _stored_config(out: Path) -> TrainConfig:
    """The configuration stored in run folder ``out``'s checkpoint."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.run import CHECKPOINT, RunError, load_checkpoint

    if not (out / CHECKPOINT).is_file():
        raise RunError(f"nothing to resume: {out / CHECKPOINT} not found")
    return TrainConfig.from_dict(load_checkpoint(out)["config"])


def _check_shardable(cfg: TrainConfig, world: int) -> None:
    if cfg.batch_size % world:
        raise CliError(
            f"--batch-size {cfg.batch_size} does not split evenly over {world} processes; "
            f"choose a multiple of {world}"
        )
    if cfg.outer_product == "coincidence":
        raise CliError(
            "--outer-product coincidence forms the update in the array sample by sample; it "
            "trains in one process (drop --nproc)"
        )


def _train_rank(a: argparse.Namespace) -> None:
    """One rank of a data-parallel run (in a spawned process or under torchrun)."""
    from npusim.cost.constants import drn_power_scale_w
    from npusim.report import report_ledger
    from npusim.runtime.device import resolve_device
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.parallel import init
    from npusim.runtime.run import train_run

    if a.out is None:
        raise CliError("data-parallel training needs --out RUN_FOLDER (the ranks share it)")
    set_threads(a.threads)
    device = resolve_device(str(getattr(a, "device", None) or "cpu"))  # auto: cuda if seen
    dp = init("nccl" if device.type == "cuda" else "gloo")  # NCCL where the tensors live
    given = given_options(a)
    if a.resume:
        given.pop("epochs", None)
        cfg, epochs = None, a.epochs
        _check_shardable(_stored_config(a.out), dp.world)
        scale = None  # the ledger is restored from the checkpoint
    else:
        cfg, epochs = config_from_args(a), None
        _check_shardable(cfg, dp.world)
        scale = drn_power_scale_w(cfg.chip, cfg.input_gain) if cfg.model == "drn" else None
    ledger = Ledger(power_scale_w=scale) if dp.writer else None  # the work counted once
    tr = train_run(
        cfg, a.out, resume=a.resume, epochs=epochs, given=given if a.resume else None,
        progress=not a.no_progress, ledger=ledger, parallel=dp,
    )  # fmt: skip
    if not dp.same_on_all(tr.model.params()):
        raise CliError("the ranks' weights differ after training; please report this")
    if not dp.writer:
        return
    best = tr.best
    print(
        f"best validation error {100 * best.val_error:.2f}% at epoch {best.epoch}; "
        f"test error there {100 * best.test_error:.2f}% ({dp.world} processes)"
    )
    if tr.ledger is not None and tr.ledger.training_samples > 0:
        report_ledger(tr.ledger, a.out, chip=tr.cfg.chip)
    print(f"run folder: {a.out}")
