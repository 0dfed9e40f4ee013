"""npusim.deploy: a PyTorch model on the chip's arrays for inference.

``deploy(model, chip)`` tiles every Linear/Conv2d onto the arrays (differential pairs,
digital partial sums and biases), simulates programming error, drift, read noise, drift
compensation, converters and IR drop (:mod:`npusim.deploy.layers`, noise families in
:mod:`npusim.deploy.noise`); ``undeploy`` gives the digital model back; ``hwa_train`` trains
with the chip in the forward pass; ``inference_bill`` prices one inference beside GPU and
phone-NPU baselines; ``to_nir`` / ``from_nir`` exchange graphs with NIR.
"""

from npusim.deploy.convert import FitReport, calibrate, deploy, fit_report, to_digital, undeploy
from npusim.deploy.hwa import error_rate, hwa_train
from npusim.deploy.layers import (
    AnalogConv2d,
    AnalogLinear,
    AnalogMatrix,
    AnalogSettings,
    analog_layers,
    program,
    set_time,
)
from npusim.deploy.noise import FAMILIES, DeployError, InferenceNoise, noise_for

__all__ = [
    "FAMILIES",
    "AnalogConv2d",
    "AnalogLinear",
    "AnalogMatrix",
    "AnalogSettings",
    "DeployError",
    "FitReport",
    "InferenceNoise",
    "analog_layers",
    "calibrate",
    "deploy",
    "error_rate",
    "fit_report",
    "hwa_train",
    "noise_for",
    "program",
    "set_time",
    "to_digital",
    "undeploy",
]
