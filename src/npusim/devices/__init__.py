"""npusim.devices: physics of the synapse devices and of the periphery converters.

``make_synapses`` builds the object a trainer applies its updates through:
``IdealSynapses`` (exact, for the ideal chip), or an update rule of ``UPDATE_RULES`` over
pulsed memristive devices with bounds, noise, asymmetry, faults, wear and drift:
``DeviceSynapses`` (``sgd``), ``MixedPrecisionSynapses`` (``mixed``) or
``TikiTakaSynapses`` (``ttv2``, ``cttv2``, ``agad``).
"""

from npusim.devices.converters import adc, dac, quantize
from npusim.devices.ideal import IdealSynapses
from npusim.devices.mixed import MixedPrecisionSynapses
from npusim.devices.pulsed import drift, sample_bank
from npusim.devices.rules import UPDATE_RULES, Synapses, make_synapses
from npusim.devices.synapses import DeviceSynapses
from npusim.devices.tikitaka import TikiTakaSynapses

__all__ = [
    "DeviceSynapses",
    "IdealSynapses",
    "MixedPrecisionSynapses",
    "TikiTakaSynapses",
    "UPDATE_RULES",
    "Synapses",
    "adc",
    "dac",
    "drift",
    "make_synapses",
    "quantize",
    "sample_bank",
]
