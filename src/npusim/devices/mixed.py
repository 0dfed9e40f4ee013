"""Mixed-precision update rule (Nandakumar et al., Front. Neurosci. 14, 406 (2020)).

Each update is added to a digital high-precision (fp32) accumulator chi, one per
device-held weight, in units of the weight's nominal device step; whenever |chi| reaches one
step, trunc(chi) whole pulses are fired into the devices and taken off chi. Updates that
cancel never reach the devices, so a noisy, asymmetric device is pulsed far less often than
when every update is programmed at once (``sgd``), and the expected weight change equals the
update (nothing is lost: the remainder stays in chi).

Extra periphery work per update, reported by :meth:`periphery_events` (priced by the cost
model with the chip's constants): 2 fp32 operations per held weight (accumulate, take off the
fired pulses) and 8 bytes of SRAM traffic (read and write chi, fp32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from npusim.chip.spec import DeviceSpec
from npusim.core.outer import OuterProduct
from npusim.devices.ideal import add_exact
from npusim.devices.synapses import DeviceSynapses

FP32_OPS_PER_WEIGHT = 2  # chi += update; chi -= fired pulses (compare/truncate fused)
BYTES_PER_WEIGHT = 8  # read and write one fp32 accumulator


def in_pulses(delta: Any, unit: float) -> Any:
    """An update in units of ``unit`` (the device step in weight units), still factored."""
    if isinstance(delta, OuterProduct):
        return OuterProduct(delta.left, delta.right / unit)
    return delta / unit


class MixedPrecisionSynapses:
    """Device-held weights updated through a digital accumulator (see module docstring).

    Arguments as :class:`DeviceSynapses`; ``chi`` holds one fp32 accumulator per held
    weight (pulses of the nominal step).
    """

    def __init__(
        self,
        dev: DeviceSpec,
        params: list[Tensor],
        signed: list[bool],
        seed: int,
        on_device: list[bool] | None = None,
    ) -> None:
        self.devices = DeviceSynapses(dev, params, signed, seed, on_device)
        self.params = params
        self.signed = list(signed)
        self.chi: list[Tensor | None] = [
            None if y is None else torch.zeros(p.shape[0], p[0].numel(), device=p.device)
            for p, y in zip(params, self.devices.y, strict=True)
        ]
        self.held = sum(p.numel() for p, c in zip(params, self.chi, strict=True) if c is not None)
        self.events = {"fp32_ops": 0, "bytes_tile": 0}

    @property
    def total_pulses(self) -> int:
        return self.devices.total_pulses

    @property
    def reset_pulses(self) -> int:
        return self.devices.reset_pulses

    @torch.no_grad()
    def apply(self, params: list[Tensor], deltas: list[Any]) -> None:
        """Accumulate each update; fire the whole steps; biases are added exactly."""
        for i, (p, d) in enumerate(zip(params, deltas, strict=True)):
            chi = self.chi[i]
            if chi is None:
                add_exact(p, d, self.signed[i])
                continue
            self.devices.program(i, in_pulses(d, self.devices.pulse_unit(i)), acc=chi)
        self.devices.finish_update()
        self.events["fp32_ops"] += FP32_OPS_PER_WEIGHT * self.held
        self.events["bytes_tile"] += BYTES_PER_WEIGHT * self.held

    def periphery_events(self) -> dict[str, int]:
        """Cumulative fp32 operations and SRAM bytes of the accumulator."""
        return dict(self.events)

    def read(
        self,
        t_after_programming_s: float = 0.0,
        generator: torch.Generator | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """The devices' weights (chi is not part of the weight the network sees)."""
        return self.devices.read(t_after_programming_s, generator, out)

    def pulse_stats(self) -> dict[str, float]:
        stats = self.devices.pulse_stats()
        stats["accumulator_bytes"] = 4 * self.held
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "mixed",
            "devices": self.devices.state_dict(),
            "chi": [None if c is None else c.clone() for c in self.chi],
            "events": dict(self.events),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "mixed":
            raise ValueError("synapse state was saved by another update rule")
        self.devices.load_state_dict(state["devices"])
        for c, saved in zip(self.chi, state["chi"], strict=True):
            if c is not None:
                c.copy_(saved)
        self.events = dict(state["events"])
