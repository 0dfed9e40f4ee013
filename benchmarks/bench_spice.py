"""Steady states per second: npusim's batched DRN relaxation against ngspice's operating point.

Both solve the same deep resistive networks (two dense hidden layers, Shockley diodes with series
resistance) for random inputs. npusim relaxes a whole batch at once (float32, exact layer
solves, stopping when no node moves by more than 1 µV); ngspice runs one deck whose control
script sets every input source with ``alter`` and runs ``op`` once per input vector, with its
default tolerances (parsing is left out: k points are timed against one, or a single point
against a run without ``op``). Both run on one CPU
core by default (``--threads``). The largest sizes
time ngspice on a single input vector. A single dense DRN of 1,500 nodes already takes ngspice
about two minutes per point, so the largest circuits (5,000 and 20,000 nodes) are chips of
``tiles`` copies of one DRN, each with its own inputs: one steady state of the whole circuit is
``tiles`` DRN steady states, which npusim relaxes as one batch. Prints one JSON object per size
and writes a PNG of time per steady state against node count.

    python benchmarks/bench_spice.py [--out runs/bench] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from npusim.circuits.netlist import DiodeModel, Netlist, drn_to_netlist
from npusim.circuits.resistive import DeepResistive
from npusim.circuits.spice import have_ngspice, read_raw, run_deck, to_spice

#: (features, hidden width, tiles): nodes = tiles·(2·features + 2·hidden + 10)
SIZES = [(16, 32, 1), (50, 100, 1), (100, 200, 1), (170, 330, 1), (50, 100, 16), (50, 100, 65)]
DIODE = DiodeModel(is_=1e-12, n=1.0, rs=1.0)
TIMING_OPTIONS = "gmin=1e-12 temp=27 tnom=27"  # ngspice defaults otherwise (reltol=1e-3)


def build(features: int, hidden: int, dtype: torch.dtype) -> DeepResistive:
    """A DRN [features, hidden, hidden, 10] with Shockley diodes and random conductances (S)."""
    return DeepResistive(
        [features, hidden, hidden, 10],
        input_gain=1.0,
        seed=0,
        dtype=dtype,
        diode="shockley",
        diode_model=DIODE,
    )


def time_npusim(model: DeepResistive, x: torch.Tensor) -> tuple[float, torch.Tensor, int]:
    """(seconds for the batch, free-layer voltages (V), sweeps)."""
    model.relax(x[:8], sweeps=200, tol=1e-6)  # warm-up
    t0 = time.perf_counter()
    res = model.relax(x, sweeps=200, tol=1e-6)
    return time.perf_counter() - t0, torch.cat(res.state, 1), res.sweeps


def time_ngspice(net, vin: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(seconds per operating point without parsing, node voltages (V) of the points). With
    k > 1 input rows it times k points against one point; with one row, one point against a
    run of the deck without ``op``."""
    k = vin.shape[0]
    raw, t_k = run_deck(to_spice(net, vin, options=TIMING_OPTIONS))
    base = to_spice(net, vin[:1], raw_path=None, options=TIMING_OPTIONS)
    _, t_1 = run_deck(base if k > 1 else base.replace("\nop\n", "\n"))
    return max(t_k - t_1, 1e-9) / max(k - 1, 1), read_raw(raw, net.num_nodes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench", help="folder for the PNG")
    p.add_argument("--batch", type=int, default=1000, help="npusim DRN inputs per batch")
    p.add_argument("--quick", action="store_true", help="only the three smallest sizes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (ngspice uses one core)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not have_ngspice():
        print(
            "ngspice not installed (apt-get install ngspice): nothing to compare", file=sys.stderr
        )
        return
    torch.manual_seed(0)
    rows = []
    for features, hidden, tiles in SIZES[:3] if a.quick else SIZES:
        model = build(features, hidden, torch.float32)
        batch = max(32, a.batch // tiles)
        x = torch.rand(batch, tiles, features)  # one row of tile inputs per steady state
        t_np, volts, sweeps = time_npusim(model, x.reshape(-1, features))
        volts = volts.reshape(batch, -1)  # tile after tile, as in the netlist
        net, free = Netlist(), []
        for _ in range(tiles):
            layers = drn_to_netlist(model, diode=DIODE, net=net)[1]
            free += [n for layer in layers[1:] for n in layer]
        ops = min(batch, 41 if net.num_nodes < 400 else 3 if net.num_nodes < 1000 else 1)
        vin = model.input_voltages(x[:ops].reshape(-1, features)).reshape(ops, -1).double()
        t_ng, ref = time_ngspice(net, vin)
        dv = float((ref[:, torch.tensor(free)] - volts[:ops].double()).abs().max())
        row = {
            "name": f"spice_drn_{net.num_nodes}_nodes" + (f"_{tiles}_tiles" if tiles > 1 else ""),
            "nodes": net.num_nodes,
            "resistors": len(net.resistors),
            "tiles": tiles,
            "samples_per_s": batch / t_np,
            "ngspice_samples_per_s": 1.0 / t_ng,
            "ratio": t_ng * batch / t_np,
            "npusim_sweeps": sweeps,
            "ngspice_points": ops,
            "max_abs_dv_v": dv,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    plot(rows, os.path.join(a.out, "bench_spice.png"))


def plot(rows: list[dict], path: str) -> None:
    """Log-log plot of seconds per steady state against node count, for both solvers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for tiled, style in ((False, "-"), (True, "--")):
        sel = [r for r in rows if (r["tiles"] > 1) == tiled]
        if not sel:
            continue
        nodes = [r["nodes"] for r in sel]
        kind = " (tiled chips)" if tiled else ""
        fill = "none" if tiled else None
        ax.loglog(
            nodes,
            [1 / r["ngspice_samples_per_s"] for r in sel],
            "o" + style,
            color="C0",
            mfc=fill,
            label="ngspice op" + kind,
        )
        ax.loglog(
            nodes,
            [1 / r["samples_per_s"] for r in sel],
            "s" + style,
            color="C1",
            mfc=fill,
            label="npusim batched" + kind,
        )
        for r in sel:
            ax.annotate(
                f"{r['ratio']:.0f}×",
                (r["nodes"], 1 / r["samples_per_s"]),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=8,
            )
    ax.set_xlabel("nodes")
    ax.set_ylabel("seconds per steady state")
    ax.set_title("DRN steady states: npusim vs ngspice")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
