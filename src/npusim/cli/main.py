"""The ``npusim`` command. A command is one module in ``cli/`` with ``add_*_args(parser)`` (its
docstring's first line is the help) and ``run_*(args) -> exit code``, plus one entry in
:data:`COMMANDS`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from npusim.cli.chip_commands import add_eval_args, add_sweep_args, run_eval, run_sweep
from npusim.cli.deploy_command import add_deploy_args, run_deploy
from npusim.cli.edge_command import add_edge_args, run_edge
from npusim.cli.lm_commands import (
    add_generate_args,
    add_lm_eval_args,
    add_lm_train_args,
    run_generate,
    run_lm_eval,
    run_lm_train,
)
from npusim.cli.options import CliError
from npusim.cli.report_command import add_report_args, run_report
from npusim.cli.train_command import add_train_args, run_train
from npusim.core.errors import NpusimError

__all__ = ["COMMANDS", "CliError", "build_parser", "main"]

Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

# name -> (add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, Command] = {
    "train": (add_train_args, run_train),
    "eval": (add_eval_args, run_eval),  # a trained run after drift
    "sweep": (add_sweep_args, run_sweep),  # one chip parameter varied
    "report": (add_report_args, run_report),  # energy, time, area; claims check
    "deploy": (add_deploy_args, run_deploy),  # a PyTorch model on the chip for inference
    "lm-train": (add_lm_train_args, run_lm_train),  # a character-level GPT, digital and HWA
    "generate": (add_generate_args, run_generate),  # text from the GPT on the chip, J/token
    "lm-eval": (add_lm_eval_args, run_lm_eval),  # the GPT's loss on the chip after drift
    "edge": (add_edge_args, run_edge),  # a trained chip learning in the field, on a power budget
}


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _os_error(e: OSError) -> str:
    """An OS error on a user's path as one line that names the path."""
    what = e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: {' -> '.join(paths)}" if paths else _one_line(str(e)) or what


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"npusim: warning: {_one_line(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point. A user error (:class:`NpusimError`, or an OS error on a path) is one
    ``npusim: error: ...`` line and exit code 2; any other exception is a bug and shows its
    traceback. From the command line, warnings are one ``npusim: warning: ...`` line each."""
    if argv is None:  # the console script (a caller's warnings settings stay theirs)
        warnings.showwarning = _warning_line
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
    except NpusimError as e:
        print(f"npusim: error: {_one_line(str(e))}", file=sys.stderr)
    except OSError as e:
        print(f"npusim: error: {_os_error(e)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("npusim: interrupted; the last checkpoint is intact (use --resume)", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
