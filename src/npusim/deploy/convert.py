"""``deploy``: a PyTorch model's Linear and Conv2d layers onto the chip's arrays, and back.

Every ``nn.Linear`` and ``nn.Conv2d`` (groups 1, zero padding) becomes an analog layer
(:mod:`npusim.deploy.layers`); modules without parameters (activations, pooling, flatten,
dropout) and normalisation layers stay digital and are counted as digital work by the bill.
Any other module with parameters of its own (``nn.LSTM``, ``nn.Embedding``, a grouped
convolution, …) is refused by its module path unless ``digital_fallback`` leaves it digital.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from npusim.chip.spec import ChipSpec
from npusim.deploy.hwa import hwa_train
from npusim.deploy.layers import (
    AnalogConv2d,
    AnalogLinear,
    AnalogMatrix,
    AnalogSettings,
    analog_layers,
    program,
)
from npusim.deploy.noise import DeployError, noise_for

#: modules with parameters that are digital by design (elementwise scale and shift)
DIGITAL_OK = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.PReLU,
)


def _convertible(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return (
        isinstance(m, nn.Conv2d)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
    )


@dataclass
class FitReport:
    """Arrays a deployed model occupies: per layer (path, in, out, arrays) and in total,
    against the chip's ``array.tiles``; ``utilisation`` = weights' devices / devices of the
    arrays used (fraction)."""

    layers: list[dict]
    arrays: int
    available: int
    utilisation: float

    def as_dict(self) -> dict:
        return {
            "layers": self.layers,
            "arrays": self.arrays,
            "available": self.available,
            "utilisation": self.utilisation,
        }


def fit_report(model: nn.Module, chip: ChipSpec) -> FitReport:
    """How a deployed ``model`` fits ``chip`` (see :class:`FitReport`)."""
    rows, cols = chip.array.rows, chip.array.cols
    layers, arrays, used = [], 0, 0
    for name, m in analog_layers(model):
        layers.append(
            {
                "path": name,
                "in": m.in_features,
                "out": m.out_features,
                "row_blocks": m.row_blocks,
                "col_blocks": m.col_blocks,
                "arrays": m.arrays,
            }
        )
        arrays += m.arrays
        used += 2 * m.in_features * m.out_features
    util = used / (arrays * rows * cols) if arrays else 0.0
    return FitReport(layers, arrays, chip.array.tiles, util)


def deploy(
    module: nn.Module,
    chip: ChipSpec,
    *,
    noise: str | None = None,
    calibration: Tensor | None = None,
    digital_fallback: bool = False,
    seed: int = 0,
    drift_compensation: bool | None = None,
    ir_drop: bool = True,
    read_noise: bool = True,
    out_noise: bool = True,
    verify_iterations: int = 0,
    train: bool = False,
    train_data: tuple[Tensor, Tensor] | None = None,
    epochs: int = 3,
    **noise_options: float,
) -> nn.Module:
    """A copy of ``module`` whose Linear/Conv2d layers run on ``chip``'s arrays (eval mode).

    ``noise``: inference noise family (default: by chip, :func:`npusim.deploy.noise.noise_for`);
    ``calibration``: a batch of typical inputs (batch-first) that sets every layer's DAC and
    ADC ranges (else the chip's converter ranges); ``digital_fallback``: leave unsupported
    layers digital instead of refusing them; ``seed``: the programming drawn at once
    (re-draw with :func:`program`); ``drift_compensation``: default the chip's
    ``device.drift_compensation``; ``ir_drop``, ``read_noise``, ``out_noise``: switch those
    effects off; ``verify_iterations``: program-and-verify rounds. ``train=True`` first runs
    :func:`npusim.deploy.hwa_train` on ``train_data`` = (inputs, labels) for ``epochs``.
    Extra keyword arguments go to the noise model (``out_noise``, ``wire_ohm``, …).

    Raises :class:`DeployError` naming an unsupported layer's path, or, when the model needs
    more arrays than the chip has (``array.tiles``), both numbers.
    """
    nm = noise_for(chip, noise, verify_iterations=verify_iterations, **noise_options)
    comp = chip.device.drift_compensation if drift_compensation is None else drift_compensation
    settings = AnalogSettings(chip, nm, comp, ir_drop, read_noise, out_noise)
    model = copy.deepcopy(module).eval()
    _check_supported(model, digital_fallback)
    model = _analog(model, settings) or model
    _replace(model, settings)
    report = fit_report(model, chip)
    if report.arrays > chip.array.tiles:
        per = ", ".join(f"{d['path']}: {d['arrays']}" for d in report.layers)
        raise DeployError(
            f"the model needs {report.arrays} arrays of {chip.array.rows}x{chip.array.cols} "
            f"(signed weights as pairs; {per}) but chip '{chip.name}' has {chip.array.tiles} "
            f"(array.tiles); use a smaller model or a chip with more tiles"
        )
    if calibration is not None:
        calibrate(model, calibration)
    if train:
        if train_data is None:
            raise DeployError("deploy(..., train=True) needs train_data=(inputs, labels)")
        hwa_train(model, *train_data, epochs=epochs, seed=seed)
    program(model, seed)
    return model


def _check_supported(model: nn.Module, digital_fallback: bool) -> None:
    for name, m in model.named_modules():
        if _convertible(m) or isinstance(m, DIGITAL_OK):
            continue
        if any(True for _ in m.parameters(recurse=False)) and not digital_fallback:
            kind = type(m).__name__
            why = " (only groups=1 with zero padding)" if isinstance(m, nn.Conv2d) else ""
            raise DeployError(
                f"layer '{name or '<model>'}' ({kind}{why}) has no analog mapping: npusim "
                f"deploys nn.Linear and nn.Conv2d; pass digital_fallback=True "
                f"(--digital-fallback) to leave it digital"
            )


def _analog(m: nn.Module, settings: AnalogSettings) -> AnalogMatrix | None:
    if isinstance(m, nn.Linear):
        return AnalogLinear(m.weight, m.bias, settings).eval()
    if isinstance(m, nn.Conv2d) and _convertible(m):
        return AnalogConv2d(m, settings).eval()
    return None


def _replace(parent: nn.Module, settings: AnalogSettings) -> None:
    for name, child in parent.named_children():
        new = _analog(child, settings)
        if new is not None:
            setattr(parent, name, new)
        else:
            _replace(child, settings)


def undeploy(model: nn.Module) -> nn.Module:
    """The digital model back: every analog layer replaced by the ``nn.Linear`` /
    ``nn.Conv2d`` with its current digital weights and bias (a copy; ``model`` unchanged)."""
    holder = nn.Sequential(copy.deepcopy(model))
    _restore(holder)
    return holder[0]


to_digital = undeploy


def _restore(parent: nn.Module) -> None:
    for name, child in parent.named_children():
        if isinstance(child, AnalogConv2d):
            conv = nn.Conv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,  # type: ignore[arg-type]
                child.stride,  # type: ignore[arg-type]
                child.padding,  # type: ignore[arg-type]
                child.dilation,  # type: ignore[arg-type]
                bias=child.bias is not None,
                device=child.weight.device,
            )
            with torch.no_grad():
                conv.weight.copy_(child.weight.view_as(conv.weight))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)  # type: ignore[union-attr]
            setattr(parent, name, conv)
        elif isinstance(child, AnalogLinear):
            lin = nn.Linear(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                device=child.weight.device,
            )
            with torch.no_grad():
                lin.weight.copy_(child.weight)
                if child.bias is not None:
                    lin.bias.copy_(child.bias)  # type: ignore[union-attr]
            setattr(parent, name, lin)
        else:
            _restore(child)


@torch.no_grad()
def calibrate(model: nn.Module, x: Tensor) -> nn.Module:
    """Set every analog layer's DAC range (the inputs' [min, max], [0, max] when none is
    negative, symmetric otherwise) and ADC range (± the largest partial sum of one array) from
    a digital forward pass over ``x`` (moved to the layers' device); returns ``model``."""
    layers = [m for _, m in analog_layers(model)]
    if layers:
        x = x.to(layers[0].weight.device)
    for m in layers:
        m._calib = {"lo": 0.0, "hi": 0.0, "adc": 0.0}
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for m in layers:
            c, m._calib = m._calib, None
            assert c is not None
            lo, hi = c["lo"], c["hi"]
            if lo < 0:
                hi = max(hi, -lo)
                lo = -hi
            m.dac_range = (lo, hi if hi > lo else lo + 1.0)
            a = c["adc"] if c["adc"] > 0 else 1.0
            m.adc_range = (-a, a)
            m._fast_cache, m._conv_w = None, None
    return model
