"""The inference bill of a deployed model: events per layer and array, priced with the chip's
own constants, beside the same model on an H100, an A100 and a phone NPU.

Counting model (one inference = one input sample; ``L`` = output positions of a layer, 1 for
a Linear, H_out·W_out for a Conv2d; ``K`` in, ``N`` out, ``R × C`` blocks):

* array reads: ``L·R·C`` reads of a pair of arrays; device reads ``2·K·N·L`` (every device of
  the used rows and columns conducts once per read);
* DAC conversions ``L·K·C`` (each column block's pair drives its rows; G+ and G− share them);
  ADC conversions ``L·N·R`` (each row block's partial sums; the pair's currents are
  subtracted before the ADC); column amplifiers ``2·L·N·R`` read integrations;
* digital ops (8-bit periphery): partial sums ``L·N·(R−1)``, compensation ``L·N·R`` (when on),
  bias ``L·N``; a digital module costs one op per output value (pooling: one per input value
  plus one per output);
* SRAM bytes: every DAC input and ADC output value, and every digital module's inputs and
  outputs (``word`` bytes each, 1 for 8-bit); DRAM bytes: the input sample, 1 byte a value
  (weights stay on the arrays).

Energy (J) = device reads × ``energy.read_device`` + conversions × ``adc/dac_energy(bits)`` +
amplifier reads × ``amplifier_power`` × ``read_time`` + digital ops × ``digital_mac`` + bytes ×
``sram_per_byte`` / ``dram_per_byte`` + ``static_power`` × arrays × latency. Latency (s): the
layers run one after another; the arrays of a layer in parallel, each read taking
``max(read_time, ⌈cols used / adcs_per_array⌉ / adc_rate)``; digital ops at ``clock ×
digital_lanes``. Area (m²): the arrays used with their ADCs, DACs and amplifiers, plus the
digital periphery. An ideal (0-bit) converter is priced at 8 bits. With ``replicate`` a conv
layer's arrays are copied so its positions are read in parallel (fewer µs, less static
energy, more area).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from npusim.chip.spec import ChipSpec
from npusim.cost.baselines import GPUS, PHONE_NPU
from npusim.deploy.layers import AnalogConv2d, AnalogMatrix

#: resolution at which an ideal (0-bit) converter is priced (bits). Shafiee et al., ISAAC,
#: ISCA 2016: 8-bit ADCs and 8-bit inputs.
IDEAL_BITS = 8
TERMS = ("array", "dac", "adc", "amplifiers", "digital", "sram", "dram", "static")
_POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.MaxPool1d)
_FREE = (nn.Flatten, nn.Dropout, nn.Identity, nn.Unflatten)


def layer_events(name: str, m: AnalogMatrix, positions: int) -> dict:
    """Events of one analog layer read at ``positions`` output positions (see the module
    docstring): array and device reads, conversions, amplifier reads, digital ops, SRAM
    values and MACs."""
    k, n, r, c = m.in_features, m.out_features, m.row_blocks, m.col_blocks
    comp = m.settings.drift_compensation
    return {
        "path": name,
        "kind": "conv2d" if isinstance(m, AnalogConv2d) else "linear",
        "in": k,
        "out": n,
        "positions": positions,
        "row_blocks": r,
        "col_blocks": c,
        "arrays": m.arrays,
        "array_reads": positions * r * c,
        "device_reads": 2 * k * n * positions,
        "dac": positions * k * c,
        "adc": positions * n * r,
        "amplifier_reads": 2 * positions * n * r,
        "digital_ops": positions * n * ((r - 1) + (r if comp else 0) + 1),
        "sram_values": positions * (k * c + n * r),
        "macs": positions * k * n,
        "cols_per_read": min(n, m.cols),
    }


def count_events(model: nn.Module, example: Tensor) -> dict:
    """Events of one inference of ``model`` (deployed) on ``example`` (one sample, batch-first
    with batch 1): per analog layer and in total, see the module docstring."""
    layers: list[dict] = []
    digital: list[dict] = []
    hooks = []

    def analog_hook(name: str):
        def hook(m: AnalogMatrix, inp: tuple[Tensor, ...], out: Tensor) -> None:
            positions = (
                out[0, 0].numel()
                if isinstance(m, AnalogConv2d)
                else out[0].numel() // m.out_features
            )
            layers.append(layer_events(name, m, positions))

        return hook

    def digital_hook(name: str):
        def hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            n_in, n_out = inp[0][0].numel(), out[0].numel()
            if isinstance(m, _FREE):
                ops = 0
            elif isinstance(m, _POOLS):
                ops = n_in + n_out
            else:
                ops = n_out
            digital.append(
                {
                    "path": name,
                    "kind": type(m).__name__,
                    "digital_ops": ops,
                    "sram_values": n_in + n_out if ops else 0,
                }
            )

        return hook

    for name, m in model.named_modules():
        if isinstance(m, AnalogMatrix):
            hooks.append(m.register_forward_hook(analog_hook(name)))
        elif not any(True for _ in m.children()) and not isinstance(m, AnalogMatrix):
            hooks.append(m.register_forward_hook(digital_hook(name)))
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return {"analog": layers, "digital": digital, "input_values": example[0].numel()}


def _bits(b: int) -> int:
    return b if b > 0 else IDEAL_BITS


def _replicas(layers: list[dict], chip: ChipSpec, dig_time: float) -> list[int]:
    """Copies of each layer's arrays: conv layers doubled greedily (the slowest first) while
    the static energy ``static_power × arrays × latency`` falls and the chip has the arrays."""
    k = [1] * len(layers)

    def cost(k: list[int]) -> tuple[float, int]:
        arrays = sum(layer["arrays"] * n for layer, n in zip(layers, k))
        lat = sum(
            math.ceil(layer["positions"] / n) * layer["cycle_s"] for layer, n in zip(layers, k)
        )
        return arrays * (lat + dig_time), arrays

    best, _ = cost(k)
    while True:
        lat = [math.ceil(layer["positions"] / n) * layer["cycle_s"] for layer, n in zip(layers, k)]
        i = max(range(len(layers)), key=lambda j: lat[j] if k[j] < layers[j]["positions"] else -1)
        if k[i] >= layers[i]["positions"]:
            return k
        trial = list(k)
        trial[i] = min(2 * k[i], layers[i]["positions"])
        c, arrays = cost(trial)
        if c >= best or arrays > chip.array.tiles:
            return k
        k, best = trial, c


def inference_bill(
    model: nn.Module, chip: ChipSpec, example: Tensor, gpu_batch: int = 64, replicate: bool = False
) -> dict:
    """Energy (J, by term), latency (s), area (m²), arrays used and utilisation of one
    inference of a deployed ``model`` on ``chip``, with the events per layer and the same
    model's FLOPs priced on the H100, A100 and phone-NPU baselines (:mod:`npusim.cost.baselines`;
    GPU inputs and, if they miss the cache, parameters per batch of ``gpu_batch`` from HBM).

    ``replicate``: a conv layer's arrays may be copied onto spare arrays so that its output
    positions are read in parallel (``replicas`` per layer, chosen by :func:`_replicas`); the
    reads, conversions and digital work stay the same, latency and static energy fall, area
    grows. (The accuracy simulation programs one copy; copies have the same statistics.)"""
    ev = count_events(model, example)
    e, t, a, c = chip.energy, chip.timing, chip.array, chip.converters
    word = max(1, math.ceil(max(_bits(c.dac_bits), _bits(c.adc_bits)) / 8))
    tot = {
        k: sum(layer[k] for layer in ev["analog"])
        for k in ("array_reads", "device_reads", "dac", "adc", "amplifier_reads", "macs", "arrays")
    }
    dig_ops = sum(layer["digital_ops"] for layer in ev["analog"]) + sum(
        d["digital_ops"] for d in ev["digital"]
    )
    sram_values = sum(layer["sram_values"] for layer in ev["analog"]) + sum(
        d["sram_values"] for d in ev["digital"]
    )
    for layer in ev["analog"]:
        layer["cycle_s"] = max(
            t.read_time, math.ceil(layer["cols_per_read"] / a.adcs_per_array) / t.adc_rate
        )
    dig_time = dig_ops / (t.clock * t.digital_lanes)
    reps = _replicas(ev["analog"], chip, dig_time) if replicate else [1] * len(ev["analog"])
    latency = dig_time
    for layer, k in zip(ev["analog"], reps):
        layer["replicas"] = k
        layer["latency_s"] = math.ceil(layer["positions"] / k) * layer["cycle_s"]
        latency += layer["latency_s"]
    tot["arrays"] = sum(layer["arrays"] * k for layer, k in zip(ev["analog"], reps))
    energy = {
        "array": tot["device_reads"] * e.read_device,
        "dac": tot["dac"] * e.dac_energy(_bits(c.dac_bits)),
        "adc": tot["adc"] * e.adc_energy(_bits(c.adc_bits)),
        "amplifiers": tot["amplifier_reads"] * e.amplifier_power * t.read_time,
        "digital": dig_ops * e.digital_mac,
        "sram": sram_values * word * e.sram_per_byte,
        "dram": ev["input_values"] * e.dram_per_byte,
        "static": e.static_power * tot["arrays"] * latency,
    }
    per_array = (
        e.array_area
        + a.adcs_per_array * e.adc_area
        + a.rows * e.dac_area
        + chip.amplifier.per_array * e.amplifier_area
    )
    area = {"arrays_and_periphery": tot["arrays"] * per_array, "digital": e.digital_area}
    used = sum(2 * layer["in"] * layer["out"] * k for layer, k in zip(ev["analog"], reps))
    utilisation = used / (tot["arrays"] * a.rows * a.cols) if tot["arrays"] else 0.0
    flops = (
        2 * tot["macs"]
        + sum(layer["positions"] * layer["out"] for layer in ev["analog"])
        + sum(d["digital_ops"] for d in ev["digital"])
    )
    params = sum(p.numel() for p in model.parameters())
    baselines = {}
    for gpu in GPUS.values():
        nbytes = ev["input_values"] * gpu.bytes_per_value
        if params * gpu.bytes_per_value > gpu.cache_bytes:
            nbytes += params * gpu.bytes_per_value / gpu_batch
        baselines[gpu.name] = {
            "energy_j": {"compute": flops * gpu.j_per_flop, "memory": nbytes * gpu.mem_j_per_byte},
            "time_s": flops / (gpu.dense_peak_flops * gpu.utilisation),
            "area_m2": gpu.die_area_m2,
        }
    npu = PHONE_NPU
    baselines[npu.name] = {
        "energy_j": {
            "compute": flops / npu.int8_ops_per_j,
            "memory": ev["input_values"] * e.dram_per_byte,
        },
        "time_s": flops / (npu.peak_int8_ops * npu.utilisation),
        "area_m2": npu.area_m2,
    }
    total = sum(energy.values())
    for b in baselines.values():
        b["total_j"] = sum(b["energy_j"].values())
        b["ratio_vs_chip"] = b["total_j"] / total if total > 0 else math.inf
    return {
        "chip": chip.name,
        "replicated": replicate,
        "energy_j": energy,
        "total_energy_j": total,
        "latency_s": latency,
        "area_m2": area,
        "total_area_m2": sum(area.values()),
        "arrays": tot["arrays"],
        "utilisation": utilisation,
        "events": {
            **{k: v for k, v in tot.items() if k != "arrays"},
            "digital_ops": dig_ops,
            "sram_bytes": sram_values * word,
            "dram_bytes": ev["input_values"],
        },
        "flops": flops,
        "layers": ev["analog"],
        "digital_layers": ev["digital"],
        "baselines": baselines,
    }
