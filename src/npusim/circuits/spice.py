"""SPICE export of a :class:`~npusim.circuits.netlist.Netlist` and ngspice operating points.

:func:`to_spice` writes a deck ngspice runs as is (``ngspice -b deck.cir``): node numbers are
SPICE node names (0 = ground), element k of each kind is ``Rk``/``Dk``/``Vk``/``Ik``, every
diode model carries ``IS`` (A), ``N`` and ``RS`` (Ω) with ``N`` rescaled so that ngspice's
thermal voltage at 27 °C reproduces the model's ``n·Vt``. The control block runs ``op`` once per
input vector (``alter`` sets the sources) and writes an ASCII raw file, which
:func:`read_raw` parses back into node voltages (V).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

import torch
from torch import Tensor

from npusim.circuits.netlist import THERMAL_VOLTAGE, Netlist
from npusim.circuits.netlist_solve import batch_sources

#: Tight tolerances so that ngspice's answer is exact to far below 1 µV.
OPTIONS = "reltol=1e-12 abstol=1e-18 vntol=1e-13 gmin=1e-30 itl1=1000 itl2=1000 temp=27 tnom=27"


def have_ngspice() -> bool:
    """True if an ``ngspice`` executable is on the PATH."""
    return shutil.which("ngspice") is not None


def _num(x: float) -> str:
    return f"{x:.17g}"


def to_spice(
    net: Netlist,
    vsrc: Tensor | None = None,
    isrc: Tensor | None = None,
    *,
    title: str = "npusim netlist",
    raw_path: str | None = "op.raw",
    options: str = OPTIONS,
) -> str:
    """SPICE deck of ``net``. ``vsrc`` (batch, n_vsources) V and ``isrc`` (batch, n_isources)
    A give one operating point per row (None: the stored values, one point); ``raw_path``
    names the ASCII raw file the deck writes (None: write nothing, e.g. for timing)."""
    vs, cs = batch_sources(net, vsrc, isrc)
    lines = [f"* {title}"]
    lines += [f"R{k} {a} {b} {_num(1.0 / g)}" for k, (a, b, g) in enumerate(net.resistors)]
    models: dict[tuple[float, float, float], str] = {}
    for k, (a, c, m) in enumerate(net.diodes):
        key = (m.is_, m.n * m.vt / THERMAL_VOLTAGE, m.rs)
        name = models.setdefault(key, f"dm{len(models)}")
        lines.append(f"D{k} {a} {c} {name}")
    for (is_, n, rs), name in models.items():
        lines.append(f".model {name} D(IS={_num(is_)} N={_num(n)} RS={_num(rs)})")
    lines += [
        f"V{k} {p} {n} DC {_num(float(vs[0, k]))}" for k, (p, n, _) in enumerate(net.vsources)
    ]
    lines += [
        f"I{k} {p} {n} DC {_num(float(cs[0, k]))}" for k, (p, n, _) in enumerate(net.isources)
    ]
    lines += [f".options {options}", ".control", "set filetype=ascii", "set appendwrite"]
    for b in range(vs.shape[0]):
        if b:
            lines += [f"alter v{k} = {_num(float(v))}" for k, v in enumerate(vs[b].tolist())]
            lines += [f"alter i{k} = {_num(float(i))}" for k, i in enumerate(cs[b].tolist())]
        lines.append("op")
        if raw_path is not None:
            lines.append(f"write {raw_path} all")
    lines += ["quit", ".endc", ".end", ""]
    return "\n".join(lines)


def read_raw(text: str, num_nodes: int) -> Tensor:
    """Node voltages (V) from an ngspice ASCII raw file with one plot per operating point:
    shape (points, num_nodes + 1), column k = node k (column 0, ground, is 0)."""
    out = []
    for plot in re.split(r"(?m)^Title:", text)[1:]:
        names = re.search(r"(?ms)^Variables:\s*\n(.*?)^Values:", plot)
        values = re.search(r"(?ms)^Values:\s*\n(.*)", plot)
        if names is None or values is None:
            raise ValueError("not an ngspice ASCII raw file (no Variables/Values section)")
        var = [ln.split()[1].lower() for ln in names.group(1).strip().splitlines()]
        nums = values.group(1).split()
        vals = [float(x) for x in nums[1 : 1 + len(var)]]  # first token is the point index
        row = torch.zeros(num_nodes + 1, dtype=torch.float64)
        for name, v in zip(var, vals):
            m = re.fullmatch(r"v\((\d+)\)", name)
            if m and int(m.group(1)) <= num_nodes:
                row[int(m.group(1))] = v
        out.append(row)
    return torch.stack(out) if out else torch.zeros(0, num_nodes + 1, dtype=torch.float64)


def run_deck(deck: str, timeout: float = 600.0) -> tuple[str, float]:
    """Run ``deck`` in ngspice batch mode in a temporary folder; returns (raw file text or "",
    wall seconds). Raises RuntimeError with ngspice's output if it fails."""
    if not have_ngspice():
        raise RuntimeError("ngspice not found on PATH (Debian: apt-get install ngspice)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "deck.cir")
        with open(path, "w") as f:
            f.write(deck)
        t0 = time.perf_counter()
        res = subprocess.run(
            ["ngspice", "-b", path], cwd=tmp, capture_output=True, text=True, timeout=timeout
        )
        wall = time.perf_counter() - t0
        raw_file = os.path.join(tmp, "op.raw")
        raw = open(raw_file).read() if os.path.exists(raw_file) else ""
        log = res.stdout + res.stderr
        if res.returncode != 0 or re.search(r"(?i)(error|solution failed|aborted)", log):
            raise RuntimeError(f"ngspice failed (rc {res.returncode}):\n{res.stdout}\n{res.stderr}")
    return raw, wall


def ngspice_op(net: Netlist, vsrc: Tensor | None = None, isrc: Tensor | None = None) -> Tensor:
    """ngspice's operating points for ``net``: node voltages (V), shape
    (batch, num_nodes + 1), one row per input vector (see :func:`to_spice`)."""
    deck = to_spice(net, vsrc, isrc)
    raw, _ = run_deck(deck)
    volts = read_raw(raw, net.num_nodes)
    if volts.shape[0] != deck.count("\nop\n"):
        raise RuntimeError(f"ngspice wrote {volts.shape[0]} of {deck.count(chr(10) + 'op')} points")
    return volts
