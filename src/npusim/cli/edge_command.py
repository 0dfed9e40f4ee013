"""``npusim edge``: a run's trained chip keeps learning, one sample at a time, from a shifting
stream within a power budget; accuracy (new and old data), energy per update, update rate,
device lifetime, against backprop on a phone NPU and the frozen chip."""

from __future__ import annotations

import argparse
from pathlib import Path

from npusim.cli.options import path_arg, positive_int, set_threads

EDGE_JSON = "edge.json"
ACCURACY_PNG = "edge_accuracy.png"
ENERGY_PNG = "edge_energy.png"


def power_arg(text: str) -> float:
    """'20mW', '20 mW', '0.02W' -> watts (a unit is required; the power must be > 0)."""
    from npusim.chip.units import to_si

    value = to_si(
        "--power", text, "W", "a power > 0, e.g. 20mW", lambda m: argparse.ArgumentTypeError(m)
    )
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--power {text!r}: expected a power > 0, e.g. 20mW")
    return float(value)


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def add_edge_args(p: argparse.ArgumentParser) -> None:
    """Keep learning on the chip from a shifting stream within a power budget (--power 20mW)."""
    from npusim.edge.learn import LR_SCALE
    from npusim.edge.streams import STREAMS

    p.add_argument("run", type=Path, help="run folder written by 'npusim train'")
    p.add_argument(
        "--stream",
        required=True,
        choices=STREAMS,
        help="rotate: rotated and shrunk digits; writer: a new writer (elastic distortion); "
        "classes: the classes the run did not train on (train it with --classes); noise: a "
        "noisy sensor",
    )
    p.add_argument(
        "--power", required=True, type=power_arg, help="power budget of the updates, e.g. 20mW"
    )
    p.add_argument(
        "--samples", type=positive_int, default=2000, help="stream samples (default 2000)"
    )
    p.add_argument(
        "--replay",
        type=non_negative_int,
        default=0,
        help="replay buffer: samples of the run's own training data kept in the chip's SRAM, one "
        "replayed after each stream sample (default 0: none)",
    )
    p.add_argument(
        "--eval-every",
        type=positive_int,
        help="samples between accuracy checks (default: a tenth of the stream)",
    )
    p.add_argument(
        "--lr-scale",
        type=float,
        default=LR_SCALE,
        help=f"learning rate on the stream as a multiple of the run's (default {LR_SCALE}: "
        "one sample per update instead of the run's batch)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the stream")
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip backprop on the phone NPU (the frozen chip is always reported)",
    )
    p.add_argument("--out", type=path_arg, help="output folder (default: RUN/edge-STREAM)")
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)"
    )


def run_edge(a: argparse.Namespace) -> int:
    from npusim.edge import learn_on_edge
    from npusim.report.edge_plot import edge_accuracy_png, edge_energy_png
    from npusim.runtime.config import SEED_MAX
    from npusim.runtime.io import atomic_json, json_safe

    if a.seed > SEED_MAX:
        from npusim.cli.options import CliError

        raise CliError(f"--seed must be in [0, {SEED_MAX}], got {a.seed}")
    set_threads(a.threads)
    res = learn_on_edge(
        a.run,
        a.stream,
        a.power,
        samples=a.samples,
        replay=a.replay,
        every=a.eval_every,
        seed=a.seed,
        lr_scale=a.lr_scale,
        baselines=not a.no_baselines,
    )
    out = a.out or a.run / f"edge-{a.stream}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(json_safe(res), out / EDGE_JSON)
    edge_accuracy_png(res, out / ACCURACY_PNG)
    edge_energy_png(res, out / ENERGY_PNG)
    print(summary(res))
    print(f"wrote {out / EDGE_JSON}, {out / ACCURACY_PNG}, {out / ENERGY_PNG}")
    return 0


def summary(r: dict) -> str:
    """A few lines: accuracy recovered, forgetting, energy, rate, lifetime."""
    life = r["lifetime_years"]
    life_text = "unlimited" if life is None else f"{life:.3g} years"
    lines = [
        f"{r['chip']}, stream {r['stream']}, {r['samples']} samples"
        + (f", replay buffer {r['replay']['samples']}" if r["replay"]["samples"] else ""),
        f"  new distribution: accuracy {100 * r['accuracy_new_start']:.1f}% -> "
        f"{100 * r['accuracy_new']:.1f}%",
        f"  original data:    accuracy {100 * r['accuracy_old_start']:.1f}% -> "
        f"{100 * r['accuracy_old']:.1f}% (forgetting {100 * r['forgetting']:.1f} pt)",
        f"  energy per update {1e9 * r['energy_per_update_j']:.1f} nJ "
        f"({1e3 * 1000 * r['energy_per_update_j']:.3g} mJ per 1,000 updates); "
        f"{r['updates_per_s']:.3g} updates/s at {1e3 * r['power_w']:.3g} mW "
        f"(limited by {r['rate_limited_by']})",
        f"  pulses per device per update {r['pulses_per_device_per_update']['mean']:.3g} (mean), "
        f"{r['pulses_per_device_per_update']['max']:.3g} (max); device lifetime {life_text}",
    ]
    b = r.get("baselines", {}).get("phone_npu_backprop")
    if b is not None:
        lines.append(
            f"  phone NPU backprop: new {100 * b['accuracy_new']:.1f}%, original "
            f"{100 * b['accuracy_old']:.1f}%, {1e9 * b['energy_per_update_j']:.1f} nJ per update"
        )
    return "\n".join(lines)
