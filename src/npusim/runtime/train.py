"""Training loop: epochs, evaluation, atomic checkpoints and exact resume."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from npusim.chip import load_chip
from npusim.circuits import DeepHopfield, DeepResistive, LayeredNetwork
from npusim.data.datasets import Dataset, load_dataset, one_hot
from npusim.devices import make_synapses
from npusim.devices.converters import Periphery, periphery_for
from npusim.learning.estimators import make_estimator
from npusim.runtime.config import TrainConfig
from npusim.runtime.io import atomic_torch_save
from npusim.runtime.optim import SGD, apply_ideal


def build_model(cfg: TrainConfig, num_features: int, num_classes: int) -> LayeredNetwork:
    """The network a configuration describes, initialised from ``cfg.seed``."""
    sizes = [num_features, *cfg.hidden, num_classes]
    if cfg.model == "dhn":
        return DeepHopfield(sizes, seed=cfg.seed)
    return DeepResistive(sizes, input_gain=cfg.input_gain, seed=cfg.seed, diode=cfg.diode)


def shift_images(x: Tensor, shape: tuple[int, int], max_shift: int, g: torch.Generator) -> Tensor:
    """Shift each image by a random whole-pixel offset in [−max_shift, max_shift]², zero fill."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    h, w = shape
    pad = max_shift
    img = torch.nn.functional.pad(x.view(n, 1, h, w), (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return img[torch.arange(n)[:, None, None], 0, rows, cols].reshape(n, h * w)


@torch.no_grad()
def error_rate(
    model: LayeredNetwork,
    x: Tensor,
    y: Tensor,
    sweeps: int,
    batch: int,
    periphery: Periphery | None = None,
) -> float:
    """Fraction of misclassified samples after a free relaxation (inputs and output through
    the chip's converters when ``periphery`` is given)."""
    wrong = 0
    for i in range(0, len(x), batch):
        if periphery is None:
            pred = model.predict(x[i : i + batch], sweeps)
        else:  # as model.predict, with the converters between chip and digital side
            xb = periphery.inputs(x[i : i + batch])
            pred = periphery.read_output(model.output(model.relax(xb, sweeps=sweeps).state))
            pred = pred.argmax(1)
        wrong += int((pred != y[i : i + batch]).sum())
    return wrong / max(len(x), 1)


@dataclass
class EpochRecord:
    epoch: int
    train_error: float
    val_error: float
    test_error: float
    samples_per_s: float
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_params: list[Tensor] | None = None


class Trainer:
    """Trains a network on a dataset with a gradient estimator, one epoch at a time.

    ``synapses`` applies updates to the parameters (defaults to ideal synapses); ``ledger``
    (optional) counts the events of the run.
    """

    def __init__(self, cfg: TrainConfig, data: Dataset | None = None, synapses=None, ledger=None):
        self.cfg = cfg.resolved()
        self.data = data or load_dataset(self.cfg.dataset, self.cfg.data_dir)
        torch.manual_seed(self.cfg.seed)
        self.model = build_model(self.cfg, self.data.num_features, self.data.num_classes)
        self.estimator = make_estimator(
            self.cfg.algorithm,
            beta=self.cfg.beta,
            variant=self.cfg.variant,
            sweeps=self.cfg.sweeps,
            free_sweeps=self.cfg.free_sweeps,
        )
        self.optim = SGD(self.cfg.lrs * 2, self.cfg.momentum, self.cfg.weight_decay)
        self.periphery: Periphery | None = None  # the chip's DACs / ADCs, when they quantise
        if self.cfg.chip != "ideal":  # train through the chip's devices and converters
            spec = load_chip(self.cfg.chip)
            if synapses is None and not spec.is_ideal:
                params, signed = self.model.params(), self.model.signed
                synapses = make_synapses(spec, params, signed, seed=self.cfg.seed)
            self.use_periphery(periphery_for(spec.converters, self.model.normalised_states))
        self.synapses = synapses
        self.ledger = ledger
        self.state = TrainState()

    def use_periphery(self, periphery: Periphery | None) -> None:
        """Read inputs, equilibria and outputs through ``periphery`` (None: exactly)."""
        self.periphery = periphery
        if hasattr(self.estimator, "read"):
            self.estimator.read = None if periphery is None else periphery.read

    # ---- one epoch -------------------------------------------------------------------
    def _apply(self, deltas: list[Tensor]) -> None:
        params = self.model.params()
        if self.synapses is None:
            apply_ideal(params, deltas, self.model.signed)
        else:
            self.synapses.apply(params, deltas)

    @torch.no_grad()
    def train_epoch(self, on_batch: Callable[[int], None] | None = None) -> tuple[float, float]:
        """One pass over the training split; returns (train error, samples/s)."""
        cfg, data = self.cfg, self.data
        self.optim.lr_scale = cfg.lr_decay**self.state.epoch
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.state.epoch)
        perm = torch.randperm(len(data.x_train), generator=g)
        x_all = shift_images(data.x_train[perm], data.image_shape, cfg.augment, g)
        y_all = data.y_train[perm]
        wrong, t0 = 0, time.perf_counter()
        bs = cfg.batch_size
        for i in range(0, len(x_all), bs):
            x, y = x_all[i : i + bs], y_all[i : i + bs]
            if self.periphery is not None:
                x = self.periphery.inputs(x)
            est = self.estimator(self.model, x, one_hot(y, data.num_classes))
            wrong += int((self.model.output(est.free.state).argmax(1) != y).sum())
            self._apply(self.optim.deltas(self.model.params(), est.grads))
            if self.ledger is not None:
                self.ledger.training_step(self.model, est, len(x), x=x, synapses=self.synapses)
            if on_batch is not None:
                on_batch(len(x))
        seconds = time.perf_counter() - t0
        return wrong / len(x_all), len(x_all) / seconds

    def evaluate(self, split: str) -> float:
        x, y = self.data.split(split)
        if self.ledger is not None:  # the chip infers every evaluated sample
            self.ledger.relax("inference", self.model.sizes, len(x), self.cfg.inference_sweeps)
        sweeps, batch = self.cfg.inference_sweeps, self.cfg.eval_batch
        return error_rate(self.model, x, y, sweeps, batch, self.periphery)

    def run_epoch(self, on_batch: Callable[[int], None] | None = None) -> EpochRecord:
        t0 = time.perf_counter()
        train_err, sps = self.train_epoch(on_batch)
        val_err, test_err = self.evaluate("val"), self.evaluate("test")
        self.state.epoch += 1
        seconds = time.perf_counter() - t0
        rec = EpochRecord(self.state.epoch, train_err, val_err, test_err, sps, seconds)
        if self.best is None or val_err < self.best.val_error:
            self.state.best_params = [p.clone() for p in self.model.params()]
        self.state.history.append(rec)
        return rec

    @property
    def best(self) -> EpochRecord | None:
        """The epoch with the lowest validation error (first one on ties)."""
        h = self.state.history
        return min(h, key=lambda r: (r.val_error, r.epoch)) if h else None

    # ---- checkpoints -----------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.state.epoch,
            "params": [p.clone() for p in self.model.params()],
            "best_params": self.state.best_params,
            "history": [r.to_dict() for r in self.state.history],
            "optim": self.optim.state_dict(),
            "synapses": None if self.synapses is None else self.synapses.state_dict(),
            "ledger": None if self.ledger is None else self.ledger.to_dict(),
        }

    def save_checkpoint(self, path: Path) -> None:
        atomic_torch_save(self.checkpoint(), path)

    def load_checkpoint(self, ckpt: dict) -> None:
        self.model.load_params(ckpt["params"])
        self.state = TrainState(
            epoch=ckpt["epoch"],
            history=[EpochRecord(**r) for r in ckpt["history"]],
            best_params=ckpt["best_params"],
        )
        self.optim.load_state_dict(copy.deepcopy(ckpt["optim"]))
        if self.synapses is not None and ckpt.get("synapses") is not None:
            self.synapses.load_state_dict(ckpt["synapses"])
        if self.ledger is not None and ckpt.get("ledger") is not None:
            self.ledger.load_dict(ckpt["ledger"])
