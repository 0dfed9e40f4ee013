"""The ``npusim`` command: ``npusim train`` (more subcommands register in :data:`COMMANDS`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from npusim.cli.chip_commands import CHIP_COMMANDS
from npusim.core.errors import NpusimError
from npusim.data.datasets import DATASETS
from npusim.learning.estimators import ALGORITHMS, VARIANTS
from npusim.report.command import add_report_args, run_report
from npusim.runtime.config import MODELS, TrainConfig

# name -> (add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


class CliError(NpusimError):
    """An error to report as one line, without a traceback."""


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 1024 or 512,256, got {s!r}"
        ) from None


def _float_list(s: str) -> list[float]:
    try:
        return [float(v) for v in s.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 0.1 or 0.1,0.05, got {s!r}"
        ) from None


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Train a network on the simulated chip (default: DHN-1H, centered EqProp, mnist5k)."""
    d = TrainConfig()
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    p.add_argument("--data-dir", help="folder with IDX files (mnist, fashion-mnist)")
    p.add_argument("--model", choices=MODELS, default=d.model)
    p.add_argument("--hidden", type=_int_list, default=d.hidden, help="hidden sizes, e.g. 1024")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=d.algorithm)
    p.add_argument("--variant", choices=VARIANTS, default=d.variant, help="EqProp nudging")
    p.add_argument("--beta", type=float, help="nudging strength β (default: per model)")
    p.add_argument("--sweeps", type=int, help="relaxation sweeps per phase (default: per model)")
    p.add_argument("--free-sweeps", type=int, help="sweeps of the free phase and inference")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=_float_list, dest="lrs", help="learning rate(s), one per layer")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--lr-decay", type=float, help="learning-rate factor per epoch")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--input-gain", type=float, default=d.input_gain, help="DRN input gain")
    p.add_argument(
        "--diode",
        choices=("ideal", "shockley"),
        default=d.diode,
        help="DRN diodes: ideal, or Shockley (Is 1e-12 A, n 1, 27 °C)",
    )
    p.add_argument("--augment", type=int, help="random shift in pixels (default 1; digits 0)")
    p.add_argument("--out", type=Path, help="run folder (default: a new one under --runs)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where new run folders go")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument(
        "--chip", default=d.chip, help="chip preset (ideal, rram, pcm, ecram) or a .toml file"
    )


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        dataset=a.dataset,
        data_dir=a.data_dir,
        model=a.model,
        hidden=a.hidden,
        algorithm=a.algorithm,
        variant=a.variant,
        beta=a.beta,
        sweeps=a.sweeps,
        free_sweeps=a.free_sweeps,
        batch_size=a.batch_size,
        lrs=a.lrs,
        momentum=a.momentum,
        lr_decay=a.lr_decay,
        weight_decay=a.weight_decay,
        epochs=a.epochs,
        seed=a.seed,
        input_gain=a.input_gain,
        diode=a.diode,
        augment=a.augment,
        chip=a.chip,
    )
    if cfg.lrs is not None and len(cfg.lrs) == 1:
        cfg.lrs = cfg.lrs * (len(cfg.hidden) + 1)
    return cfg.resolved()


def run_train(a: argparse.Namespace) -> int:
    from npusim.cost.constants import drn_power_scale_w
    from npusim.report.command import report_ledger
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.run import new_run_dir, train_run

    if a.resume and a.out is None:
        raise CliError("--resume needs --out RUN_FOLDER")
    if a.threads is not None:
        if a.threads < 1:
            raise CliError(f"--threads must be >= 1, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)
    cfg = config_from_args(a)
    out = a.out or new_run_dir(a.runs, cfg)
    scale = drn_power_scale_w(cfg.chip, cfg.input_gain) if cfg.model == "drn" else None
    ledger = Ledger(power_scale_w=scale)  # a resumed run restores the saved counts
    tr = train_run(
        cfg, out, resume=a.resume, epochs=a.epochs, progress=not a.no_progress, ledger=ledger
    )
    best = tr.best
    print(
        f"best validation error {100 * best.val_error:.2f}% at epoch {best.epoch}; "
        f"test error there {100 * best.test_error:.2f}%"
    )
    report_ledger(tr.ledger, out, chip=tr.cfg.chip)
    print(f"run folder: {out}  (energy claims check: npusim report {out} --target-ratio 10000)")
    return 0


COMMANDS["train"] = (add_train_args, run_train)
COMMANDS.update(CHIP_COMMANDS)  # eval (after drift), sweep (one chip parameter)
COMMANDS["report"] = (add_report_args, run_report)  # energy, time, area; claims check


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line (``npusim: error: …``) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"npusim: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npusim", description="Simulate an analog NPU that learns on the chip.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=(add.__doc__ or name).strip().splitlines()[0]))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; every expected failure is one ``npusim: error: ...`` line and exit code 2."""
    from npusim.circuits.layered import RelaxationDiverged

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["train"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][1](args)
    except RelaxationDiverged as e:
        print(f"npusim: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("npusim: interrupted; the last checkpoint is intact (use --resume)", file=sys.stderr)
        return 130
    except (CliError, ValueError, OSError, RuntimeError) as e:
        print(f"npusim: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
