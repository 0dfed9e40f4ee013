"""npusim.devices: physics of the synapse devices and of the periphery converters.

``make_synapses`` builds the object a trainer applies its updates through:
``IdealSynapses`` (exact, for the ideal chip) or ``DeviceSynapses`` (pulsed
memristive devices with bounds, noise, asymmetry, faults, wear and drift).
"""

from npusim.devices.converters import adc, dac, quantize
from npusim.devices.ideal import IdealSynapses
from npusim.devices.pulsed import drift, sample_bank
from npusim.devices.synapses import DeviceSynapses, Synapses, make_synapses

__all__ = [
    "DeviceSynapses",
    "IdealSynapses",
    "Synapses",
    "adc",
    "dac",
    "drift",
    "make_synapses",
    "quantize",
    "sample_bank",
]
