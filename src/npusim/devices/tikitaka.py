"""The Tiki-Taka family of update rules: a fast analog array A takes the updates, a slow
array C (the weights the network uses) receives A's content by periodic transfers.

Each update is programmed into A, scaled by ``fast_gain`` (and by the row's chopper sign
c = +-1 for the chopped variants). After every update the next ``reads_per_update`` rows of
A are read with one-hot inputs (one forward read each: a DAC, a row of cells, the ADCs), the
read value v is added to a digital fp32 buffer H (``transfer_lr`` x v / fast_gain, in units
of C's device step), and the whole steps trunc(H) are fired into C's row and taken off H
(Gokmen, Front. Artif. Intell. 4, 699148 (2021), TTv2; aihwkit ``BufferedTransferCompound``
with ``forget_buffer=False``). The variants differ in what is read:

* ``ttv2``: v = A's row; A's symmetry point is weight 0 (its reference device), and the
  device's drift towards it makes A a leaky integrator of the updates (Gokmen & Haensch,
  Front. Neurosci. 14, 103 (2020)).
* ``cttv2``: chopped TTv2 (Rasch et al., Nat. Commun. 15, 2024, "Fast and robust analog
  in-memory deep neural network training"): v = c A's row, and c flips with probability
  ``chop_prob`` after each read of the row, so an offset of A averages out.
* ``agad``: AGAD (same paper): v = c (A's row - mu), where mu is the mean of A's reads over
  the previous chopper period (an exponential mean with weight min(5 / n, 1), n = the
  period of ceil(1 / chop_prob) reads), taken when the chopper flips (regularly, every n
  reads): a dynamic reference, so A needs no calibrated symmetry point.

On a noise-free, linear device a transfer moves exactly what was read: the C change plus the
change of H equals transfer_lr x v / fast_gain, so a fresh A read in full after one update
moves that update into C unbiased (``tests/test_update_rules.py``).

Extra periphery work, reported by :meth:`periphery_events`: per row read, one DAC conversion,
``cols`` device reads and ADC conversions, fp32 operations on H (and AGAD's means), and SRAM
traffic for H (and the means), 4 bytes each per read and write.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from npusim.chip.spec import ChipSpec
from npusim.core.outer import OuterProduct
from npusim.devices.ideal import add_exact
from npusim.devices.synapses import DeviceSynapses

_SEED_FAST = 0x7E1_7A7A
VARIANTS = ("ttv2", "cttv2", "agad")
TAIL_WEIGHTENING = 5.0  # AGAD's weight of recent reads in the running mean (aihwkit default)


def _quantise(v: Tensor, bits: int, full_scale: float) -> Tensor:
    """An ADC reading of ``v`` in [-full_scale, full_scale] with ``bits`` bits (0: exact)."""
    if bits <= 0:
        return v
    lsb = 2.0 * full_scale / (2**bits - 1)
    return (v / lsb).round_().mul_(lsb).clamp_(-full_scale, full_scale)


class TikiTakaSynapses:
    """Weights held in a slow device array C, trained through a fast device array A.

    spec: the chip (its device model for A and C, its ADC for A's reads); variant: one of
    :data:`VARIANTS`. fast_gain: A receives fast_gain x each update. transfer_lr: C receives
    transfer_lr / fast_gain x what is read from A. reads_per_update: rows of each matrix read
    and transferred per update (sequentially, wrapping around). chop_prob: chopper flip
    probability per read (cttv2) or 1 / its regular period (agad).
    """

    def __init__(
        self,
        spec: ChipSpec,
        params: list[Tensor],
        signed: list[bool],
        seed: int,
        on_device: list[bool] | None = None,
        *,
        variant: str = "ttv2",
        fast_gain: float = 1.0,
        transfer_lr: float = 1.0,
        reads_per_update: int = 16,
        chop_prob: float = 0.1,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        dev = spec.device
        self.variant = variant
        self.fast_gain, self.transfer_lr = float(fast_gain), float(transfer_lr)
        self.reads_per_update, self.chop_prob = int(reads_per_update), float(chop_prob)
        self.adc_bits = spec.converters.adc_bits
        self.params, self.signed = params, list(signed)
        held = [p.dim() >= 2 for p in params] if on_device is None else list(on_device)
        w_max = [
            dev.weight_range * (float(p.detach().abs().max()) or 1.0) if h and p.numel() else 1.0
            for p, h in zip(params, held, strict=True)
        ]
        self.w_max = w_max
        self.slow = DeviceSynapses(dev, params, signed, seed, held)
        self.fast_params = [torch.zeros_like(p) for p in params]
        self.fast = DeviceSynapses(dev, self.fast_params, signed, seed ^ _SEED_FAST, held, w_max)
        self.held = held

        def per_weight() -> list[Tensor | None]:
            return [
                torch.zeros(p.shape[0], p[0].numel(), device=p.device) if h else None
                for p, h in zip(params, held)
            ]

        self.h = per_weight()
        self.mean = per_weight() if variant == "agad" else [None] * len(params)
        self.past = per_weight() if variant == "agad" else [None] * len(params)
        self.chopper = [
            torch.ones(p.shape[0], device=p.device) if h else None for p, h in zip(params, held)
        ]
        self.switched = [
            torch.zeros(p.shape[0], dtype=torch.bool, device=p.device) if h else None
            for p, h in zip(params, held)
        ]
        self.next_row = [0] * len(params)
        self.cycles = [0] * len(params)  # full passes over each matrix's rows
        self.gen = torch.Generator().manual_seed(int(seed) ^ _SEED_FAST)
        self.read_noise = dev.read_noise * (1.0 - dev.g_min / dev.g_max)  # per device, of y
        self.events = {"dac": 0, "device_reads": 0, "adc": 0, "fp32_ops": 0, "bytes_tile": 0}

    # ---- counters the ledger reads --------------------------------------------------------
    @property
    def total_pulses(self) -> int:
        return self.fast.total_pulses + self.slow.total_pulses

    @property
    def reset_pulses(self) -> int:
        return self.fast.reset_pulses + self.slow.reset_pulses

    def periphery_events(self) -> dict[str, int]:
        """Cumulative transfer reads (DAC, device reads, ADC) and H's fp32 ops and SRAM bytes."""
        return dict(self.events)

    # ---- updates ---------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self, params: list[Tensor], deltas: list[Any]) -> None:
        """Program each update into A (chopped), then transfer the next rows of A to C."""
        for i, (p, d) in enumerate(zip(params, deltas, strict=True)):
            if not self.held[i]:
                add_exact(p, d, self.signed[i])
                continue
            scale = self.fast_gain / self.fast.pulse_unit(i)
            c = self.chopper[i]
            if isinstance(d, OuterProduct):
                x: Any = OuterProduct(d.left * c, d.right * scale)
            else:
                x = d.reshape(p.shape[0], -1) * (c[:, None] * scale)
            self.fast.program(i, x)
            self._transfer(i)
        self.fast.finish_update()
        self.slow.finish_update()

    def _read_rows(self, i: int, rows: Tensor) -> Tensor:
        """A's rows as one-hot forward reads deliver them: read noise, then the ADC."""
        a = self.fast_params[i].reshape(self.fast_params[i].shape[0], -1)[rows].clone()
        if self.read_noise > 0:
            devices = 2.0 if self.signed[i] else 1.0
            sd = self.read_noise * self.fast.scale[i] * math.sqrt(devices)
            a.add_(torch.randn(a.shape, generator=self.gen).to(a.device), alpha=sd)
        return _quantise(a, self.adc_bits, self.w_max[i])

    def _transfer(self, i: int) -> None:
        n_rows = self.params[i].shape[0]
        k = min(self.reads_per_update, n_rows)
        start = self.next_row[i]
        on = self.params[i].device  # the CPU generator's draws are moved there
        rows = (torch.arange(k, device=on) + start) % n_rows
        self.next_row[i] = (start + k) % n_rows
        v = self._read_rows(i, rows)
        c = self.chopper[i][rows]
        ops, words = 3, 2  # H += lr v (2 ops), trunc/take off (1 op); read/write H
        if self.variant == "agad":
            mean, past, sw = self.mean[i], self.past[i], self.switched[i][rows]
            if bool(sw.any()):  # a new chopper period: the last period's mean is the reference
                past[rows[sw]] = mean[rows[sw]]
                self.switched[i][rows] = False
            n = max(math.ceil(1.0 / self.chop_prob), 2)
            kappa = min(TAIL_WEIGHTENING / n, 1.0)
            signal = (v - past[rows]) * c[:, None]
            mean[rows] = mean[rows] * (1 - kappa) + v * kappa
            ops, words = ops + 4, words + 3  # subtract, sign, mean update; read mean/past, write
        elif self.variant == "cttv2":
            signal = v * c[:, None]
        else:
            signal = v
        period = n_rows / k  # updates between two reads of a row
        x = signal * (self.transfer_lr / (self.fast_gain * period * self.slow.pulse_unit(i)))
        left = torch.zeros(k, n_rows, device=on)
        left[torch.arange(k, device=on), rows] = 1.0
        self.slow.program(i, OuterProduct(left, x), acc=self.h[i])
        cols = v.shape[1]
        self.events["dac"] += k
        self.events["device_reads"] += k * cols
        self.events["adc"] += k * cols
        self.events["fp32_ops"] += ops * k * cols
        self.events["bytes_tile"] += 4 * words * k * cols
        self._chop(i, rows, wrapped=self.next_row[i] < start + k and start + k >= n_rows)

    def _chop(self, i: int, rows: Tensor, wrapped: bool) -> None:
        """Flip the choppers of the rows just read (cttv2: at random; agad: regularly)."""
        if self.variant == "cttv2":
            flip = torch.rand(len(rows), generator=self.gen).to(rows.device) < self.chop_prob
            self.chopper[i][rows[flip]] *= -1
        elif self.variant == "agad":
            n = max(math.ceil(1.0 / self.chop_prob), 2)
            if (self.cycles[i] % n) + 1 == n:
                self.chopper[i][rows] *= -1
                self.switched[i][rows] = True
        if wrapped:
            self.cycles[i] += 1

    # ---- reading and state -----------------------------------------------------------------
    def read(
        self,
        t_after_programming_s: float = 0.0,
        generator: torch.Generator | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """The slow array's weights (C), which the network uses."""
        return self.slow.read(t_after_programming_s, generator, out)

    def pulse_stats(self) -> dict[str, float]:
        """Pulses per device over both arrays (A and C), and each array's own figures."""
        fast, slow = self.fast.pulse_stats(), self.slow.pulse_stats()
        devices = fast["devices"] + slow["devices"]
        total = fast["pulses_total"] + slow["pulses_total"]
        out = dict(slow)
        out.update(
            devices=devices,
            pulses_total=total,
            pulses_mean=total / devices if devices else 0.0,
            pulses_max=max(fast["pulses_max"], slow["pulses_max"]),
            refreshes=fast["refreshes"] + slow["refreshes"],
            refresh_pulses=fast["refresh_pulses"] + slow["refresh_pulses"],
            reset_pulses=fast["reset_pulses"] + slow["reset_pulses"],
            stuck_devices=fast["stuck_devices"] + slow["stuck_devices"],
            fast_pulses_mean=fast["pulses_mean"],
            fast_pulses_max=fast["pulses_max"],
            slow_pulses_mean=slow["pulses_mean"],
            slow_pulses_max=slow["pulses_max"],
            buffer_bytes=4 * sum(h.numel() for h in self.h if h is not None),
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        def copy(ts: list[Tensor | None]) -> list[Tensor | None]:
            return [None if t is None else t.clone() for t in ts]

        return {
            "kind": self.variant,
            "fast": self.fast.state_dict(),
            "slow": self.slow.state_dict(),
            "h": copy(self.h),
            "mean": copy(self.mean),
            "past": copy(self.past),
            "chopper": copy(self.chopper),
            "switched": copy(self.switched),
            "next_row": list(self.next_row),
            "cycles": list(self.cycles),
            "gen": self.gen.get_state(),
            "events": dict(self.events),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.variant:
            raise ValueError("synapse state was saved by another update rule")
        self.fast.load_state_dict(state["fast"])
        self.slow.load_state_dict(state["slow"])
        for key in ("h", "mean", "past", "chopper", "switched"):
            for mine, saved in zip(getattr(self, key), state[key], strict=True):
                if mine is not None:
                    mine.copy_(saved)
        self.next_row, self.cycles = list(state["next_row"]), list(state["cycles"])
        self.gen.set_state(state["gen"])
        self.events = dict(state["events"])
