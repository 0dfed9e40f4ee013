"""Declared interfaces between the stages (structural ``typing.Protocol``s, never probed with
``hasattr``): a network the chip relaxes, the synapses that hold its parameters, a gradient
estimator (learning rule), and the results they hand each other.

A new network, device family or learning rule implements one of these protocols in one new
file and registers itself (``npusim.circuits.NETWORKS``, ``npusim.devices.make_synapses``,
``npusim.learning.ESTIMATORS``); nothing else needs to know its class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from npusim.core.outer import OuterProduct
from npusim.core.phases import Phase

Update = Tensor | OuterProduct  # a parameter gradient or update: dense, or factored (rank-B)
Reader = Callable[[list[Tensor]], list[Tensor]]  # how a chip reads equilibria (e.g. its ADCs)


@dataclass
class Relaxation:
    """Result of a relaxation: the free layers' final state, the last sweep's residual
    (max absolute change of any unit, normalised units or V) and the sweeps run."""

    state: list[Tensor]
    residual: float
    sweeps: int


@dataclass(frozen=True)
class ArrayShape:
    """How a network uses one crossbar array (one weight matrix), for counting its events.

    ``rows × cols`` devices (a dense layer's ``n_in × n_out``; a convolution's unfolded patch
    ``C_in·k·k`` × its ``C_out`` channels), read ``uses`` times per sample (a convolution's
    output positions; 1 for a dense layer). ``in_units``/``out_units``: the units of the layers
    it joins (its output layer's units are ``uses × cols``). ``fed_back``: also read backward
    while relaxing (its input side is a free layer; false for a block's clamped input).
    ``block``: the energy-based block it belongs to (0 for a single-block network).
    ``ff_ops_in``: digital operations per sample of the feed-forward block that feeds this
    array's input (pooling, normalisation; 0 when nothing digital sits before it).
    ``read_back``: an analog feed-forward layer trained by backprop whose error on its input
    is read through the transposed array once per training sample (the backward pass).
    """

    rows: int
    cols: int
    uses: int
    in_units: int
    out_units: int
    fed_back: bool
    block: int = 0
    ff_ops_in: int = 0
    read_back: bool = False


def dense_arrays(sizes: list[int]) -> list[ArrayShape]:
    """The arrays of a layered network with layer sizes ``sizes``: one dense array per pair of
    neighbouring layers, one energy-based block, the input clamped."""
    return [
        ArrayShape(a, b, 1, a, b, fed_back=k >= 1)
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))
    ]


@dataclass
class GradientEstimate:
    """A learning rule's estimate of ∂L/∂θ (order of ``Network.params()``) with the
    relaxations that produced it, keyed by phase. ``blocks``: for a network of several
    energy-based blocks (``ArrayShape.block``), each block's relaxations keyed by phase
    (None: one block, whose relaxations are ``phases``)."""

    grads: list[Update]
    free: Relaxation
    phases: dict[Phase, Relaxation] = field(default_factory=dict)
    blocks: list[dict[Phase, Relaxation]] | None = None


@runtime_checkable
class Network(Protocol):
    """An energy-based network the chip relaxes (layers ``s_0`` clamped input .. ``s_L`` output).

    ``sizes``: physical layer sizes (what the arrays hold); ``logical_sizes``: the sizes a user
    gave (the DRN duplicates its inputs, so its physical input layer is twice the logical one).
    ``normalised_states``: states are normalised signals (a converter range applies to them).
    ``signed``: per parameter, may it be negative (a differential pair) or not (one device).
    """

    sizes: list[int]
    normalised_states: bool

    @property
    def logical_sizes(self) -> list[int]: ...

    @property
    def signed(self) -> list[bool]: ...

    @property
    def arrays(self) -> list[ArrayShape]:
        """The crossbar arrays holding the weights, in the order of the 2-D ``params()``."""
        ...

    def block_sweeps(self, sweeps: int) -> list[int]:
        """Sweeps each energy-based block (``ArrayShape.block``) runs when a relaxation is
        given ``sweeps`` (one block: ``[sweeps]``)."""
        ...

    def params(self) -> list[Tensor]: ...

    def load_params(self, params: list[Tensor]) -> None: ...

    def buffers(self) -> list[Tensor]:
        """State that is not a parameter but must be saved with one (batch norms' running
        statistics); empty for most networks."""
        ...

    def load_buffers(self, buffers: list[Tensor]) -> None: ...

    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor: ...

    def relax(
        self,
        x: Tensor,
        state: list[Tensor] | None = None,
        *,
        beta: float | Tensor = 0.0,
        target: Tensor | None = None,
        sweeps: int = 15,
        tol: float = 0.0,
        tile: int = 1,
    ) -> Relaxation: ...

    def relax_phases(
        self,
        x: Tensor,
        target: Tensor,
        betas: tuple[float, ...],
        *,
        sweeps: int = 15,
        free_sweeps: int | None = None,
        tol: float = 0.0,
    ) -> tuple[Relaxation, list[Relaxation]]:
        """The free relaxation, then one nudged relaxation per β from its equilibrium:
        (free, [nudged per β]) (reference: ``npusim.circuits.phases.relax_phases``)."""
        ...

    def output(self, state: list[Tensor]) -> Tensor: ...

    def predict(self, x: Tensor, sweeps: int = 15) -> Tensor: ...

    def param_grads(self, x: Tensor, state: list[Tensor]) -> list[Tensor]: ...

    def grad_difference(
        self, x: Tensor, a: list[Tensor], b: list[Tensor], scale: float
    ) -> list[Update]: ...

    def dissipated_power(self, x: Tensor, state: list[Tensor]) -> Tensor | None:
        """Steady-state power per sample in the network's own units (None: not a circuit)."""
        ...

    def read_gains(self, spec: Any) -> list[Tensor] | None:
        """Per free layer, the gain from a state value to the chip's normalised ADC input
        (``spec``: a ``ChipSpec``); None when the states are already normalised signals."""
        ...


@runtime_checkable
class Synapses(Protocol):
    """What holds a network's parameters on the chip: updates go in through ``apply`` (the
    device model decides what is stored), weights come out through ``read`` (with drift and
    read noise at a time after programming)."""

    total_pulses: int  # cumulative programming pulses fired (0 for exact synapses)
    reset_pulses: int  # of which abrupt RESET pulses (one-sided devices' refresh)

    def apply(self, params: list[Tensor], deltas: list[Update]) -> None: ...

    def read(
        self,
        t_after_programming_s: float = 0.0,
        generator: torch.Generator | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]: ...

    def pulse_stats(self) -> dict[str, float]: ...

    def periphery_events(self) -> dict[str, int]:
        """Cumulative periphery events of the update rule beyond the update itself, keyed by
        ledger counter (e.g. a digital accumulator's ``fp32_ops`` and ``bytes_tile``, a
        transfer's ``device_reads`` and ``adc``); empty when every update is programmed at
        once."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Estimator(Protocol):
    """A learning rule: relaxes the network as it needs and returns a gradient estimate.
    ``read``: how the chip reads the equilibria it learns from (None: exactly)."""

    read: Reader | None

    def __call__(self, model: Network, x: Tensor, target: Tensor) -> GradientEstimate: ...
