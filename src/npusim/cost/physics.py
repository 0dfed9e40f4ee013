"""Power of a layered resistive network at a steady state, from its own voltages.

``weights[k]`` (S, shape ``(n_k, n_{k+1})``) connects layer ``k`` to layer ``k+1``;
``layer_voltages`` (V, batch-first) includes the input layer (voltage sources). Biases are
current sources (A) into layers ``1..L``. Diodes sit at 0 V when they conduct, so they absorb
no power; by Tellegen's theorem the conductances dissipate exactly what the sources deliver.
"""

from __future__ import annotations

from torch import Tensor

from npusim.circuits.resistive import resistor_power


def dissipated_power(weights: list[Tensor], layer_voltages: list[Tensor]) -> Tensor:
    """Σ_k Σ_ij G_ij (V_i − V_j)² (W), per sample, shape (batch,).

    Uses V_i²·rowsum + V_j²·colsum − 2·V_iᵀ G V_j per layer pair: matmuls only.
    """
    if len(layer_voltages) != len(weights) + 1:
        raise ValueError(
            f"need {len(weights) + 1} layer voltages (input layer included), "
            f"got {len(layer_voltages)}"
        )
    return resistor_power(weights, layer_voltages)


def source_power(
    weights: list[Tensor],
    biases: list[Tensor] | None,
    layer_voltages: list[Tensor],
    extra_currents: list[Tensor | None] | None = None,
) -> Tensor:
    """Power (W) the sources deliver, per sample, shape (batch,).

    Input voltage sources: each pushes I_i = Σ_j G_ij (V_i − V_j) into the network at V_i.
    Bias current sources: b_i (A) injected at node voltage V_i. ``extra_currents[k]`` (A,
    batch-first, for layer ``k+1``) adds further injected currents such as an output nudge.
    """
    v_in, v1, g0 = layer_voltages[0], layer_voltages[1], weights[0]
    current_in = v_in * g0.sum(1) - v1 @ g0.t()  # (batch, n_0), A out of each source
    p = (v_in * current_in).sum(1)
    for k, v in enumerate(layer_voltages[1:]):
        if biases is not None and biases[k] is not None:
            p = p + v @ biases[k]
        if extra_currents is not None and extra_currents[k] is not None:
            p = p + (v * extra_currents[k]).sum(1)
    return p
