"""Energy and latency of one generated token on the chip, beside the phone NPU and the H100.

One token at context length ``T`` (positions attended, the new one included) runs:

* every analog layer once (``positions`` = 1): its array reads, DAC/ADC conversions,
  amplifier reads, partial-sum/compensation/bias ops and SRAM values, counted by
  :func:`npusim.deploy.bill.layer_events`;
* in the digital periphery (8-bit MACs, ``energy.digital_mac``): per layer the attention
  scores ``q·k`` and the weighted values ``p·v``, ``T·n_embd`` MACs each, and two residual
  adds (``n_embd`` each); the embedding add (``n_embd``);
* in fp32 (``energy.digital_fp32_op``): each layer norm ``LN_OPS`` ops per feature (2 per
  layer + the final one), GELU ``GELU_OPS`` per MLP feature, per head the score scaling and
  a softmax over ``T`` scores (``SOFTMAX_OPS`` per score), and sampling from the softmax over
  the vocabulary (``SOFTMAX_OPS + 1`` per character: the cumulative draw);
* the KV cache, one byte per value at the converters' 8 bits: per layer the new token's key
  and value written (``2·n_embd``) and the ``T`` cached keys and values read
  (``2·T·n_embd``). The cache lives in the chip's SRAM while it fits ``sram_bytes`` (default
  64 KiB of buffer per 96 arrays of the chip, ISAAC's tile: Shafiee et al., ISCA 2016,
  Table 6: a 64 KB eDRAM buffer per tile of 12 IMAs × 8 crossbars); positions beyond it are
  read from and written to DRAM (``energy.dram_per_byte``);
* SRAM traffic of the digital work: every value a digital step reads or writes (layer norms,
  GELU, residual adds, q, the scores and probabilities, the attention output, the
  embedding rows of the token and its position).

Energy (J) = counts × the ChipSpec's constants (:mod:`npusim.deploy.bill`'s terms), static
energy = ``static_power`` × arrays × latency. Latency (s): the analog layers one after
another (each read ``max(read_time, ⌈cols / adcs_per_array⌉ / adc_rate)``) plus the digital ops
on ``clock × digital_lanes`` lanes; memory time is not modelled. So the energy per token is
affine in ``T``: the KV reads, the attention MACs and the softmax grow with it.

Baselines (:mod:`npusim.cost.baselines`): the same token's FLOPs (2 per MAC, 1 per other op)
at the H100's and the phone NPU's energy per op; the H100 adds HBM traffic for the weights
and the KV cache when they do not fit its L2 cache (they do for this model).
"""

from __future__ import annotations

import math

from torch import nn

from npusim.chip.spec import ChipSpec
from npusim.cost.baselines import H100_SXM, PHONE_NPU
from npusim.deploy.bill import IDEAL_BITS, TERMS, layer_events
from npusim.deploy.layers import analog_layers
from npusim.deploy.lm.model import GPTConfig

#: fp32 ops per feature of a layer norm: mean (1 add), variance (sub, mul, add), scale by
#: 1/σ (1 mul), affine (mul, add) — counted from LayerNorm's definition (Ba et al., 2016).
LN_OPS = 7
#: fp32 ops per feature of GELU's tanh form 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
#: (Hendrycks & Gimpel, 2016): 4 mul, 2 add, 1 tanh, 1 mul.
GELU_OPS = 8
#: fp32 ops per score of a softmax: max, subtract, exp, sum, divide.
SOFTMAX_OPS = 5
#: buffer of one ISAAC tile (B) and the crossbars it serves (Shafiee et al., ISCA 2016, Table 6)
TILE_BUFFER_BYTES = 64 * 1024
TILE_ARRAYS = 96


def chip_sram_bytes(chip: ChipSpec) -> int:
    """On-chip buffer (B) of ``chip``: 64 KiB per 96 arrays (ISAAC's tile), rounded up."""
    return TILE_BUFFER_BYTES * math.ceil(chip.array.tiles / TILE_ARRAYS)


def _bits(b: int) -> int:
    return b if b > 0 else IDEAL_BITS


def token_events(model: nn.Module, context: int, sram_bytes: int) -> dict:
    """Event counts of one token at context length ``context`` through a deployed model."""
    cfg: GPTConfig = model.cfg  # type: ignore[assignment]
    d, h, L, v = cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.vocab
    t = int(context)
    layers = [layer_events(name, m, 1) for name, m in analog_layers(model)]
    sums = {
        k: sum(layer[k] for layer in layers)
        for k in ("array_reads", "device_reads", "dac", "adc", "amplifier_reads", "macs")
    }
    attn_macs = L * 2 * t * d
    int8_ops = attn_macs + L * 2 * d + d + sum(layer["digital_ops"] for layer in layers)
    fp32_ops = (
        (2 * L + 1) * LN_OPS * d
        + L * GELU_OPS * 4 * d
        + L * h * t * (1 + SOFTMAX_OPS)
        + (SOFTMAX_OPS + 1) * v
    )
    # the KV cache: one byte per value; positions past what the SRAM holds go to DRAM
    per_pos = L * 2 * d
    sram_positions = max(0, sram_bytes // per_pos)
    in_sram = min(t, sram_positions)
    kv_sram = per_pos * in_sram + (per_pos if t <= sram_positions else 0)
    kv_dram = per_pos * (t - in_sram) + (per_pos if t > sram_positions else 0)
    act_values = (
        (2 * L + 1) * 2 * d  # layer norms in and out
        + L * 2 * 4 * d  # GELU in and out
        + L * 2 * 3 * d  # residual adds: two inputs and the output
        + L * (d + 2 * h * t + d)  # q, scores and probabilities, attention output
        + 2 * d  # the token's and the position's embedding rows
        + 2 * v  # logits to the sampler and its probabilities
    )
    sram_values = sum(layer["sram_values"] for layer in layers) + act_values
    return {
        "context": t,
        **sums,
        "arrays": sum(layer["arrays"] for layer in layers),
        "digital_ops": int8_ops,
        "attention_macs": attn_macs,
        "fp32_ops": fp32_ops,
        "sram_values": sram_values,
        "kv_sram_bytes": kv_sram,
        "kv_dram_bytes": kv_dram,
        "layers": layers,
    }


def token_bill(
    model: nn.Module, chip: ChipSpec, context: int, sram_bytes: int | None = None
) -> dict:
    """Energy (J, by term), latency (s) and events of one token at context length
    ``context`` on ``chip``, and the same token on the phone NPU and the H100."""
    sram = chip_sram_bytes(chip) if sram_bytes is None else int(sram_bytes)
    ev = token_events(model, context, sram)
    e, tm, a, c = chip.energy, chip.timing, chip.array, chip.converters
    word = max(1, math.ceil(max(_bits(c.dac_bits), _bits(c.adc_bits)) / 8))
    analog_s = sum(
        max(tm.read_time, math.ceil(layer["cols_per_read"] / a.adcs_per_array) / tm.adc_rate)
        for layer in ev["layers"]
    )
    digital_s = (ev["digital_ops"] + ev["fp32_ops"]) / (tm.clock * tm.digital_lanes)
    latency = analog_s + digital_s
    energy = {
        "array": ev["device_reads"] * e.read_device,
        "dac": ev["dac"] * e.dac_energy(_bits(c.dac_bits)),
        "adc": ev["adc"] * e.adc_energy(_bits(c.adc_bits)),
        "amplifiers": ev["amplifier_reads"] * e.amplifier_power * tm.read_time,
        "digital": ev["digital_ops"] * e.digital_mac + ev["fp32_ops"] * e.digital_fp32_op,
        "sram": ev["sram_values"] * word * e.sram_per_byte + ev["kv_sram_bytes"] * e.sram_per_byte,
        "dram": ev["kv_dram_bytes"] * e.dram_per_byte,
        "static": e.static_power * ev["arrays"] * latency,
    }
    assert tuple(energy) == TERMS
    total = sum(energy.values())
    flops = 2 * ev["macs"] + 2 * ev["attention_macs"] + ev["fp32_ops"] + ev["digital_ops"]
    flops -= ev["attention_macs"]  # the attention MACs are inside digital_ops already
    params = sum(p.numel() for p in model.parameters())
    kv_bytes = ev["kv_sram_bytes"] + ev["kv_dram_bytes"]
    gpu = H100_SXM
    hbm = 0.0
    if (params + kv_bytes) * gpu.bytes_per_value > gpu.cache_bytes:
        hbm = (params + kv_bytes) * gpu.bytes_per_value
    baselines = {
        PHONE_NPU.name: {
            "energy_j": {"compute": flops / PHONE_NPU.int8_ops_per_j, "memory": 0.0},
            "time_s": flops / (PHONE_NPU.peak_int8_ops * PHONE_NPU.utilisation),
        },
        gpu.name: {
            "energy_j": {"compute": flops * gpu.j_per_flop, "memory": hbm * gpu.mem_j_per_byte},
            "time_s": flops / (gpu.dense_peak_flops * gpu.utilisation),
        },
    }
    for b in baselines.values():
        b["total_j"] = sum(b["energy_j"].values())
        b["ratio_vs_chip"] = b["total_j"] / total if total > 0 else math.inf
    return {
        "chip": chip.name,
        "context": ev["context"],
        "energy_j": energy,
        "total_energy_j": total,
        "latency_s": latency,
        "sram_bytes": sram,
        "flops": flops,
        "events": {k: v for k, v in ev.items() if k != "layers"},
        "baselines": baselines,
    }


def run_bill(model: nn.Module, chip: ChipSpec, contexts: list[int]) -> dict:
    """The bill of a generation run whose forward positions had context lengths
    ``contexts`` (:func:`npusim.deploy.lm.model.generate`'s second result): energy (J) by
    term, latency (s) and the baselines' energy and time, summed over the run (divide by the
    tokens generated for a figure per token)."""
    if not contexts:
        raise ValueError("no forward positions")
    cache: dict[int, dict] = {}
    energy = dict.fromkeys(TERMS, 0.0)
    latency = 0.0
    base: dict[str, dict] = {}
    for t in contexts:
        if t not in cache:
            cache[t] = token_bill(model, chip, t)
        b = cache[t]
        for k in TERMS:
            energy[k] += b["energy_j"][k]
        latency += b["latency_s"]
        for name, v in b["baselines"].items():
            s = base.setdefault(name, {"energy_j": 0.0, "time_s": 0.0})
            s["energy_j"] += v["total_j"]
            s["time_s"] += v["time_s"]
    return {
        "energy_j": energy,
        "total_energy_j": sum(energy.values()),
        "latency_s": latency,
        "positions": len(contexts),
        "baselines": base,
    }
