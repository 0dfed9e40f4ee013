"""``npusim train``: train a network on the simulated chip into a run folder."""

from __future__ import annotations

import argparse

from npusim.cli.options import (
    CliError,
    add_train_args,
    check_chip_arg,
    config_from_args,
    given_options,
    set_threads,
)

__all__ = ["add_train_args", "run_train"]


def run_train(a: argparse.Namespace) -> int:
    from npusim.cost.constants import drn_power_scale_w
    from npusim.report import report_ledger
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.run import new_run_dir, train_run

    if a.resume and a.out is None:
        raise CliError("--resume needs --out RUN_FOLDER")
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
