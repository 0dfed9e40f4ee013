"""Deep resistive network (DRN): node voltages, conductances ≥ 0, ideal diodes.

Layer 0 holds voltage sources ``V_0 = gain·[x, −x]`` (inputs duplicated with inverted copies, so
non-negative conductances can realise both signs). ``weights[k][i, j] = G_ij`` (S) connects node
i of layer k and node j of layer k+1; ``biases[k]`` are current sources (A) into layer k+1's
nodes. In each hidden layer the first half of the nodes is excitatory (an ideal diode from
ground holds V ≥ 0) and the second half inhibitory (V ≤ 0); the output layer is linear.

The energy is the co-content whose stationary point is Kirchhoff's current law::

    E(V) = ½ Σ_k Σ_ij G_ij (V_k,i − V_k+1,j)² − Σ_k b_kᵀ V_k+1

its first term is half the power the resistors dissipate (P = Σ G ΔV², W). Given its
neighbours, a node's exact minimiser is the conductance-weighted mean of its neighbours' voltages
plus its source current over its total conductance, then clipped by its diode.

With ``diode="shockley"`` the diodes are Shockley diodes with series resistance
(:mod:`npusim.circuits.shockley`): the energy adds their co-content and a node's exact minimiser
solves its KCL with the diode current, one scalar monotone equation per node.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from npusim.chip.spec import ChipSpec, ChipSpecError
from npusim.circuits import shockley
from npusim.circuits.layered import LayeredNetwork
from npusim.circuits.netlist import DiodeModel
from npusim.core.outer import OuterProduct, column_sums


class DeepResistive(LayeredNetwork):
    """Layered resistive network; ``sizes = [inputs, hidden..., outputs]`` with ``inputs`` the raw
    feature count (the physical input layer has ``2·inputs`` sources)."""

    normalised_states = False  # node voltages in V

    def __init__(
        self,
        sizes: list[int],
        *,
        input_gain: float = 480.0,
        weight_gains: list[float] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        diode: str = "ideal",
        diode_model: DiodeModel | None = None,
    ) -> None:
        if diode not in ("ideal", "shockley"):
            raise ValueError(f"diode must be 'ideal' or 'shockley', got {diode!r}")
        if not input_gain > 0:
            raise ValueError(f"input_gain must be > 0, got {input_gain}")
        phys = [2 * int(sizes[0]), *sizes[1:]] if sizes else sizes
        super().__init__(phys, dtype)
        self.input_gain = float(input_gain)
        gains = weight_gains or [1.0] * (len(phys) - 1)
        if len(gains) != len(phys) - 1:
            raise ValueError(f"need {len(phys) - 1} weight gains, got {len(gains)}")
        g = torch.Generator().manual_seed(seed)
        self.weights = []
        for n_in, n_out, gain in zip(self.sizes[:-1], self.sizes[1:], gains):
            bound = gain / math.sqrt(n_in)
            w = torch.rand(n_in, n_out, generator=g, dtype=torch.float64) * bound
            self.weights.append(w.to(dtype))
        self.biases = [torch.zeros(n, dtype=dtype) for n in self.sizes[1:]]
        lo, hi = [], []
        for n in self.sizes[1:-1]:
            half = n // 2
            lo.append(torch.cat([torch.zeros(half), torch.full((n - half,), -math.inf)]))
            hi.append(torch.cat([torch.full((half,), math.inf), torch.zeros(n - half)]))
        self._lo = [t.to(dtype) for t in lo]
        self._hi = [t.to(dtype) for t in hi]
        # Shockley diodes (Is, n, Vt, Rs; see circuits/shockley.py) instead of ideal ones
        self.diode = diode
        self.diode_model = (diode_model or DiodeModel()) if diode == "shockley" else None
        self._sign = [shockley.layer_sign(n, dtype) for n in self.sizes[1:-1]]

    @property
    def signed(self) -> list[bool]:
        return [False] * self.num_layers + [True] * self.num_layers

    @property
    def logical_sizes(self) -> list[int]:
        """Sizes with the raw feature count as the input layer (physical: twice that)."""
        return [self.sizes[0] // 2, *self.sizes[1:]]

    def input_layer(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        return self.input_gain * torch.cat([x, -x], 1)

    def read_gains(self, spec: ChipSpec) -> list[Tensor]:
        """Per free layer and node, the read-out gain from a node voltage (simulation units) to
        the chip's ADC input (normalised; 1 is ``array.read_voltage``), signed.

        Read-out chain: a simulation unit is ``read_voltage / input_gain`` volts (an input of 1
        drives ``read_voltage``); the node drives a sense device at ``device.g_max`` into the
        virtual ground of a column amplifier of transimpedance ``amplifier.gain``, so the ADC
        sees ``gain · g_max · V``, i.e. ``gain · g_max / input_gain`` per simulation unit (the
        read voltage cancels). Inhibitory nodes (V ≤ 0) use an inverting stage (sign −1), so
        both halves of a layer land in a unipolar ADC range. The sense device loads the node
        only while it is sampled, after the relaxation (not modelled).

        Raises :class:`ChipSpecError` when an output of 1 (the target level) reaches the ADC
        below one of its levels, naming the gain that maps it to ``converters.adc_hi``.
        """
        a = spec.amplifier.gain * spec.device.g_max / self.input_gain
        conv = spec.converters
        if conv.adc_bits > 0:
            lsb = (conv.adc_hi - conv.adc_lo) / (2**conv.adc_bits - 1)
            if a < lsb:
                need = conv.adc_hi * self.input_gain / spec.device.g_max
                volts = spec.array.read_voltage / self.input_gain
                raise ChipSpecError(
                    f"chip '{spec.name}': amplifier.gain = {spec.amplifier.gain:g} V/A reads the "
                    f"DRN's output of 1 ({volts * 1e3:.3g} mV at input gain "
                    f"{self.input_gain:g}) as {a:.3g} of the ADC's normalised input, below one "
                    f"of its levels ({lsb:.3g}); set amplifier.gain to about {need:.3g} V/A "
                    "(output 1 -> converters.adc_hi)"
                )
        gains = [-a * s for s in self._sign]  # _sign: -1 excitatory, +1 inhibitory
        gains.append(
            torch.full((self.sizes[-1],), a, dtype=self.dtype, device=self.weights[0].device)
        )
        return [g.to(self.dtype) for g in gains]

    def input_voltages(self, x: Tensor) -> Tensor:
        """Voltages (V) of the input sources, shape (batch, 2·features)."""
        return self.input_layer(x)

    def node_conductance(self, k: int) -> Tensor:
        """Total conductance (S) at each node of free layer k (1-based), shape (n_k,)."""
        w = self.weights[k - 1]
        g = column_sums(w)  # as ones @ w; kept from the weight update when it made them
        if k < self.num_layers:
            g = g + self.weights[k] @ w.new_ones(self.weights[k].shape[1])
        return g

    def _node_conductances(self) -> list[Tensor]:
        """:meth:`node_conductance` of every free layer, cached until the weights change."""
        return self._memo(
            "den",
            tuple(self.weights),
            lambda: [self.node_conductance(k) for k in range(1, self.num_layers + 1)],
        )

    def _output_curvature(self) -> Tensor:
        return self._node_conductances()[-1]

    def relax(self, x: Tensor, state=None, **kw):  # noqa: D102 - see LayeredNetwork.relax
        self._den = self._node_conductances()  # read once per relaxation, not per sweep
        return super().relax(x, state, **kw)

    def _fused_units(self) -> tuple | None:
        """Ideal diodes: ``clamp(drive / ΣG, lo, hi)``; linear outputs. Shockley: not fused."""
        if self.diode != "ideal":
            return None
        return self._node_conductances()[:-1], self._lo, self._hi, -math.inf, math.inf

    def _layer_solve(self, k: int, drive: Tensor) -> Tensor:
        if self.diode == "shockley":
            return shockley.layer_solve(
                drive, self._den[k - 1], self._sign[k - 1], self.diode_model
            )
        return torch.clamp(drive / self._den[k - 1], self._lo[k - 1], self._hi[k - 1])

    def _activate_output(self, v: Tensor) -> Tensor:
        return v  # the output nodes are linear

    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor:
        e = 0.5 * self.dissipated_power(x, state)
        for s, b in zip(state, self.biases):
            e = e - s @ b
        if self.diode == "shockley":
            e = e + shockley.diode_energy(state, self.diode_model)
        return e

    def dissipated_power(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """Power (W) dissipated in all conductances, Σ G ΔV², per sample."""
        return resistor_power(self.weights, [self.input_layer(x), *state])

    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        layers = [self.input_layer(x), *state]
        n = x.shape[0]
        gw = []
        for k in range(self.num_layers):
            a, b = layers[k], layers[k + 1]
            gw.append(
                0.5 * (a.pow(2).sum(0)[:, None] + b.pow(2).sum(0)[None, :] - 2 * a.t() @ b) / n
            )
        gb = [-s.mean(0) for s in state]
        return gw + gb

    def grad_difference(
        self, x: Tensor, plus: list[Tensor], minus: list[Tensor], scale: float
    ) -> list[Tensor | OuterProduct]:
        """``scale · (∂E/∂θ(plus) − ∂E/∂θ(minus))`` batch-averaged; weights as outer products.

        ∂E/∂G_ij = ½(V_i − V_j)² expands to row, column and cross terms, each rank-limited.
        """
        s_in = self._clamped_input(x)
        c = scale / x.shape[0]
        half = [0.5 * c * (p.pow(2).sum(0) - m.pow(2).sum(0)) for p, m in zip(plus, minus)]
        # input layer is clamped: its ΔV² row term cancels between the phases
        one = s_in.new_ones(1, s_in.shape[1])
        gw = [
            OuterProduct(
                torch.cat([one, s_in]), torch.cat([half[0][None], (minus[0] - plus[0]) * c])
            )
        ]
        for k in range(1, self.num_layers):
            n_in, n_out = plus[k - 1].shape[1], plus[k].shape[1]
            left = torch.cat([half[k - 1][None], s_in.new_ones(1, n_in), plus[k - 1], minus[k - 1]])
            right = torch.cat([s_in.new_ones(1, n_out), half[k][None], plus[k] * -c, minus[k] * c])
            gw.append(OuterProduct(left, right))
        gb = [(m - p).sum(0) * c for p, m in zip(plus, minus)]
        return gw + gb


def resistor_power(weights: list[Tensor], layers: list[Tensor]) -> Tensor:
    """Σ_k Σ_ij G_ij (V_k,i − V_k+1,j)² (W) per sample, shape (batch,), for conductances
    ``weights[k]`` (S) between layers k and k+1 and node voltages ``layers`` (V, batch-first,
    input layer included); ``V_i²·rowsum + V_j²·colsum − 2·V_iᵀ G V_j``: matmuls only."""
    p = None
    for g, a, b in zip(weights, layers[:-1], layers[1:], strict=True):
        term = a.pow(2) @ g.sum(1) + b.pow(2) @ g.sum(0) - 2 * ((a @ g) * b).sum(1)
        p = term if p is None else p + term
    return p
