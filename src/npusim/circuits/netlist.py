"""General resistive netlists: resistors, diodes, voltage and current sources, any topology.

Node 0 is ground; the other nodes are numbered ``1 .. num_nodes``. Element conventions follow
SPICE so that a netlist exports one to one (see :mod:`npusim.circuits.spice`):

* resistor ``(a, b, G)``: current ``G·(V_a − V_b)`` (A) flows from a to b; G in S.
* diode ``(anode, cathode, model)``: Shockley junction in series with ``Rs`` (Ω), or an ideal
  diode (``V_anode − V_cathode ≤ 0`` unless it conducts, current ≥ 0) when solved ideally.
* voltage source ``(p, n, E)``: ``V_p − V_n = E`` (V).
* current source ``(p, n, I)``: ``I`` (A) flows from p through the source into n (SPICE).

Steady states are computed by :func:`npusim.circuits.netlist_solve.solve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

#: Boltzmann constant (J/K) and elementary charge (C) as ngspice uses them (CODATA 2014).
BOLTZMANN = 1.38064852e-23
CHARGE = 1.6021766208e-19
#: Thermal voltage kT/q (V) at 27 °C, ngspice's nominal temperature.
THERMAL_VOLTAGE = BOLTZMANN * 300.15 / CHARGE


@dataclass(frozen=True)
class DiodeModel:
    """Shockley diode ``i = Is·(exp(v_j/(n·Vt)) − 1)`` (A) with junction voltage ``v_j`` (V),
    in series with ``rs`` (Ω): the branch voltage is ``v = v_j + rs·i``."""

    is_: float = 1e-12
    n: float = 1.0
    vt: float = THERMAL_VOLTAGE
    rs: float = 0.0

    def __post_init__(self) -> None:
        for key in ("is_", "n", "vt"):
            if not getattr(self, key) > 0:
                raise ValueError(f"diode {key} must be > 0, got {getattr(self, key)}")
        if not self.rs >= 0:
            raise ValueError(f"diode rs must be >= 0 Ω, got {self.rs}")


@dataclass
class Netlist:
    """A linear-resistor/diode/source network; build it with the ``add_*`` methods."""

    num_nodes: int = 0
    resistors: list[tuple[int, int, float]] = field(default_factory=list)
    diodes: list[tuple[int, int, DiodeModel]] = field(default_factory=list)
    vsources: list[tuple[int, int, float]] = field(default_factory=list)
    isources: list[tuple[int, int, float]] = field(default_factory=list)

    def add_node(self) -> int:
        """A new node; returns its number."""
        self.num_nodes += 1
        return self.num_nodes

    def add_nodes(self, count: int) -> list[int]:
        """``count`` new nodes; returns their numbers."""
        first = self.num_nodes + 1
        self.num_nodes += int(count)
        return list(range(first, self.num_nodes + 1))

    def _check(self, *nodes: int) -> None:
        for v in nodes:
            if not 0 <= int(v) <= self.num_nodes:
                raise ValueError(f"node {v} out of range 0..{self.num_nodes}; add_node() first")

    def add_resistor(self, a: int, b: int, conductance: float) -> int:
        """Resistor of ``conductance`` (S, > 0) between nodes a and b; returns its index."""
        self._check(a, b)
        if not conductance > 0:
            raise ValueError(f"conductance must be > 0 S, got {conductance}")
        if a == b:
            raise ValueError(f"resistor shorted on node {a}")
        self.resistors.append((int(a), int(b), float(conductance)))
        return len(self.resistors) - 1

    def add_diode(self, anode: int, cathode: int, model: DiodeModel | None = None) -> int:
        """Diode from ``anode`` to ``cathode``; returns its index."""
        self._check(anode, cathode)
        if anode == cathode:
            raise ValueError(f"diode shorted on node {anode}")
        self.diodes.append((int(anode), int(cathode), model or DiodeModel()))
        return len(self.diodes) - 1

    def add_vsource(self, p: int, n: int, volts: float = 0.0) -> int:
        """Voltage source holding ``V_p − V_n = volts`` (V); returns its index."""
        self._check(p, n)
        if p == n:
            raise ValueError(f"voltage source shorted on node {p}")
        self.vsources.append((int(p), int(n), float(volts)))
        return len(self.vsources) - 1

    def add_isource(self, p: int, n: int, amps: float = 0.0) -> int:
        """Current source driving ``amps`` (A) from node p through itself into node n."""
        self._check(p, n)
        self.isources.append((int(p), int(n), float(amps)))
        return len(self.isources) - 1

    # ---- arrays ---------------------------------------------------------------------
    def vsource_values(self) -> Tensor:
        """Stored source voltages (V), shape (1, n_vsources), float64."""
        return torch.tensor([[v for _, _, v in self.vsources]], dtype=torch.float64)

    def isource_values(self) -> Tensor:
        """Stored source currents (A), shape (1, n_isources), float64."""
        return torch.tensor([[i for _, _, i in self.isources]], dtype=torch.float64)

    def diode_arrays(self) -> dict[str, np.ndarray]:
        """Diode anodes, cathodes and model parameters as arrays (Is A, n, Vt V, Rs Ω)."""
        d = self.diodes
        return {
            "anode": np.array([a for a, _, _ in d], dtype=np.int64),
            "cathode": np.array([c for _, c, _ in d], dtype=np.int64),
            "is_": np.array([m.is_ for *_, m in d], dtype=np.float64),
            "n": np.array([m.n for *_, m in d], dtype=np.float64),
            "vt": np.array([m.vt for *_, m in d], dtype=np.float64),
            "rs": np.array([m.rs for *_, m in d], dtype=np.float64),
        }


def random_netlist(
    num_nodes: int,
    *,
    num_resistors: int | None = None,
    num_diodes: int = 0,
    num_vsources: int = 1,
    num_isources: int = 1,
    model: DiodeModel | None = None,
    seed: int = 0,
) -> Netlist:
    """A random connected, well-posed netlist (every node has a path to ground through
    resistors); conductances log-uniform in [1e-4, 1e-2] S, sources within ±5 V / ±5 mA.
    Diodes and sources join distinct random nodes (voltage sources always reference ground,
    so no loop of sources or diodes forms)."""
    rng = np.random.default_rng(seed)
    net = Netlist()
    nodes = net.add_nodes(num_nodes)
    for k, v in enumerate(nodes):  # random spanning tree rooted at ground
        net.add_resistor(v, int(rng.integers(0, k + 1)) if k else 0, _g(rng))
    extra = num_resistors - num_nodes if num_resistors is not None else num_nodes
    for _ in range(max(0, extra)):
        a, b = rng.choice(num_nodes + 1, size=2, replace=False)
        net.add_resistor(int(a), int(b), _g(rng))
    vs_nodes = rng.choice(nodes, size=num_vsources, replace=False)
    for v in vs_nodes:
        net.add_vsource(int(v), 0, float(rng.uniform(-5, 5)))
    free = [v for v in nodes if v not in set(vs_nodes.tolist())]
    for _ in range(num_isources):
        a, b = rng.choice([0, *nodes], size=2, replace=False)
        net.add_isource(int(a), int(b), float(rng.uniform(-5e-3, 5e-3)))
    # diodes form a forest over {ground + source nodes} ∪ free nodes: no loop of diodes and
    # sources, so the ideal-diode problem is strictly convex
    root = {v: 0 for v in [0, *vs_nodes.tolist()]}

    def find(v: int) -> int:
        while root.get(v, v) != v:
            v = root[v]
        return v

    for _ in range(50 * num_diodes):
        if len(net.diodes) == num_diodes:
            break
        a = int(rng.choice(free))
        b = int(rng.choice([0, *[v for v in nodes if v != a]]))
        if find(a) == find(b):
            continue
        root[find(a)] = find(b)
        net.add_diode(*((a, b) if rng.random() < 0.5 else (b, a)), model or DiodeModel())
    return net


def _g(rng: np.random.Generator) -> float:
    return float(10 ** rng.uniform(-4, -2))


def drn_to_netlist(
    model, x: Tensor | None = None, diode: DiodeModel | None = None, net: Netlist | None = None
):
    """Netlist of a deep resistive network (``DeepResistive``) for inputs ``x`` (one sample,
    shape (features,) or (1, features); None leaves the input sources at 0 V).

    Returns ``(netlist, layers)``: ``layers[k]`` lists the node numbers of layer k (layer 0 are
    the input-source nodes). Each hidden node's diode is excitatory (anode at ground, V ≥ 0) in
    the first half of its layer and inhibitory (anode at the node, V ≤ 0) in the second half;
    zero conductances are left out. ``diode`` defaults to the model's diode parameters if it
    has any, else :class:`DiodeModel`. Given ``net``, the DRN is added to it (e.g. one copy per
    tile of a chip) and its node numbers continue from ``net``'s.
    """
    sizes = [w.shape[0] for w in model.weights] + [model.weights[-1].shape[1]]
    net = Netlist() if net is None else net
    layers = [net.add_nodes(n) for n in sizes]
    vin = torch.zeros(sizes[0], dtype=torch.float64)
    if x is not None:
        vin = model.input_voltages(x.reshape(1, -1)).reshape(-1).double()
    for node, v in zip(layers[0], vin.tolist()):
        net.add_vsource(node, 0, v)
    for k, w in enumerate(model.weights):
        w = w.detach().double().cpu().numpy()
        rows, cols = np.nonzero(w > 0)
        for i, j in zip(rows.tolist(), cols.tolist()):
            net.add_resistor(layers[k][i], layers[k + 1][j], float(w[i, j]))
        for j, b in enumerate(model.biases[k].detach().double().cpu().tolist()):
            if b != 0.0:
                net.add_isource(0, layers[k + 1][j], b)
    diode = diode or getattr(model, "diode_model", None) or DiodeModel()
    for layer in layers[1:-1]:
        half = len(layer) // 2
        for i, node in enumerate(layer):
            net.add_diode(*((0, node) if i < half else (node, 0)), diode)
    return net, layers
