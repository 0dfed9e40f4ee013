"""``npusim eval`` (a trained run read back after drift) and ``npusim sweep`` (one device
parameter varied, test error against it)."""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 3.15576e7}


def parse_duration(text: str) -> float:
    """'1h', '30 min', '1d', '1y' (365.25 d), '10s' or a number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([a-z]*)\s*", text)
    if m is None or m.group(2) not in ("", *_UNITS):
        raise argparse.ArgumentTypeError(
            f"expected a time like 1h, 1d, 1y, 30min or 10s, got {text!r}"
        )
    return float(m.group(1)) * _UNITS.get(m.group(2), 1.0)


def _labelled_duration(text: str) -> tuple[str, float]:
    return text, parse_duration(text)


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
    p.add_argument(
        "--after",
        nargs="+",
        type=_labelled_duration,
        default=[_labelled_duration(t) for t in ("0s", "1h", "1d", "1y")],
        metavar="TIME",
        help="times after programming, e.g. 1h 1d 1y (default: 0s 1h 1d 1y)",
    )
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--seed", type=int, default=0, help="seed of the read noise")


def run_eval(a: argparse.Namespace) -> int:
    import torch

    from npusim.chip import load_chip
    from npusim.devices import make_synapses
    from npusim.devices.converters import periphery_for
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.io import atomic_json
    from npusim.runtime.run import load_checkpoint
    from npusim.runtime.train import Trainer

    times = a.after
    if not (a.run / "checkpoint.pt").is_file():
        raise ValueError(f"{a.run} is not a run folder of 'npusim train' (no checkpoint.pt)")
    ckpt = load_checkpoint(a.run)
    cfg = TrainConfig.from_dict(ckpt["config"])
    tr = Trainer(cfg)
    tr.load_checkpoint(ckpt)
    chip = a.chip or cfg.chip
    params = tr.model.params()
    syn = tr.synapses
    if syn is None or chip != cfg.chip:  # program the trained weights onto a fresh chip
        syn = make_synapses(load_chip(chip), params, tr.model.signed, seed=cfg.seed)
        conv = load_chip(chip).converters
        tr.use_periphery(periphery_for(conv, tr.model.normalised_states))
    programmed = [p.clone() for p in params]
    rows = []
    for label, seconds in times:
        syn.read(seconds, torch.Generator().manual_seed(a.seed), out=params)
        err = tr.evaluate(a.split)
        rows.append({"after": label, "seconds": seconds, f"{a.split}_error": err})
        print(f"{chip}: after {label:>6}  {a.split} error {100 * err:6.2f}%", flush=True)
    for p, q in zip(params, programmed, strict=True):
        p.copy_(q)
    path = a.run / "eval.json"
    old = {}
    if path.is_file():
        import json

        old = json.loads(path.read_text())
    old[chip] = {"chip": load_chip(chip).name, "split": a.split, "results": rows}
    atomic_json(old, path)
    print(f"wrote {path}")
    return 0


# ---- sweep ----------------------------------------------------------------------------
def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Train once per value of one chip parameter; table and plot of test error against it."""
    from npusim.cli.main import add_train_args

    add_train_args(p)
    p.add_argument("--param", required=True, help="dotted chip key, e.g. device.n_states")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 4,16,64,256,1024")


def run_sweep(a: argparse.Namespace) -> int:
    import time

    from npusim.chip import load_chip, spec_to_toml
    from npusim.cli.main import config_from_args
    from npusim.runtime.io import atomic_write
    from npusim.runtime.run import RESULTS, train_run

    base = load_chip(a.chip)
    values = [_value(v) for v in a.values.split(",") if v.strip()]
    if not values:
        raise ValueError("--values needs at least one value")
    specs = [base.replace(**{a.param: v}) for v in values]  # validate all before training
    out = a.out or a.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-sweep-{a.param}"
    rows = []
    for value, spec in zip(values, specs, strict=True):
        sub = out / f"{a.param}={value}".replace("/", "_").replace(" ", "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "chip.toml").write_text(spec_to_toml(spec))
        cfg = config_from_args(a)
        cfg.chip = str(sub / "chip.toml")
        print(f"{a.param} = {value}", flush=True)
        tr = train_run(cfg, sub, resume=(sub / RESULTS).is_file(), progress=not a.no_progress)
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
