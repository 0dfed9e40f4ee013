"""On-device continual learning: a run's trained chip learns online, one sample at a time
(batch 1, through :meth:`npusim.runtime.Trainer.step`, so its devices, converters, update rule
and the ledger all apply), from a stream whose distribution shifts, within a power budget.

What it measures along the stream (:func:`learn_on_edge`): accuracy on held-out samples of the
new distribution and of the original one (forgetting), energy per update (the stream ledger
priced by the chip's cost model, :func:`npusim.cost.npu.npu_cost`), the update rate the power
budget allows (capped by the cost model's time per update), pulses per device per update and
the devices' projected lifetime at that rate, and the on-chip memory of an optional replay
buffer. Baselines on the same stream: the same network fine-tuned by backprop on a phone NPU,
and the frozen chip (no updates).

Assumptions: "energy per update" is the energy of one stream sample learned, its replay step
included (one stored sample replayed after each stream sample when a buffer is kept). Between
updates the arrays are power-gated: leakage (``energy.static_power``) is paid while an update
runs; ``static_power_w`` reports what an always-on chip would leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from npusim.chip import ChipSpec, load_chip
from npusim.core.phases import Phase
from npusim.cost.baselines import PHONE_NPU, PhoneNpuPreset
from npusim.cost.constants import drn_power_scale_w
from npusim.cost.npu import arrays_in_use, npu_cost
from npusim.data.datasets import load_dataset
from npusim.edge.errors import EdgeError
from npusim.edge.replay import (
    ReplayBuffer,
    buffer_capacity_bytes,
    check_buffer_fits,
    with_buffer_reads,
)
from npusim.edge.streams import Stream, make_stream
from npusim.edge.wear import device_counts, lifetime_s, years
from npusim.runtime.config import ConfigError, TrainConfig
from npusim.runtime.io import RunError
from npusim.runtime.ledger import Ledger
from npusim.runtime.run_files import CHECKPOINT, load_checkpoint
from npusim.runtime.train import Trainer, error_rate

LR_SCALE = 0.03  # learning rate on the stream / the run's: batch 1 instead of 16 (see README)


# ---- the run's chip ----------------------------------------------------------------------------
def load_trainer(run: Path, *, digital_algorithm: str | None = None) -> tuple[Trainer, dict]:
    """The trained network of run folder ``run`` and its checkpoint, read with the run-file
    readers (:func:`npusim.runtime.run_files.load_checkpoint`): a :class:`Trainer` of the run's
    configuration, which puts it on the run's chip, then the checkpoint's last weights and
    device states. ``digital_algorithm``: instead, the same weights on an exact digital copy
    (no devices, no converters) trained with that learning rule (e.g. ``backprop``)."""
    run = Path(run)
    if not (run / CHECKPOINT).is_file():
        raise EdgeError(f"{run} is not a run folder of 'npusim train' (no {CHECKPOINT})")
    ck = load_checkpoint(run)
    try:
        cfg = TrainConfig.from_dict(ck["config"])
    except ConfigError as e:  # load_checkpoint checked it already; kept for a clear message
        raise EdgeError(f"{run / CHECKPOINT}: {e}") from None
    if digital_algorithm is not None:  # a digital computer forms its updates digitally
        cfg.algorithm, cfg.chip, cfg.outer_product = digital_algorithm, "ideal", "digital"
    tr = Trainer(cfg)
    if [tuple(p.shape) for p in ck["params"]] != [tuple(p.shape) for p in tr.model.params()]:
        raise EdgeError(f"{run / CHECKPOINT}: its weights do not fit the network it describes")
    if digital_algorithm is not None:
        tr.model.load_params(ck["params"])
        return tr, ck
    try:
        tr.load_checkpoint(ck)
    except ValueError as e:  # device state of another chip
        raise RunError(f"cannot load {run / CHECKPOINT}: {e}") from None
    return tr, ck


def stream_ledger(tr: Trainer) -> Ledger:
    """A fresh ledger for ``tr`` that counts only what happens from now on: the device
    pulses and update-rule events already fired (in training) are marked as seen."""
    scale = None
    if tr.cfg.model == "drn":
        scale = drn_power_scale_w(tr.cfg.chip, tr.cfg.input_gain)
    led = Ledger(power_scale_w=scale, update_mode=tr.cfg.outer_product)
    syn = tr.synapses
    if syn is not None:
        led.device_pulses_seen = int(syn.total_pulses)
        led.device_resets_seen = int(syn.reset_pulses)
        led.device_events_seen = {k: int(v) for k, v in syn.periphery_events().items()}
    return led


# ---- the stream ---------------------------------------------------------------------------------
@dataclass
class Curve:
    """Accuracy (fractions) on the held-out new and old sets after ``samples`` stream samples,
    and the energy per update (J) over the samples since the previous point."""

    samples: list[int]
    accuracy_new: list[float]
    accuracy_old: list[float]
    energy_per_update_j: list[float | None]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def accuracy(tr: Trainer, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` the network classifies right (through the chip's converters)."""
    if len(x) == 0:
        return math.nan
    return 1.0 - error_rate(
        tr.model, x, y, tr.cfg.inference_sweeps, tr.cfg.eval_batch, tr.periphery
    )


def eval_points(samples: int, every: int) -> list[int]:
    """0, every, 2·every, …, and the last sample."""
    pts = list(range(0, samples + 1, every))
    return pts if pts[-1] == samples else [*pts, samples]


@dataclass
class StreamRun:
    """What one trainer did on a stream: its curve, ledger (with buffer reads moved to SRAM),
    the pulses each device took, the replayed samples and the online accuracy (each stream
    sample classified before its update)."""

    curve: Curve
    ledger: Ledger | None
    counts_before: Tensor | None
    counts_after: Tensor | None
    replays: int
    online_accuracy: float


def run_stream(
    tr: Trainer,
    stream: Stream,
    every: int,
    buffer: ReplayBuffer | None = None,
    spec: ChipSpec | None = None,
    count: bool = True,
) -> StreamRun:
    """``tr`` learns ``stream`` one sample at a time (:meth:`Trainer.step`, batch 1), each
    sample followed by one replayed sample when ``buffer`` is given; accuracy on the held-out
    sets every ``every`` samples. ``count``: keep a ledger of the updates (evaluations are not
    counted) and price each interval with ``spec``."""
    n = len(stream.y)
    points = set(eval_points(n, every))
    curve = Curve([], [], [], [])

    def record(i: int, energy: float | None) -> None:
        curve.samples.append(i)
        curve.accuracy_new.append(accuracy(tr, stream.new_x, stream.new_y))
        curve.accuracy_old.append(accuracy(tr, stream.old_x, stream.old_y))
        curve.energy_per_update_j.append(energy)

    before = device_counts(tr.synapses)
    total: Ledger | None = None
    replays = interval_replays = interval_samples = right = 0
    tr.ledger = stream_ledger(tr) if count else None
    record(0, None)
    for i in range(n):
        x, y = stream.x[i : i + 1], stream.y[i : i + 1]
        est = tr.step(x, y)
        right += int(tr.model.output(est.free.state).argmax(1)[0] == y[0])
        if buffer is not None:
            tr.step(*buffer.next())
            interval_replays += 1
        interval_samples += 1
        if i + 1 not in points:
            continue
        energy = None
        if tr.ledger is not None:
            priced = with_buffer_reads(tr.ledger, interval_replays, buffer)
            energy = npu_cost(priced, spec).total_energy_j / interval_samples
            total = priced if total is None else total.merge(priced)
            tr.ledger = stream_ledger(tr)
        replays += interval_replays
        interval_replays = interval_samples = 0
        record(i + 1, energy)
    tr.ledger = None
    return StreamRun(curve, total, before, device_counts(tr.synapses), replays, right / n)


def _rate(power_w: float, energy_j: float, time_s: float) -> tuple[float, str]:
    """Updates/s within ``power_w`` at ``energy_j`` per update, at most 1 / ``time_s``; and
    which of the two limits it."""
    by_power = power_w / energy_j if energy_j > 0 else math.inf
    by_time = 1.0 / time_s if time_s > 0 else math.inf
    return (by_power, "power") if by_power <= by_time else (by_time, "time")


def learn_on_edge(
    run: Path,
    stream_name: str,
    power_w: float,
    *,
    samples: int = 2000,
    replay: int = 0,
    every: int | None = None,
    seed: int = 0,
    lr_scale: float = LR_SCALE,
    baselines: bool = True,
    eval_split: str = "test",
    phone: PhoneNpuPreset = PHONE_NPU,
) -> dict:
    """The trained chip of run folder ``run`` learns stream ``stream_name`` (``samples`` samples,
    seed ``seed``) online at learning rate ``lr_scale`` × the run's learning rates, with a
    replay buffer of ``replay`` samples (0: none), within ``power_w`` (W); accuracy every
    ``every`` samples (default a tenth of the stream) on held-out samples of ``eval_split``
    (``val`` to choose settings, ``test`` to report). Returns edge.json's content (fractions,
    J, s, W, B, years)."""
    if not (power_w > 0 and math.isfinite(power_w)):
        raise EdgeError(f"--power must be a positive power, got {power_w} W")
    if samples < 1:
        raise EdgeError(f"--samples must be at least 1, got {samples}")
    if replay < 0:
        raise EdgeError(f"--replay must be 0 (no buffer) or a number of samples, got {replay}")
    if not (lr_scale >= 0 and math.isfinite(lr_scale)):
        raise EdgeError(f"--lr-scale must be a finite number >= 0, got {lr_scale}")
    every = every or max(1, samples // 10)
    if every < 1:
        raise EdgeError(f"--eval-every must be at least 1, got {every}")
    tr, ck = load_trainer(run)
    cfg = tr.cfg
    spec = load_chip(cfg.chip)
    full = load_dataset(cfg.dataset, cfg.data_dir)  # the run's data may be a class subset
    stream = make_stream(stream_name, full, cfg.classes, samples, seed, eval_split)
    buffer = None
    word = Ledger().word_bytes
    if replay:
        buffer = ReplayBuffer.draw(stream.pool_x, stream.pool_y, replay, seed, word)
        check_buffer_fits(buffer, spec)
    tr.optim.lr_scale = lr_scale
    chip_run = run_stream(tr, stream, every, buffer, spec)
    assert chip_run.ledger is not None
    cost = npu_cost(chip_run.ledger, spec)
    e_update = cost.total_energy_j / samples
    t_update = sum(cost.time_s.values()) / samples
    rate, limit = _rate(power_w, e_update, t_update)
    static_w = spec.energy.static_power * arrays_in_use(chip_run.ledger.sizes, spec)
    dynamic = e_update - sum(e.get("static", 0.0) for e in cost.energy_j.values()) / samples
    rate_on, _ = _rate(max(power_w - static_w, 0.0), dynamic, t_update)
    before, after = chip_run.counts_before, chip_run.counts_after
    endurance = spec.device.endurance
    mean_s, first_s = math.inf, math.inf
    per_device = {"mean": 0.0, "max": 0.0}
    if before is not None and after is not None:
        taken = (after - before).double()
        per_device = {"mean": float(taken.mean()) / samples, "max": float(taken.max()) / samples}
        mean_s, first_s = lifetime_s(before, after, samples, rate, endurance)
    c = chip_run.curve
    out = {
        "run": str(run),
        "chip": spec.name,
        "update_rule": tr.update_rule if tr.synapses is not None else "exact",
        "stream": stream_name,
        "stream_settings": stream.settings,
        "seed": seed,
        "samples": samples,
        "eval_every": every,
        "lr_scale": lr_scale,
        "power_w": power_w,
        "network": {
            "sizes": list(tr.model.sizes),
            "trained_classes": stream.trained_classes,
            "stream_classes": stream.new_classes,
            "run_epochs": int(ck["epoch"]),
            "eval_samples_new": len(stream.new_y),
            "eval_samples_old": len(stream.old_y),
        },
        "curve": c.to_dict(),
        "accuracy_new_start": c.accuracy_new[0],
        "accuracy_new": c.accuracy_new[-1],
        "accuracy_old_start": c.accuracy_old[0],
        "accuracy_old": c.accuracy_old[-1],
        "forgetting": c.accuracy_old[0] - c.accuracy_old[-1],
        "online_accuracy": chip_run.online_accuracy,
        "energy_per_update_j": e_update,
        "energy_per_update_breakdown_j": {
            t: v / samples for t, v in cost.phase_energy(list(cost.energy_j)).items()
        },
        "time_per_update_s": t_update,
        "updates_per_s": rate,
        "rate_limited_by": limit,
        "static_power_w": static_w,
        "updates_per_s_always_on": rate_on,
        "pulses_per_device_per_update": per_device,
        "endurance_pulses": None if math.isinf(endurance) else endurance,
        "lifetime_years": years(first_s),
        "lifetime_years_mean_device": years(mean_s),
        "replay": {
            "samples": len(buffer) if buffer else 0,
            "replayed": chip_run.replays,
            "bytes_per_sample": buffer.sample_bytes if buffer else 0,
            "sram_bytes": buffer.bytes if buffer else 0,
            "sram_capacity_bytes": buffer_capacity_bytes(spec),
            "fill_energy_j": (buffer.bytes if buffer else 0) * spec.energy.sram_per_byte,
        },
        "ledger": chip_run.ledger.to_dict(),
    }
    if baselines:
        out["baselines"] = _baselines(run, stream, every, buffer, tr, spec, out, phone, lr_scale)
    return out


def _baselines(
    run: Path,
    stream: Stream,
    every: int,
    buffer: ReplayBuffer | None,
    tr: Trainer,
    spec: ChipSpec,
    out: dict,
    phone: PhoneNpuPreset,
    lr_scale: float,
) -> dict:
    """The frozen chip (the curve's first point throughout; each sample still inferred) and
    the same network fine-tuned by backprop on an exact digital copy, priced on the phone NPU
    (FP16 training at its measured efficiency; a replayed sample comes from its on-chip SRAM,
    inside that efficiency, so only its compute is added)."""
    inf = Ledger()
    inf.relax(Phase.INFERENCE, list(tr.model.sizes), 1, tr.cfg.inference_sweeps)
    c = out["curve"]
    n_pts = len(c["samples"])
    frozen = {
        "curve": {
            "samples": c["samples"],
            "accuracy_new": [c["accuracy_new"][0]] * n_pts,
            "accuracy_old": [c["accuracy_old"][0]] * n_pts,
        },
        "energy_per_update_j": 0.0,
        "energy_per_inference_j": npu_cost(inf, spec).total_energy_j,
    }
    digital, _ = load_trainer(run, digital_algorithm="backprop")
    digital.optim.lr_scale = lr_scale
    if buffer is not None:
        buffer = ReplayBuffer(buffer.x, buffer.y, buffer.word_bytes)
    bp = run_stream(digital, stream, every, buffer, count=False)
    sizes = list(tr.model.logical_sizes)
    per = phone.cost(sizes, spec.energy.dram_per_byte)["train"]
    extra = 1 if buffer is not None else 0
    energy = sum(per["energy_j"].values()) + extra * per["energy_j"]["compute"]
    time_s = per["time_s"] * (1 + extra)
    rate, limit = _rate(out["power_w"], energy, time_s)
    phone_row = {
        "system": f"{phone.name}, backprop (FP16)",
        "curve": {k: v for k, v in bp.curve.to_dict().items() if k != "energy_per_update_j"},
        "accuracy_new": bp.curve.accuracy_new[-1],
        "accuracy_old": bp.curve.accuracy_old[-1],
        "forgetting": bp.curve.accuracy_old[0] - bp.curve.accuracy_old[-1],
        "online_accuracy": bp.online_accuracy,
        "energy_per_update_j": energy,
        "time_per_update_s": time_s,
        "updates_per_s": rate,
        "rate_limited_by": limit,
        "flops_per_sample": per["flops"],
        "sources": phone.sources,
    }
    return {"frozen_chip": frozen, "phone_npu_backprop": phone_row}
