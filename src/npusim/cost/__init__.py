"""npusim.cost: energy (J), time (s) and area (m²) from a Ledger and a chip's ``ChipSpec``;
GPU and phone-NPU baselines on the same work; the claims check."""

from npusim.cost.baselines import (
    A100_SXM,
    GPUS,
    H100_SXM,
    PHONE_NPU,
    GpuPreset,
    PhoneNpuPreset,
    forward_flops,
    measure_backprop_training,
    measure_energy_j,
    training_flops,
)
from npusim.cost.claims import claims_check, floors
from npusim.cost.constants import PhysicalLimits, constants_table, cost_spec
from npusim.cost.npu import TERMS, NpuCost, npu_area, npu_cost, per_sample, phase_time
from npusim.cost.physics import dissipated_power, source_power

__all__ = [
    "A100_SXM",
    "GPUS",
    "H100_SXM",
    "PHONE_NPU",
    "TERMS",
    "GpuPreset",
    "NpuCost",
    "PhoneNpuPreset",
    "PhysicalLimits",
    "claims_check",
    "constants_table",
    "cost_spec",
    "dissipated_power",
    "floors",
    "forward_flops",
    "measure_backprop_training",
    "measure_energy_j",
    "npu_area",
    "npu_cost",
    "per_sample",
    "phase_time",
    "source_power",
    "training_flops",
]
