"""Synapse arrays: how a learning update reaches the weights a chip holds.

The trainer computes a desired update ``delta`` per parameter tensor and calls
``synapses.apply(params, deltas)``; afterwards ``params`` equal the effective
weights the chip holds.

Where parameters live: weight matrices (tensors with 2+ dimensions) are held
by devices; biases (1-D tensors) are held by the digital periphery as exact
registers and updated with ``p.add_(d)`` (clamped at 0 when flagged
non-negative). A signed weight is a differential pair w = s * (y+ - y-); a
non-negative weight (a DRN conductance) is one device w = s * y, where y is
the conductance normalised by g_max and s the tensor's weight scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from npusim.chip.spec import DeviceSpec
from npusim.core.outer import OuterProduct
from npusim.devices import coincidence, kernel, pulsed, torch_kernel
from npusim.devices.ideal import add_exact, deliver
from npusim.devices.pulsed import HI, LO

_SEED_DEVICES = 0x5EED_0001
_SEED_PULSES = 0x5EED_0002
_SEED_DRIFT = 0x5EED_0003
_SEED_REFRESH = 0x5EED_0004
_SEED_PROGRAM = 0x5EED_0005
KERNELS = ("auto", "numba", "torch")
_EMPTY = np.zeros(0, np.float32)  # no digital accumulator: the kernel rounds the update


class DeviceSynapses:
    """Weights held by pulsed memristive devices (see :mod:`npusim.devices.pulsed`).

    params: the network's parameter tensors (kept by reference; programmed to
    the chip at construction, so they may change slightly). signed: per
    tensor, True for a differential pair, False for one non-negative device.
    seed: draws the chip (device models, their assignment, faults) and the
    streams of programming randomness. w_max: per tensor, the full-swing |w| of a
    weight (default ``weight_range`` x the tensor's initial max |w|); an update rule's
    zero-initialised fast arrays set it. kernel_impl: ``numba`` (CPU only), ``torch``
    (:mod:`npusim.devices.torch_kernel`, any torch device, the same pulses) or ``auto`` (torch
    once the records live off the CPU, see :meth:`to`).

    Per weight one 16-byte record holds y+ and y- (conductance / g_max), both
    devices' bank rows and the pulses of the first device (:data:`kernel.RECORD`);
    an update is programmed by the fused kernels (:mod:`npusim.devices.kernel`),
    which touch only the records of pulsed weights.
    """

    def __init__(
        self,
        dev: DeviceSpec,
        params: list[Tensor],
        signed: list[bool],
        seed: int,
        on_device: list[bool] | None = None,
        w_max: list[float] | None = None,
        kernel_impl: str = "auto",
    ) -> None:
        if kernel_impl not in KERNELS:
            raise ValueError(
                f"kernel_impl must be one of {', '.join(KERNELS)}, got {kernel_impl!r}"
            )
        self.kernel_impl = kernel_impl
        if len(params) > kernel.MAX_TENSORS:
            raise ValueError(f"at most {kernel.MAX_TENSORS} parameter tensors, got {len(params)}")
        w_max_given = w_max
        self.dev = dev
        self.params = params
        self.signed = list(signed)
        self.seed = int(seed)
        self.on_device = [p.dim() >= 2 for p in params] if on_device is None else list(on_device)
        self.rng = np.random.SFC64(self.seed ^ _SEED_PULSES)
        gen = torch.Generator().manual_seed(self.seed ^ _SEED_DEVICES)
        y_lo, _, self.step0 = pulsed.nominal_range(dev)
        self.span = 1.0 - y_lo
        self.bank = pulsed.sample_bank(dev, pulsed.BANK_SIZE, gen)
        self._bank_np = self.bank.view(-1, 8).numpy()  # numba's copy (stays on the CPU)
        self._bank_t = self.bank.view(-1, 8)  # the torch kernel's, on the records' device
        self.noisy = dev.write_noise > 0
        self._endurance = int(min(dev.endurance, 2**31 - 1))  # pulses before a device wears out
        self.mode = kernel.ONE_DEVICE
        if dev.scheme == "bidirectional":
            self.mode = kernel.BIDIRECTIONAL
        elif dev.scheme == "one_sided":
            self.mode = kernel.ONE_SIDED
        self.rec: list[Tensor | None] = []  # (numel, 4) int32 records, see _bind
        self.c1: list[Tensor | None] = []  # pulses of the second device of a pair
        self.y: list[Tensor | None] = []  # views: conductance / g_max, (numel, devices)
        self.model: list[Tensor | None] = []  # views: bank row of a down step, (numel, devices)
        self.scale: list[float] = []
        self.updates = 0
        self.programs = 0  # direct programming calls (update rules' transfers)
        self.total_pulses = 0
        self.refreshes = 0
        self.refresh_pulses = 0
        self.reset_pulses = 0  # abrupt RESETs among total_pulses (one-sided refresh)
        for t, (p, sgn, held) in enumerate(zip(params, self.signed, self.on_device, strict=True)):
            if not held:
                self.y.append(None), self.model.append(None)
                self.rec.append(None), self.c1.append(None)
                self.scale.append(0.0)
                continue
            d = 2 if sgn else 1
            peak = float(p.detach().abs().max()) if p.numel() else 0.0
            w_max = dev.weight_range * (peak if peak > 0 else 1.0)
            if w_max_given is not None:
                w_max = float(w_max_given[t])
            if not sgn:
                self.scale.append(w_max)
            else:  # a full swing of the programmed device(s) spans 2 w_max
                self.scale.append(
                    w_max / (self.span / 2 if dev.scheme == "reference" else self.span)
                )
            # row of each device's down step in the bank (2 x model; its up step is the next row)
            model = 2 * torch.randint(1, pulsed.BANK_SIZE, (p.numel(), d), generator=gen)
            u = torch.rand((p.numel(), d), generator=gen)
            y = self._initial_state(p.detach().reshape(-1).cpu(), model, sgn, self.scale[-1])
            lo, hi = self._rows(model, 0)[..., LO], self._rows(model, 0)[..., HI]
            stuck_min = u < dev.stuck_min_fraction
            stuck = u < dev.stuck_min_fraction + dev.stuck_max_fraction
            y = torch.where(stuck, torch.where(stuck_min, lo, hi), y)
            if sgn:  # program-and-verify: the healthy device of a pair compensates a stuck one
                d_w = p.detach().reshape(-1).cpu() / self.scale[-1]
                only0, only1 = stuck[:, 0] & ~stuck[:, 1], stuck[:, 1] & ~stuck[:, 0]
                y[:, 1] = torch.where(only0, (y[:, 0] - d_w).clamp(lo[:, 1], hi[:, 1]), y[:, 1])
                y[:, 0] = torch.where(only1, (y[:, 1] + d_w).clamp(lo[:, 0], hi[:, 0]), y[:, 0])
            model[stuck] = pulsed.FROZEN
            self.rec.append(torch.zeros((p.numel(), 4), dtype=torch.int32))
            self.c1.append(torch.zeros(p.numel(), dtype=torch.int32))
            self._bind(len(self.rec) - 1)
            self.y[-1].copy_(y)
            self.model[-1].copy_(model)
        if params and params[0].device.type != "cpu":  # programmed on the CPU, then moved
            self.to(params[0].device)
        self._write_params(range(len(params)))

    def _bind(self, i: int) -> None:
        """Views of tensor ``i``'s 16-byte records: (y+, y-, model+ | model-, pulses+).

        ``model`` holds each device's bank row for a down step (2 x its model index,
        0 for a frozen device); the row after it is the up step. A weight of one
        device uses y+ and model+ (y- stays 0, model- frozen).
        """
        rec, d = self.rec[i], 2 if self.signed[i] else 1
        y, model = rec.view(torch.float32)[:, :d], rec.view(torch.int16)[:, 4 : 4 + d]
        if i < len(self.y):
            self.y[i], self.model[i] = y, model
        else:
            self.y.append(y), self.model.append(model)

    @property
    def use_torch(self) -> bool:
        """Whether updates run in the torch kernel (forced, or the records are off the CPU)."""
        return self.kernel_impl == "torch" or self._bank_t.device.type != "cpu"

    def to(self, device: torch.device | str) -> DeviceSynapses:
        """Move the records, pulse counters and device models to ``device`` (the parameters
        belong to the network, which moves them in place). Returns self."""
        if self.kernel_impl == "numba" and torch.device(device).type != "cpu":
            raise ValueError("the numba kernel runs on the CPU only; use kernel_impl='auto'")
        self._bank_t = self._bank_t.to(device)
        for i, rec in enumerate(self.rec):
            if rec is not None:
                self.rec[i], self.c1[i] = rec.to(device), self.c1[i].to(device)
                self._bind(i)
        return self

    def device_counts(self, i: int) -> Tensor | None:
        """Pulses received by each device of tensor ``i``, shape (numel, devices)."""
        if self.rec[i] is None:
            return None
        c0 = self.rec[i][:, 3]
        return torch.stack([c0, self.c1[i]], 1) if self.signed[i] else c0.unsqueeze(1)

    # -- helpers ---------------------------------------------------------------------
    def _rows(self, model: Tensor, up: Tensor | int) -> Tensor:
        """Bank rows (..., 8) of devices ``model`` for pulse direction ``up`` (1) / down (0)."""
        flat = (model + up).reshape(-1).cpu().numpy()
        rows = np.take(self._bank_np, flat, axis=0)
        return torch.from_numpy(rows).view(*model.shape, 8).to(model.device)

    def _noise(self, m: int) -> Tensor:
        """m zero-mean, unit-variance variates: Irwin-Hall sums of four 16-bit uniforms,
        as the programming kernel draws them."""
        words = self.rng.random_raw(m).view(np.uint16).reshape(m, 4)
        s = torch.from_numpy(words.sum(1, dtype=np.int64).astype(np.float32))
        return s.sub_(131070.0).mul_(1.0 / 37837.23)

    def _initial_state(self, w: Tensor, model: Tensor, sgn: bool, s: float) -> Tensor:
        """Program-and-verify the initial weights (:func:`pulsed.initial_state`)."""
        up, down0 = self._rows(model, 1), self._rows(model[:, :1], 0)[:, 0]
        noise = self._noise(up.shape[0] * up.shape[1]).view(up.shape[:2]) if self.noisy else None
        return pulsed.initial_state(self.dev, w / s, up, down0, sgn, noise)

    def _weights_from(self, i: int, y: Tensor) -> Tensor:
        w = y[:, 0] - y[:, 1] if self.signed[i] else y[:, 0]
        return w * self.scale[i]

    def _write_params(self, which: Any) -> None:
        with torch.no_grad():
            for i in which:
                if self.y[i] is not None:
                    self.params[i].copy_(self._weights_from(i, self.y[i]).view_as(self.params[i]))

    def pulse_unit(self, i: int) -> float:
        """Nominal weight change of one pulse on a weight of tensor ``i`` (weight units)."""
        pair_step = self.step0 * self.scale[i]
        if self.signed[i] and self.dev.scheme == "bidirectional":
            pair_step *= 2.0  # each pulse moves both devices of the pair
        return pair_step

    # -- programming -----------------------------------------------------------------
    @kernel.on_torch_threads
    def _run(self, i: int, key: np.uint64, x: Any, acc: Tensor | None = None) -> int:
        """Program desired pulses ``x`` (dense rows, or an ``OuterProduct`` whose all-zero
        ``left`` rows are skipped) into tensor ``i``'s devices: the numba kernel, or the torch
        kernel when :attr:`use_torch`. Returns the pulses fired."""
        p = self.params[i]
        rows = p.shape[0]
        outer = isinstance(x, OuterProduct)
        mode = self.mode if self.signed[i] else kernel.ONE_DEVICE
        stochastic, w = self.dev.rounding == "stochastic", p.detach().view(-1)
        if self.use_torch:
            flat = None if acc is None else acc.view(-1)
            args = (int(key), stochastic, mode, self.rec[i], self.c1[i], self._bank_t)
            args += (self.scale[i], w, self.noisy, self._endurance, flat)
            if outer:
                total = torch_kernel.apply_outer(_t32(x.left), _t32(x.right), *args)
            else:
                total = torch_kernel.apply_dense(_t32(x.reshape(rows, -1)), *args)
        else:
            total = np.zeros(rows, np.int64)
            common = (
                key, stochastic, mode, _records(self.rec[i]), self.c1[i].numpy(), self._bank_np,
                np.float32(self.scale[i]), w.numpy(), self.noisy, self._endurance, total,
                _EMPTY if acc is None else acc.view(-1).numpy(),
            )  # fmt: skip
            if outer:
                kernel.apply_outer(_f32(x.left), _f32(x.right), *common)
            else:
                kernel.apply_dense(_f32(x.reshape(rows, -1)), *common)
        torch.autograd.graph.increment_version(p)  # written in place behind torch's back
        fired = int(total.sum())
        self.total_pulses += fired
        return fired

    @torch.no_grad()
    def apply(self, params: list[Tensor], deltas: list[Any]) -> None:
        """Turn each desired update into pulses, program the devices, update ``params``.

        A factored update ``leftᵀ right`` is expanded row by row inside the kernel.
        """
        for i, (p, dlt) in enumerate(zip(params, deltas, strict=True)):
            if self.y[i] is None:
                add_exact(p, dlt, self.signed[i])
                continue
            inv_unit = 1.0 / self.pulse_unit(i)
            key = np.uint64(kernel.stream_key(self.seed ^ _SEED_PULSES, self.updates, i))
            if hasattr(dlt, "left") and hasattr(dlt, "right"):  # factored outer product
                self._run(i, key, OuterProduct(dlt.left, dlt.right * inv_unit))
            else:
                self._run(i, key, dlt * inv_unit)
        self.finish_update()

    @torch.no_grad()
    def program(self, i: int, pulses: Any, acc: Tensor | None = None) -> int:
        """Fire desired ``pulses`` (weight rows of tensor ``i``: a dense (rows, cols) tensor or
        an ``OuterProduct``, whose all-zero ``left`` rows are skipped) into its devices.

        Without ``acc`` the counts are rounded as the device's ``rounding`` says (whole counts
        stay whole). ``acc``: a (rows, cols) float32 digital accumulator in pulses: the kernel
        adds ``pulses``, fires ``trunc`` of the sum and keeps the rest. Random streams are
        keyed by a counter of these calls, apart from :meth:`apply`'s. Returns pulses fired.
        """
        key = np.uint64(kernel.stream_key(self.seed ^ _SEED_PROGRAM, self.programs, i))
        self.programs += 1
        return self._run(i, key, pulses, acc)

    @torch.no_grad()
    @kernel.on_torch_threads
    def program_batch(self, i: int, rows: Tensor, cols: Tensor | None = None) -> int:
        """Program a batch of whole pulse counts into tensor ``i``, sample after sample, in
        one kernel call (:mod:`npusim.devices.coincidence`): the coincidence counts
        ``rows[s]ᵀ cols[s]`` of pulse trains (rows (S, BL, n_in), cols (S, BL, n_out)), or
        with ``cols`` None the counts ``rows[s]`` (S, n_in, n_out). Each sample draws its
        write noise from its own stream, as one :meth:`program` call. Returns pulses fired.
        Runs in numba on the CPU (off the CPU: on copies, written back)."""
        mode = self.mode if self.signed[i] else kernel.ONE_DEVICE
        with self._numpy_state(i) as (rec, c1, w):
            common = (
                np.uint64(self.seed ^ _SEED_PROGRAM), self.programs, i, mode, rec, c1,
                self._bank_np, np.float32(self.scale[i]), w, self.noisy, self._endurance,
            )  # fmt: skip
            if cols is None:
                fired = coincidence.apply_counts(_f32(rows), *common)
            else:
                fired = coincidence.apply_trains(_f32(rows), _f32(cols), *common)
        self.programs += rows.shape[0]
        self.total_pulses += int(fired)
        return int(fired)

    @contextmanager
    def _numpy_state(self, i: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Tensor ``i``'s records (:data:`kernel.RECORD`), device-1 pulses and weights as numpy
        arrays for a numba kernel: views on the CPU, else CPU copies written back after."""
        w_dev = self.params[i].detach().view(-1)
        rec, c1, w = self.rec[i].cpu(), self.c1[i].cpu(), w_dev.cpu()
        yield _records(rec), c1.numpy(), w.numpy()
        if rec.data_ptr() != self.rec[i].data_ptr():
            self.rec[i].copy_(rec), self.c1[i].copy_(c1), w_dev.copy_(w)
        torch.autograd.graph.increment_version(self.params[i])

    def finish_update(self) -> None:
        """Count one update; refresh saturated pairs every ``refresh_interval`` updates."""
        self.updates += 1
        if self.dev.refresh and self.updates % self.dev.refresh_interval == 0:
            self.refresh()

    def periphery_events(self) -> dict[str, int]:
        """Extra periphery events of an update rule (none: each update programmed at once)."""
        return {}

    @torch.no_grad()
    @kernel.on_torch_threads
    def refresh(self) -> None:
        """Check every pair and refresh the saturated ones (see :func:`kernel.refresh_pairs`).

        A one-sided (PCM-like) pair is re-programmed by one abrupt RESET of each device to
        its floor, then gradual SETs: 2 of its pulses per refreshed pair count as
        ``reset_pulses`` (priced at ``energy.reset_pulse``); other schemes move both
        devices by gradual pulses only. Runs in numba on the CPU (off the CPU: on copies of
        the records, written back; a refresh is rare).
        """
        for i, y in enumerate(self.y):
            if y is None or not self.signed[i]:
                continue
            key = np.uint64(kernel.stream_key(self.seed ^ _SEED_REFRESH, self.updates, i))
            pairs, pulses = np.zeros(64, np.int64), np.zeros(64, np.int64)
            with self._numpy_state(i) as (rec, c1, w):
                kernel.refresh_pairs(
                    key, self.mode, np.float32(self.dev.refresh_level), np.float32(self.step0),
                    rec, c1, self._bank_np, np.float32(self.scale[i]), w, self.noisy,
                    self._endurance, pairs, pulses,
                )  # fmt: skip
            self.refreshes += int(pairs.sum())
            self.refresh_pulses += int(pulses.sum())
            self.total_pulses += int(pulses.sum())
            if self.mode == kernel.ONE_SIDED:
                self.reset_pulses += 2 * int(pairs.sum())

    # -- reading ---------------------------------------------------------------------
    @torch.no_grad()
    def read(
        self,
        t_after_programming_s: float = 0.0,
        generator: torch.Generator | None = None,
        out: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """Weights as read ``t_after_programming_s`` seconds after programming.

        Conductances drift as G0 (t/t0)^(-nu) (nu drawn per device, fixed per chip),
        then each read adds Gaussian noise of std read_noise * (g_max - g_min).
        With ``drift_compensation`` each tensor is rescaled by one global factor
        sum|w_programmed| / sum|w_read|. Periphery tensors are returned exactly.
        If ``out`` is given the weights are also copied into it.
        """
        nu_gen = torch.Generator().manual_seed(self.seed ^ _SEED_DRIFT)
        weights = []
        for i, p in enumerate(self.params):
            if self.y[i] is None:
                weights.append(p.detach().clone())
                continue
            y = self.y[i]
            nu = pulsed.sample_drift_nu(self.dev, tuple(y.shape), nu_gen).to(y.device)
            yt = pulsed.drift(y, nu, t_after_programming_s, self.dev.drift_t0)
            if self.dev.read_noise > 0:
                noise = torch.randn(yt.shape, generator=generator).to(yt.device)
                yt.add_(noise, alpha=self.dev.read_noise * self.span).clamp_(min=0.0)
            w = self._weights_from(i, yt)
            if self.dev.drift_compensation:
                ref = self._weights_from(i, y).abs().sum()
                w *= ref / w.abs().sum().clamp(min=1e-30)
            weights.append(w.view_as(p))
        return deliver(weights, out)

    def pulse_stats(self) -> dict[str, float]:
        """Pulses per device (mean, max), totals, refreshes and frozen devices."""
        counts = [self.device_counts(i) for i in range(len(self.rec)) if self.rec[i] is not None]

        devices = sum(c.numel() for c in counts)
        total = sum(int(c.sum(dtype=torch.int64)) for c in counts)
        return {
            "devices": devices,
            "pulses_total": total,
            "pulses_mean": total / devices if devices else 0.0,
            "pulses_max": max((int(c.max()) for c in counts if c.numel()), default=0),
            "refreshes": self.refreshes,
            "refresh_pulses": self.refresh_pulses,
            "reset_pulses": self.reset_pulses,
            "stuck_devices": sum(
                int((m == pulsed.FROZEN).sum()) for m in self.model if m is not None
            ),
            "updates": self.updates,
        }

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (the bank of models is redrawn from the seed)."""
        return {
            "kind": "devices",
            "seed": self.seed,
            "rec": [None if t is None else t.cpu().clone() for t in self.rec],
            "c1": [None if t is None else t.cpu().clone() for t in self.c1],
            "scale": list(self.scale),
            "updates": self.updates,
            "programs": self.programs,
            "total_pulses": self.total_pulses,
            "refreshes": self.refreshes,
            "refresh_pulses": self.refresh_pulses,
            "reset_pulses": self.reset_pulses,
            "rng": self.rng.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken on a chip built with the same spec and seed."""
        if state.get("kind") != "devices" or int(state["seed"]) != self.seed:
            raise ValueError("synapse state was saved from a different chip (kind or seed differ)")
        for key in ("rec", "c1"):
            on = self._bank_t.device  # the records live where this chip's kernel runs
            setattr(self, key, [None if t is None else t.to(on, copy=True) for t in state[key]])
        for i, rec in enumerate(self.rec):
            if rec is not None:
                self._bind(i)
        self.scale = list(state["scale"])
        self.updates = int(state["updates"])
        self.programs = int(state.get("programs", 0))
        self.total_pulses = int(state["total_pulses"])
        self.refreshes = int(state["refreshes"])
        self.refresh_pulses = int(state["refresh_pulses"])
        self.reset_pulses = int(state.get("reset_pulses", 0))  # absent before RESETs were counted
        self.rng.state = state["rng"]
        self._write_params(range(len(self.params)))


def _f32(t: Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view (or copy) of ``t``."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _t32(t: Tensor) -> Tensor:
    """A contiguous float32 tensor of ``t`` (for the torch kernel)."""
    return t.detach().to(torch.float32).contiguous()


def _records(rec: Tensor) -> np.ndarray:
    """A CPU record tensor (numel, 4) int32 as a numpy view of :data:`kernel.RECORD`."""
    return rec.numpy().view(kernel.RECORD).reshape(-1)
