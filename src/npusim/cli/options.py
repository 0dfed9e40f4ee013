"""Options shared by the commands: the ``npusim train`` options generated from
:class:`~npusim.runtime.config.TrainConfig`'s field table, value parsers and checks of user paths.

Every generated option defaults to ``None`` so a command can tell what the user passed
(:func:`given_options`) from what the configuration fills in.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from npusim.core.errors import NpusimError
from npusim.runtime.config import TrainConfig, check_field, flag_of
from npusim.runtime.threads import apply_default_threads

# options of `npusim train` that are not part of the configuration
RUN_OPTIONS = (
    "out", "runs", "resume", "no_progress", "threads", "seeds", "jobs", "backend", "address",
    "cpus_per_trial",
)  # fmt: skip


class CliError(NpusimError):
    """An error to report as one line, without a traceback."""


def int_list(s: str) -> list[int]:
    """``"512,256"`` or ``"512 256"`` -> ``[512, 256]``; a range ``"0-4"`` -> ``[0, 1, 2, 3, 4]``
    (both ends included)."""
    out: list[int] = []
    try:
        for v in s.replace(",", " ").split():
            first, dash, last = v.partition("-")
            if dash and first:  # a range (a leading '-' is a sign)
                out += range(int(first), int(last) + 1)
            else:
                out.append(int(v))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 1024, 512,256 or a range 0-4, got {s!r}"
        ) from None
    return out


def float_list(s: str) -> list[float]:
    """``"0.1,0.05"`` -> ``[0.1, 0.05]``."""
    try:
        return [float(v) for v in s.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 0.1 or 0.1,0.05, got {s!r}"
        ) from None


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}")
    return v


def finite_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def path_arg(s: str) -> Path:
    """A path given on the command line; an empty one is an error (it would mean '.')."""
    if not s.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return Path(s)


def on_off(s: str) -> bool:
    """``on``/``off`` (also ``true``/``false``, ``yes``/``no``, ``1``/``0``)."""
    v = s.strip().lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {s!r}")


_PARSERS: dict[Any, Any] = {
    bool: on_off,
    int: int,
    float: float,
    str: str,
    "ints": int_list,
    "floats": float_list,
}


def _default_text(f) -> str:
    if f.metadata["default_text"]:
        return f.metadata["default_text"]
    if f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        value = f.default
    if value is None:
        return "per model" if f.name != "data_dir" else "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field: its flag, parser, choices and help (with
    unit, range and default) all come from the field's metadata."""
    from npusim.runtime.config import allowed

    for f in fields(TrainConfig):
        m = f.metadata
        rng = "" if m["choices"] or m["kind"] is str else f"; {allowed(f, unit=False)}"
        unit = f", {m['unit']}" if m["unit"] else ""
        help_text = f"{m['help']}{unit} (default: {_default_text(f)}{rng})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "type": _PARSERS[m["kind"]], "default": None}
        if m["choices"]:
            kwargs["choices"] = m["choices"]
        if m["kind"] in ("ints", "floats"):
            kwargs["metavar"] = "N[,N...]" if m["kind"] == "ints" else "X[,X...]"
        if m["kind"] is bool:  # --flip alone means on
            kwargs.update(nargs="?", const=True, metavar="on|off")
        p.add_argument(flag_of(f), help=help_text, **kwargs)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Train a network on the simulated chip (default: DHN-1H, centered EqProp, mnist5k)."""
    add_config_options(p)
    p.add_argument("--out", type=path_arg, help="run folder (default: a new one under --runs)")
    p.add_argument("--runs", type=path_arg, default=Path("runs"), help="where new run folders go")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)"
    )
    p.add_argument(
        "--seeds",
        type=seed_list,
        help="seeds, e.g. 0,1,2: one run per seed in OUT/seed-S, and OUT/results.json with "
        "the test error's mean and s.d. (fractions) over the seeds",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        help="runs at once in separate processes for --seeds and sweep (default: as many as "
        "the CPU cores allow; torch threads are shared out between them)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where the runs of --seeds and sweep run: local processes (--jobs) or one Ray task "
        "each (pip install npusim[ray]; default: local)",
    )
    p.add_argument(
        "--address",
        help="with --backend ray: the Ray cluster to use, e.g. 10.0.0.1:6379 or auto (default: "
        "a local Ray started for the runs)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=positive_int,
        help="with --backend ray: CPUs each run reserves and uses as torch threads (default: 1)",
    )


def seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]: distinct seeds in [0, 2**32 - 1]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= s < 2**32 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds in [0, 2**32 - 1], got {text!r}")
    return seeds


def given_options(a: argparse.Namespace) -> dict[str, Any]:
    """The configuration options the user passed (each checked against its row of the table)."""
    given = {}
    for f in fields(TrainConfig):
        value = getattr(a, f.name, None)
        if value is not None:
            check_field(f, value)
            given[f.name] = value
    return given


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The resolved, validated configuration the options describe."""
    return TrainConfig(**given_options(a)).resolved()


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (``--threads``), or when None the default counted from the
    cores other processes leave free (:func:`npusim.runtime.threads.apply_default_threads`);
    returns the count."""
    return apply_default_threads(threads)


def check_chip_arg(chip: str | None) -> None:
    """A chip given as a file must be readable UTF-8 TOML that defines at least a ``[device]``
    table (an empty file would otherwise train on defaults); presets pass through."""
    if not chip:
        return
    path = Path(chip)
    if path.suffix != ".toml" and "/" not in chip:
        return  # a preset name: the chip loader checks it
    if not path.is_file():
        raise CliError(f"chip file '{path}': not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"chip file '{path}' is not a UTF-8 text (TOML) file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CliError(f"chip file '{path}': not valid TOML ({e})") from None
    if not isinstance(data.get("device"), dict):
        raise CliError(
            f"chip file '{path}' defines no [device] table; start from a preset "
            "(e.g. src/npusim/chip/presets/rram.toml)"
        )
