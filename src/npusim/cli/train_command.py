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
