"""Update rules: how an update reaches a chip's devices, by name (``UPDATE_RULES``).

* ``sgd``: every update programmed at once (:class:`DeviceSynapses`).
* ``mixed``: digital accumulation, whole device steps transferred (:mod:`.mixed`).
* ``ttv2``, ``cttv2``, ``agad``: the Tiki-Taka family, a fast array A and transfers to the
  slow array C (:mod:`.tikitaka`).

An ideal chip (exact weights) ignores the rule: every rule's expected update is the update.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from npusim.chip.capacity import check_fits
from npusim.chip.spec import ChipSpec
from npusim.devices.ideal import IdealSynapses
from npusim.devices.mixed import MixedPrecisionSynapses
from npusim.devices.synapses import DeviceSynapses
from npusim.devices.tikitaka import TikiTakaSynapses

Synapses = IdealSynapses | DeviceSynapses | MixedPrecisionSynapses | TikiTakaSynapses
Builder = Callable[[ChipSpec, list[Tensor], list[bool], int, list[bool] | None], Synapses]


def _tikitaka(variant: str) -> Builder:
    def build(spec, params, signed, seed, on_device):  # noqa: ANN001, ANN202
        return TikiTakaSynapses(spec, params, signed, seed, on_device, **TT_DEFAULTS[variant])

    return build


# Per variant: fast_gain, transfer_lr, reads_per_update, chop_prob (see TikiTakaSynapses).
# transfer_lr 40 (fast_gain 10) chosen for ttv2 on the mnist5k validation split, DHN-1H on
# rram-gong2018, 500 updates (validation error 0.082 against 0.104 at 10, 0.318 at 1 and
# 0.090 for sgd); cttv2 and agad use the same values (not tuned separately).
TT_DEFAULTS: dict[str, dict] = {
    "ttv2": {"variant": "ttv2", "fast_gain": 10.0, "transfer_lr": 40.0, "reads_per_update": 16},
    "cttv2": {
        "variant": "cttv2", "fast_gain": 10.0, "transfer_lr": 40.0, "reads_per_update": 16,
        "chop_prob": 0.05,
    },
    "agad": {
        "variant": "agad", "fast_gain": 10.0, "transfer_lr": 40.0, "reads_per_update": 16,
        "chop_prob": 0.05,
    },
}  # fmt: skip

UPDATE_RULES: dict[str, Builder] = {
    "sgd": lambda spec, params, signed, seed, on: DeviceSynapses(
        spec.device, params, signed, seed, on
    ),
    "mixed": lambda spec, params, signed, seed, on: MixedPrecisionSynapses(
        spec.device, params, signed, seed, on
    ),
    "ttv2": _tikitaka("ttv2"),
    "cttv2": _tikitaka("cttv2"),
    "agad": _tikitaka("agad"),
}


def make_synapses(
    spec: ChipSpec,
    params: list[Tensor],
    signed: list[bool],
    seed: int,
    on_device: list[bool] | None = None,
    update: str = "sgd",
) -> Synapses:
    """Synapses for a chip: exact ones for an ideal device model, else the update rule
    ``update`` (a key of :data:`UPDATE_RULES`) over the chip's devices.

    on_device: per tensor, whether devices hold it (default: tensors with 2+
    dimensions; 1-D biases stay in the digital periphery). Raises
    :class:`npusim.chip.ChipSpecError` when the device-held matrices need more arrays
    than the chip's ``array.tiles`` (:func:`npusim.chip.capacity.check_fits`), and
    ``ValueError`` for an unknown rule.
    """
    if update not in UPDATE_RULES:
        raise ValueError(f"update rule must be one of {', '.join(UPDATE_RULES)}, got {update!r}")
    if len(params) != len(signed):
        raise ValueError(f"got {len(params)} parameter tensors but {len(signed)} signed flags")
    held = [p.dim() >= 2 for p in params] if on_device is None else list(on_device)
    matrices = [(p, s) for p, s, h in zip(params, signed, held, strict=True) if h]
    check_fits(spec, [(p.shape[0], p[0].numel()) for p, _ in matrices], [s for _, s in matrices])
    if spec.is_ideal:
        return IdealSynapses(params, signed)
    return UPDATE_RULES[update](spec, params, signed, seed, on_device)
