"""``npusim eval`` (a trained run read back after drift) and ``npusim sweep`` (one device
parameter varied, test error against it)."""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
from pathlib import Path

from npusim.cli.options import (
    CliError,
    add_train_args,
    check_chip_arg,
    config_from_args,
    set_threads,
)

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 3.15576e7}


def parse_duration(text: str) -> float:
    """'1h', '30 min', '1d', '1y' (365.25 d), '10s' or a number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*", text)
    if m is None or m.group(2) not in ("", *_UNITS):
        raise argparse.ArgumentTypeError(
            f"expected a time like 1h, 1d, 1y, 30min or 10s, got {text!r}"
        )
    seconds = float(m.group(1)) * _UNITS.get(m.group(2), 1.0)
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"expected a finite time, got {text!r}")
    return seconds


def labelled_duration(text: str) -> tuple[str, float]:
    """('1d', 86400.0): a time after programming with the label the user wrote."""
    return text, parse_duration(text)


def add_after_option(p: argparse.ArgumentParser, defaults: tuple[str, ...]) -> None:
    """``--after TIME …``: times after programming, as (label, seconds) pairs."""
    p.add_argument(
        "--after",
        nargs="+",
        type=labelled_duration,
        default=[labelled_duration(t) for t in defaults],
        metavar="TIME",
        help=f"times after programming, e.g. 1h 1d 1y (default: {' '.join(defaults)})",
    )


def _value(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


# ---- eval -----------------------------------------------------------------------------
def add_eval_args(p: argparse.ArgumentParser) -> None:
    """Evaluate a trained run on a chip after conductance drift (e.g. --after 1h 1d 1y)."""
    p.add_argument("run", type=Path, help="run folder written by 'npusim train'")
    p.add_argument("--chip", help="chip preset or .toml (default: the chip the run trained on)")
    add_after_option(p, ("0s", "1h", "1d", "1y"))
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--seed", type=int, default=0, help="seed of the read noise")


def run_eval(a: argparse.Namespace) -> int:
    import torch

    from npusim.chip import load_chip
    from npusim.devices import IdealSynapses
    from npusim.runtime.config import SEED_MAX
    from npusim.runtime.io import RunLock, atomic_json
    from npusim.runtime.run import CHECKPOINT, EVAL, RunError, read_eval, resume_trainer

    if not 0 <= a.seed <= SEED_MAX:
        raise CliError(f"--seed must be in [0, {SEED_MAX}], got {a.seed}")
    if not (a.run / CHECKPOINT).is_file():
        raise RunError(f"{a.run} is not a run folder of 'npusim train' (no {CHECKPOINT})")
    check_chip_arg(a.chip)
    times = a.after
    with RunLock(a.run):
        old = read_eval(a.run)  # a damaged eval.json is refused before any work
        tr, _, _ = resume_trainer(a.run)
        cfg = tr.cfg
        chip = a.chip or cfg.chip
        params = tr.model.params()
        if tr.synapses is None or chip != cfg.chip:  # program the trained weights onto a chip
            tr.put_on_chip(load_chip(chip))
        syn = tr.synapses or IdealSynapses(params, tr.model.signed)  # exact on an ideal chip
        programmed = [p.clone() for p in params]
        rows = []
        for label, seconds in times:
            syn.read(seconds, torch.Generator().manual_seed(a.seed), out=params)
            err = tr.evaluate(a.split)
            rows.append({"after": label, "seconds": seconds, f"{a.split}_error": err})
            print(f"{chip}: after {label:>6}  {a.split} error {100 * err:6.2f}%", flush=True)
        for p, q in zip(params, programmed, strict=True):
            p.copy_(q)
        path = a.run / EVAL
        old[chip] = {"chip": load_chip(chip).name, "split": a.split, "results": rows}
        atomic_json(old, path)
    print(f"wrote {path}")
    return 0


# ---- sweep ----------------------------------------------------------------------------
def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Train once per value of one chip parameter; table and plot of test error against it."""
    add_train_args(p)
    p.add_argument("--param", required=True, help="dotted chip key, e.g. device.n_states")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 4,16,64,256,1024")


def run_sweep(a: argparse.Namespace) -> int:
    import dataclasses
    import time

    from npusim.chip import load_chip, spec_to_toml
    from npusim.runtime.io import atomic_write
    from npusim.runtime.run import train_run

    if a.resume:
        raise CliError("sweep resumes the runs it finds in --out by itself; drop --resume")
    set_threads(a.threads)
    cfg = config_from_args(a)
    check_chip_arg(cfg.chip)
    base = load_chip(cfg.chip)
    values = [_value(v) for v in a.values.split(",") if v.strip()]
    if not values:
        raise CliError("--values needs at least one value")
    specs = [base.replace(**{a.param: v}) for v in values]  # validate all before training
    out = a.out or a.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-sweep-{a.param}"
    plan = []
    for value, spec in zip(values, specs, strict=True):  # check every reused run first
        sub = out / f"{a.param}={value}".replace("/", "_").replace(" ", "")
        toml = spec_to_toml(spec)
        sub_cfg = dataclasses.replace(cfg, chip=str(sub / "chip.toml"))
        plan.append((value, sub, toml, sub_cfg, _reusable(sub, toml, sub_cfg)))
    rows = []
    for value, sub, toml, sub_cfg, reuse in plan:
        if not reuse:
            sub.mkdir(parents=True, exist_ok=True)
            atomic_write(sub / "chip.toml", lambda f, t=toml: f.write(t.encode()))
        print(f"{a.param} = {value}" + (" (continuing the run found there)" if reuse else ""))
        tr = train_run(
            sub_cfg,
            sub,
            resume=reuse,
            epochs=sub_cfg.epochs if reuse else None,
            progress=not a.no_progress,
        )
        best = tr.best
        stats = tr.synapses.pulse_stats() if tr.synapses is not None else {}
        rows.append(
            {
                "value": value,
                "test_error": best.test_error,
                "test_error_se": _standard_error(best.test_error, len(tr.data.split("test")[1])),
                "val_error": best.val_error,
                "best_epoch": best.epoch,
                "pulses_mean": stats.get("pulses_mean", 0.0),
                "pulses_max": stats.get("pulses_max", 0),
            }
        )
    _write_table(rows, a.param, out)
    _plot(rows, a.param, base.name, out / "sweep.png", atomic_write)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    return 0


def _reusable(sub: Path, toml: str, cfg) -> bool:
    """Whether ``sub`` holds a run of exactly this chip and configuration (then the sweep
    continues it); refuses a run made with anything else, naming what differs."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.run import CHECKPOINT, RESULTS, RunError, config_conflicts, load_checkpoint

    if not (sub / CHECKPOINT).is_file():
        if (sub / RESULTS).exists():
            raise RunError(f"{sub} holds results.json but no checkpoint; move or delete it")
        return False
    stored = TrainConfig.from_dict(load_checkpoint(sub)["config"])
    asked = cfg.to_dict()
    bad = config_conflicts(stored, {k: v for k, v in asked.items() if k != "epochs"})
    if stored.epochs > cfg.epochs:
        bad.append(f"--epochs {cfg.epochs} (stored: {stored.epochs})")
    chip_file = sub / "chip.toml"
    if not chip_file.is_file() or chip_file.read_text(encoding="utf-8", errors="replace") != toml:
        bad.append("the chip (its chip.toml differs from this sweep's)")
    if bad:
        raise RunError(
            f"sweep: {sub} holds a run made with another configuration ({'; '.join(bad)}); "
            "choose another --out or delete that folder"
        )
    return True


def _standard_error(p: float, n: int) -> float:
    """Binomial standard error of an error rate ``p`` measured on ``n`` samples."""
    return (p * (1.0 - p) / n) ** 0.5 if n > 0 else 0.0


def _write_table(rows: list[dict], param: str, out: Path) -> None:
    from npusim.runtime.io import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "sweep.csv", lambda f: f.write(buf.getvalue().encode()))
    head = "test error (%) ± s.e. | val error (%) | best epoch | pulses/device (mean, max)"
    md = [f"| {param} | {head} |"]
    md.append("|---|---|---|---|---|")
    for r in rows:
        md.append(
            f"| {r['value']} | {100 * r['test_error']:.2f} ± {100 * r['test_error_se']:.2f} | "
            f"{100 * r['val_error']:.2f} | "
            f"{r['best_epoch']} | {r['pulses_mean']:.1f}, {r['pulses_max']} |"
        )
    text = "\n".join(md) + "\n"
    atomic_write(out / "sweep.md", lambda f: f.write(text.encode()))
    print(text)


def _plot(rows: list[dict], param: str, chip: str, path: Path, atomic_write) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["value"] for r in rows]
    numeric = all(isinstance(x, (int, float)) for x in xs)
    fig, ax = plt.subplots(figsize=(6, 4))
    pos = xs if numeric else list(range(len(xs)))
    err = [100 * r["test_error"] for r in rows]
    ax.errorbar(pos, err, yerr=[100 * r["test_error_se"] for r in rows], marker="o", capsize=3)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(pos, [str(x) for x in xs])
    ax.set_xlabel(param)
    ax.set_ylabel("test error (%), ± binomial standard error")
    ax.set_title(f"{chip}: test error against {param}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


CHIP_COMMANDS = {"eval": (add_eval_args, run_eval), "sweep": (add_sweep_args, run_sweep)}
