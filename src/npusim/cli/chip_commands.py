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
    """Train once per value of one chip parameter or training option (and per chip and seed);
    table and plot of test error against it."""
    add_train_args(p)
    p.add_argument(
        "--param",
        required=True,
        help="a dotted chip key (e.g. device.n_states) or a training option (e.g. update, lr)",
    )
    p.add_argument(
        "--values",
        required=True,
        help="comma-separated values, e.g. 4,16,64 or sgd,mixed,ttv2 (list options such as "
        "hidden: separate the values with ';', e.g. '256;512 256')",
    )
    p.add_argument(
        "--chips",
        help="comma-separated chips (presets or .toml files): one row per chip and value, in "
        "OUT/CHIP/ (default: --chip)",
    )


def _sweep_values(param: str, text: str) -> tuple[list, bool]:
    """(values, is a training option): values parsed as the option's type, or as numbers or
    words for a chip key."""
    from dataclasses import fields as dc_fields

    from npusim.cli.options import _PARSERS
    from npusim.runtime.config import TrainConfig, check_field

    options = {f.name: f for f in dc_fields(TrainConfig)}
    if param in ("chip", "seed"):
        raise CliError(f"--param {param}: use --chips or --seeds to vary the {param}")
    if "." not in param and param not in options:
        raise CliError(
            f"--param {param!r} is neither a chip key (section.key, e.g. device.n_states) nor a "
            f"training option ({', '.join(sorted(options))})"
        )
    if param not in options:
        values = [_value(v) for v in text.split(",") if v.strip()]
    else:
        f = options[param]
        kind = f.metadata["kind"]
        sep = ";" if kind in ("ints", "floats") and ";" in text else ","
        values = []
        for v in (v.strip() for v in text.split(sep) if v.strip()):
            try:
                value = _PARSERS[kind](v)
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise CliError(f"--values: {param} {v!r}: {e}") from None
            check_field(f, value)
            values.append(value)
    if not values:
        raise CliError("--values needs at least one value")
    return values, param in options


def _label(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("/", "_").replace(" ", "")


def _chip_label(chip: str) -> str:
    return Path(chip).stem if chip.endswith(".toml") or "/" in chip else chip


def run_sweep(a: argparse.Namespace) -> int:
    import dataclasses
    import time

    from npusim.chip import load_chip, spec_to_toml
    from npusim.cli.trials import Trial, aggregate, run_trials
    from npusim.runtime.io import atomic_write

    if a.resume:
        raise CliError("sweep resumes the runs it finds in --out by itself; drop --resume")
    cfg = config_from_args(a)
    chips = [c.strip() for c in a.chips.split(",") if c.strip()] if a.chips else [cfg.chip]
    if not chips or len(set(chips)) != len(chips):
        raise CliError(f"--chips needs distinct chips, got {a.chips!r}")
    for chip in chips:
        check_chip_arg(chip)
    values, is_option = _sweep_values(a.param, a.values)
    seeds = a.seeds or [cfg.seed]
    out = a.out or a.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-sweep-{a.param}"
    cells, trials, tomls = [], [], {}
    for chip in chips:  # validate every cell and check every reused run before training
        base = load_chip(chip)
        for value in values:
            home = out / _chip_label(chip) if len(chips) > 1 else out
            sub = home / f"{a.param}={_label(value)}"
            if is_option:
                cell_cfg, toml = dataclasses.replace(cfg, chip=chip, **{a.param: value}), None
                cell_cfg = cell_cfg.resolved()
            else:
                toml = spec_to_toml(base.replace(**{a.param: value}))
                cell_cfg, tomls[sub] = dataclasses.replace(cfg, chip=str(sub / "chip.toml")), toml
            first = len(trials)
            for seed in seeds:
                run_cfg = dataclasses.replace(cell_cfg, seed=seed)
                folder = sub / f"seed-{seed}" if a.seeds else sub
                reuse = _reusable(folder, sub / "chip.toml", toml, run_cfg)
                name = f"{base.name} {a.param}={_label(value)}" + (f" seed {seed}" * bool(a.seeds))
                trials.append(Trial(name, run_cfg, folder, resume=reuse))
            cells.append((base.name, value, first, len(trials)))
    for sub, toml in tomls.items():
        if not (sub / "chip.toml").is_file():
            sub.mkdir(parents=True, exist_ok=True)
            atomic_write(sub / "chip.toml", lambda f, t=toml: f.write(t.encode()))
    for t in trials:
        if t.resume:
            print(f"{t.name}: continuing the run found in {t.folder}")
    runs = run_trials(
        trials, jobs=a.jobs, threads=a.threads, progress=not a.no_progress, backend=a.backend,
        address=a.address, cpus_per_trial=a.cpus_per_trial,
    )  # fmt: skip
    rows = []
    for chip_name, value, i, j in cells:
        agg = aggregate(runs[i:j])
        if agg["seeds"]:
            rows.append({"chip": chip_name, "value": _label(value), **agg})
    if rows:
        _write_table(rows, a.param, out)
        _plot(rows, a.param, out / "sweep.png", atomic_write)
        print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    failed = [f"{t.name}: {r['error']}" for t, r in zip(trials, runs, strict=True) if "error" in r]
    if failed:
        raise CliError(f"{len(failed)} of {len(trials)} runs failed: " + "; ".join(failed))
    return 0


def _reusable(folder: Path, chip_file: Path, toml: str | None, cfg) -> bool:
    """Whether ``folder`` holds a run of exactly this chip and configuration (then the sweep
    continues it); refuses a run made with anything else, naming what differs. ``toml``: the
    cell's chip file text (None when the chip is a preset named in ``cfg``)."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.run import CHECKPOINT, RESULTS, RunError, config_conflicts, load_checkpoint

    if not (folder / CHECKPOINT).is_file():
        if (folder / RESULTS).exists():
            raise RunError(f"{folder} holds results.json but no checkpoint; move or delete it")
        return False
    stored = TrainConfig.from_dict(load_checkpoint(folder)["config"])
    asked = cfg.to_dict()
    bad = config_conflicts(stored, {k: v for k, v in asked.items() if k != "epochs"})
    if stored.epochs > cfg.epochs:
        bad.append(f"--epochs {cfg.epochs} (stored: {stored.epochs})")
    if toml is not None and (
        not chip_file.is_file() or chip_file.read_text(encoding="utf-8", errors="replace") != toml
    ):
        bad.append("the chip (its chip.toml differs from this sweep's)")
    if bad:
        raise RunError(
            f"sweep: {folder} holds a run made with another configuration ({'; '.join(bad)}); "
            "choose another --out or delete that folder"
        )
    return True


_COLUMNS = (
    "chip", "value", "seeds", "test_error_mean", "test_error_std", "test_error_se",
    "val_error_mean", "best_epochs", "pulses_mean", "pulses_max", "energy_per_train_sample_j",
    "time_per_train_sample_s", "lifetime_mean_device_s", "lifetime_max_device_s",
)  # fmt: skip


def _spread(r: dict) -> tuple[float, str]:
    """The error bar of a row: s.d. over its seeds, or one run's binomial standard error."""
    if len(r["seeds"]) > 1:
        return r["test_error_std"], f"s.d., {len(r['seeds'])} seeds"
    return r["test_error_se"], "s.e."


def _write_table(rows: list[dict], param: str, out: Path) -> None:
    from npusim.cost.wear import lifetime_text
    from npusim.runtime.io import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        flat = {k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()}
        writer.writerow({k: flat.get(k, "") for k in _COLUMNS})
    atomic_write(out / "sweep.csv", lambda f: f.write(buf.getvalue().encode()))
    md = [
        f"| chip | {param} | test error (%) | val error (%) | best epochs | pulses/device "
        "(mean, max) | energy / training sample | lifetime (mean device, most-pulsed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bar, what = _spread(r)
        energy = r.get("energy_per_train_sample_j")
        life = [r.get(k) for k in ("lifetime_mean_device_s", "lifetime_max_device_s")]
        md.append(
            f"| {r['chip']} | {r['value']} | {100 * r['test_error_mean']:.2f} ± {100 * bar:.2f} "
            f"({what}) | {100 * r['val_error_mean']:.2f} | "
            f"{','.join(map(str, r['best_epochs']))} | "
            f"{r['pulses_mean']:.1f}, {r['pulses_max']} | "
            + (f"{energy * 1e9:.0f} nJ" if energy is not None else "—")
            + " | "
            + (", ".join(lifetime_text(x) for x in life) if None not in life else "—")
            + " |"
        )
    text = "\n".join(md) + "\n"
    atomic_write(out / "sweep.md", lambda f: f.write(text.encode()))
    print(text)


def _plot(rows: list[dict], param: str, path: Path, atomic_write) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chips = list(dict.fromkeys(r["chip"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    numeric = all(_is_number(r["value"]) for r in rows)
    labels = list(dict.fromkeys(r["value"] for r in rows))
    for k, chip in enumerate(chips):
        mine = [r for r in rows if r["chip"] == chip]
        if numeric:
            pos = [float(r["value"]) for r in mine]
        else:  # categories side by side, chips offset within each
            pos = [labels.index(r["value"]) + 0.1 * (k - (len(chips) - 1) / 2) for r in mine]
        bars = [100 * _spread(r)[0] for r in mine]
        ax.errorbar(pos, [100 * r["test_error_mean"] for r in mine], yerr=bars, marker="o",
                    capsize=3, linestyle="-" if numeric else "none", label=chip)  # fmt: skip
    if numeric:
        xs = [float(v) for v in labels]
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)), labels)
    seeds = max(len(r["seeds"]) for r in rows)
    bar = f"± s.d. over {seeds} seeds" if seeds > 1 else "± binomial standard error"
    ax.set_xlabel(param)
    ax.set_ylabel(f"test error (%), {bar}")
    ax.set_title(f"test error against {param}")
    if len(chips) > 1:
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


CHIP_COMMANDS = {"eval": (add_eval_args, run_eval), "sweep": (add_sweep_args, run_sweep)}
