"""Training loop: epochs, evaluation, atomic checkpoints and exact resume."""

from __future__ import annotations

import copy
import gc
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from npusim.chip import ChipSpec, load_chip
from npusim.chip.capacity import check_fits
from npusim.circuits import NetworkOptions, make_network
from npusim.circuits.hybrid import HybridNetwork
from npusim.core.interfaces import GradientEstimate, Network, Synapses
from npusim.data.augment import augment_images
from npusim.data.datasets import Dataset, class_subset, load_dataset, one_hot
from npusim.devices import DeviceSynapses, make_synapses
from npusim.devices.converters import Periphery, periphery_for
from npusim.learning.estimators import make_estimator
from npusim.runtime.config import TrainConfig
from npusim.runtime.device import resolve_device
from npusim.runtime.inarray import InArrayUpdater
from npusim.runtime.ledger import Ledger
from npusim.runtime.optim import SGD, apply_ideal

if TYPE_CHECKING:
    from npusim.runtime.parallel import DataParallel

_CACHES = ("_memo_cache", "_fused_plan")  # derived tensors, dropped (rebuilt on use) ...
_CACHE_ATTRS = ("_k", "_kkey")  # ... or reset to None
CONVERGE_TOL = 1e-3  # a relaxation whose last sweep moves a unit by more than this (normalised
# units, or V for the DRN) has not converged: counted per epoch and warned about


def build_model(
    cfg: TrainConfig,
    num_features: int,
    num_classes: int,
    image: tuple[int, int, int] | None = None,
) -> Network:
    """The network a configuration describes (by name from ``npusim.circuits.NETWORKS``),
    initialised from ``cfg.seed``; ``image``: the inputs' ``(C, H, W)`` (a hybrid network's
    convolutions need it)."""
    sizes = [num_features, *cfg.hidden, num_classes]
    options = NetworkOptions(cfg.input_gain, cfg.diode, cfg.arch, image)
    return make_network(cfg.model, sizes, cfg.seed, options)


def move_to(obj: Any, device: torch.device, seen: set[int] | None = None) -> None:
    """Move every tensor reachable from ``obj`` (a network, synapses, a dataset, a periphery:
    their attributes, lists, tuples and dicts) to ``device`` in place, as ``t.data =
    t.data.to(device)``, so references held elsewhere (the synapses' and the optimiser's
    parameters) stay valid. Device synapses move through :meth:`DeviceSynapses.to` (their state
    views stay views); caches of derived tensors are dropped and rebuilt on use."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (str, int, float, bool, torch.device)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        obj.data = obj.data.to(device)
    elif isinstance(obj, DeviceSynapses):
        obj.to(device)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            move_to(v, device, seen)
    elif isinstance(obj, dict):
        for v in obj.values():
            move_to(v, device, seen)
    elif type(obj).__module__.startswith("npusim."):  # npusim's own objects only
        try:
            attrs = vars(obj)
        except TypeError:  # no instance dictionary
            return
        for key in _CACHES:
            attrs.pop(key, None)
        for key in _CACHE_ATTRS:
            if key in attrs:
                object.__setattr__(obj, key, None)
        for v in attrs.values():
            move_to(v, device, seen)


@torch.no_grad()
def error_rate(
    model: Network,
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
    """One epoch's errors (fractions), speed and the relaxations that ended at their sweep cap
    without reaching the convergence tolerance (``unconverged``, of ``relaxations``)."""

    epoch: int
    train_error: float
    val_error: float
    test_error: float
    samples_per_s: float
    seconds: float
    unconverged: int = 0
    relaxations: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_params: list[Tensor] | None = None
    best_buffers: list[Tensor] | None = None  # the network's state at that epoch (batch norms)


class Trainer:
    """Trains a network on a dataset with a gradient estimator, one step or epoch at a time.

    The network comes from ``cfg`` (``npusim.circuits.NETWORKS``), the learning rule from
    ``npusim.learning.ESTIMATORS``; a ``cfg.chip`` other than ``ideal`` puts the trainer on that
    chip (:meth:`put_on_chip`). ``synapses`` overrides the synapses that hold the parameters
    (default: exact); ``ledger`` (optional) counts the events of the run. ``update``: the
    update rule on a device chip (``npusim.devices.UPDATE_RULES``; default the
    configuration's ``update``).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: Dataset | None = None,
        synapses: Synapses | None = None,
        ledger: Ledger | None = None,
        update: str | None = None,
    ):
        self.cfg = cfg.resolved()
        self.update_rule = update or self.cfg.update
        self.data = data or load_dataset(self.cfg.dataset, self.cfg.data_dir)
        if self.cfg.classes is not None:  # a class subset; one output per class remains
            self.data = class_subset(self.data, self.cfg.classes)
        torch.manual_seed(self.cfg.seed)
        shape = self.data.image_shape
        image = shape if len(shape) == 3 else (1, *shape)
        self.model = build_model(
            self.cfg,
            self.data.num_features,
            self.data.num_classes,
            image,  # type: ignore[arg-type]
        )
        self.estimator = make_estimator(
            self.cfg.algorithm,
            beta=self.cfg.beta,
            variant=self.cfg.variant,
            sweeps=self.cfg.sweeps,
            free_sweeps=self.cfg.free_sweeps,
        )
        self.optim = SGD(self.cfg.lrs * 2, self.cfg.momentum, self.cfg.weight_decay)
        self.periphery: Periphery | None = None  # the chip's DACs / ADCs, when they quantise
        self.synapses: Synapses | None = synapses
        self.chip: ChipSpec | None = None
        self.in_array: InArrayUpdater | None = None  # --outer-product coincidence
        if self.cfg.outer_product == "coincidence":  # priced by the ideal device until on a chip
            dev = load_chip("ideal").device
            self.in_array = InArrayUpdater(self.cfg.pulse_train_length, self.cfg.seed, dev)
        if self.cfg.chip != "ideal":  # train through the chip's devices and converters
            self.put_on_chip(load_chip(self.cfg.chip), keep_synapses=synapses is not None)
        self.ledger = ledger
        if ledger is not None:
            ledger.update_mode = self.cfg.outer_product
        self.state = TrainState()
        self.parallel: DataParallel | None = None  # data-parallel: this rank's shard of each batch
        self._unconverged = 0
        self._relaxations = 0
        # built on the CPU (same initial weights and devices everywhere), then moved
        self.device = resolve_device(self.cfg.device)
        if self.cfg.outer_product == "coincidence":  # numba's array update: the CPU only
            self.device = torch.device("cpu")
        if self.device.type != "cpu":
            self.data = copy.copy(self.data)  # a loaded dataset may be shared: moved as a copy
            for split in ("train", "val", "test"):
                for k in ("x", "y"):
                    name = f"{k}_{split}"
                    object.__setattr__(self.data, name, getattr(self.data, name).to(self.device))
            move_to([self.model, self.synapses, self.periphery, self.estimator], self.device)

    # ---- the chip ------------------------------------------------------------------------
    def put_on_chip(self, spec: ChipSpec, *, keep_synapses: bool = False) -> None:
        """Hold the parameters in ``spec``'s devices (programmed from their present values;
        exact synapses for an ideal device model) and read inputs, equilibria and outputs
        through its converters (a DRN's node voltages through its amplifiers' gain).
        ``keep_synapses``: keep the synapses already set. Raises
        :class:`npusim.chip.ChipSpecError` when the network needs more arrays than the chip
        has, or when its amplifiers cannot bring the network's outputs into the ADC range."""
        self.chip = spec
        if self.in_array is not None:
            self.in_array.dev = spec.device
        params, signed = self.model.params(), self.model.signed
        if spec.is_ideal or keep_synapses:  # make_synapses checks the capacity otherwise
            held = [(p, s) for p, s in zip(params, signed, strict=True) if p.dim() >= 2]
            check_fits(spec, [(p.shape[0], p[0].numel()) for p, _ in held], [s for _, s in held])
        if not keep_synapses:
            self.synapses = (
                None
                if spec.is_ideal
                else make_synapses(spec, params, signed, self.cfg.seed, update=self.update_rule)
            )
        gains = self.model.read_gains(spec)
        self.use_periphery(periphery_for(spec.converters, self.model.normalised_states, gains))

    def use_periphery(self, periphery: Periphery | None) -> None:
        """Read inputs, equilibria and outputs through ``periphery`` (None: exactly)."""
        self.periphery = periphery
        self.estimator.read = None if periphery is None else periphery.read
        if isinstance(self.model, HybridNetwork):  # activations moved between its blocks
            self.model.read = self.estimator.read

    # ---- one step, one epoch ----------------------------------------------------------------
    def apply(self, deltas: list) -> None:
        """Hand parameter updates to the synapses (exact addition without a chip)."""
        params = self.model.params()
        if self.synapses is None:
            apply_ideal(params, deltas, self.model.signed)
        else:
            self.synapses.apply(params, deltas)

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor) -> GradientEstimate:
        """One training step on a batch: inputs through the DACs, the learning rule's
        relaxations, the update through the synapses, the events into the ledger. ``x``:
        (batch, features) raw inputs; ``y``: (batch,) class labels. Returns the estimate (its
        ``free`` relaxation holds the network's prediction before the update)."""
        if self.periphery is not None:
            x = self.periphery.inputs(x)
        est = self.estimator(self.model, x, one_hot(y, self.data.num_classes))
        grads, n = est.grads, len(x)
        if self.parallel is not None:  # the estimate of all ranks' shards: the whole batch's
            grads, n = self.parallel.reduce(grads, n, self.model.params())
        in_array = None
        if self.in_array is None:
            self.apply(self.optim.deltas(self.model.params(), grads))
        else:  # formed in the array from held signals, samples one after another
            lrs = [lr * self.optim.lr_scale for lr in self.optim.lrs]
            in_array = self.in_array.apply(self.model, x, self.estimator, est, lrs, self.synapses)
        for rel in est.phases.values():
            self._relaxations += 1
            self._unconverged += rel.residual > CONVERGE_TOL
        if self.ledger is not None:
            events = None if self.synapses is None else self.synapses.periphery_events()
            self.ledger.training_step(
                self.model, est, n, x=x, synapses=self.synapses, rule_events=events,
                in_array=in_array,
            )  # fmt: skip
        return est

    @torch.no_grad()
    def train_epoch(self, on_batch: Callable[[int], None] | None = None) -> tuple[float, float]:
        """One pass over the training split; returns (train error, samples/s).

        For the epoch, the objects alive when it starts (modules, compiled kernels, data, model)
        are moved out of the cyclic garbage collector's reach (``gc.freeze``): a full collection
        walked the ~200,000 of them in 100 ms every few hundred steps, up to a third of an
        epoch's time. They return to it when the epoch ends (``gc.unfreeze``), so a cycle
        dropped meanwhile is still collected. A process that froze objects itself is left as
        it is."""
        if gc.get_freeze_count():  # someone else's freeze: unfreezing would undo it
            return self._train_epoch(on_batch)
        gc.freeze()
        try:
            return self._train_epoch(on_batch)
        finally:
            gc.unfreeze()

    def _train_epoch(self, on_batch: Callable[[int], None] | None) -> tuple[float, float]:
        cfg, data = self.cfg, self.data
        self.optim.lr_scale = cfg.lr_decay**self.state.epoch
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.state.epoch)
        perm = torch.randperm(len(data.x_train), generator=g)
        x_all = augment_images(
            data.x_train[perm], data.image_shape, cfg.augment, cfg.flip, g, cfg.rotate, cfg.zoom
        )
        y_all = data.y_train[perm]
        wrong, t0 = 0, time.perf_counter()
        bs = cfg.batch_size
        for i in range(0, len(x_all), bs):
            x, y = x_all[i : i + bs], y_all[i : i + bs]
            if self.parallel is not None:  # this rank's shard; none: only the update
                x, y = self.parallel.shard(x, y)
                if len(x) == 0:
                    params = self.model.params()
                    self.apply(self.optim.deltas(params, self.parallel.reduce(None, 0, params)[0]))
                    continue
            est = self.step(x, y)
            wrong += int((self.model.output(est.free.state).argmax(1) != y).sum())
            if on_batch is not None:
                on_batch(len(x))
        seconds = time.perf_counter() - t0
        if self.parallel is not None:
            wrong = self.parallel.total(wrong)
        return wrong / len(x_all), len(x_all) / seconds

    def evaluate(self, split: str) -> float:
        x, y = self.data.split(split)
        if self.ledger is not None:  # the chip infers every evaluated sample
            arrays = self.model.arrays
            for k, sweeps in enumerate(self.model.block_sweeps(self.cfg.inference_sweeps)):
                self.ledger.relax("inference", arrays, len(x), sweeps, block=k)
        sweeps, batch = self.cfg.inference_sweeps, self.cfg.eval_batch
        return error_rate(self.model, x, y, sweeps, batch, self.periphery)

    def run_epoch(self, on_batch: Callable[[int], None] | None = None) -> EpochRecord:
        """Train one epoch, then evaluate on the validation and test splits."""
        t0 = time.perf_counter()
        self._unconverged = self._relaxations = 0
        train_err, sps = self.train_epoch(on_batch)
        val_err, test_err = self.evaluate("val"), self.evaluate("test")
        self.state.epoch += 1
        seconds = time.perf_counter() - t0
        rec = EpochRecord(
            self.state.epoch,
            train_err,
            val_err,
            test_err,
            sps,
            seconds,
            self._unconverged,
            self._relaxations,
        )
        if rec.unconverged:
            warnings.warn(
                f"epoch {rec.epoch}: {rec.unconverged} of {rec.relaxations} relaxations ended "
                f"at their sweep cap ({self.cfg.sweeps}) still moving by more than "
                f"{CONVERGE_TOL:g}; raise --sweeps or lower the learning rate",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.best is None or val_err < self.best.val_error:
            self.state.best_params = [p.clone() for p in self.model.params()]
            self.state.best_buffers = [b.clone() for b in self.model.buffers()]
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
            "params": [p.detach().cpu().clone() for p in self.model.params()],
            "best_params": _on_cpu(self.state.best_params),
            "buffers": _on_cpu(self.model.buffers()),
            "best_buffers": _on_cpu(self.state.best_buffers),
            "history": [r.to_dict() for r in self.state.history],
            "optim": _on_cpu(self.optim.state_dict()),
            "synapses": None if self.synapses is None else _on_cpu(self.synapses.state_dict()),
            "ledger": None if self.ledger is None else self.ledger.to_dict(),
            "in_array": None if self.in_array is None else self.in_array.state_dict(),
        }

    def load_checkpoint(self, ckpt: dict) -> None:
        self.model.load_params(ckpt["params"])
        if ckpt.get("buffers"):  # batch norms' running statistics
            self.model.load_buffers(ckpt["buffers"])
        self.state = TrainState(
            epoch=ckpt["epoch"],
            history=[EpochRecord(**r) for r in ckpt["history"]],
            best_params=_on(ckpt["best_params"], self.device),
            best_buffers=_on(ckpt.get("best_buffers"), self.device),
        )
        optim = copy.deepcopy(ckpt["optim"])  # saved on the CPU: moved to this run's device
        move_to(optim, self.device)
        self.optim.load_state_dict(optim)
        if self.synapses is not None and ckpt.get("synapses") is not None:
            self.synapses.load_state_dict(ckpt["synapses"])
        if self.ledger is not None and ckpt.get("ledger") is not None:
            self.ledger.load_dict(ckpt["ledger"])
        if self.in_array is not None and ckpt.get("in_array") is not None:
            self.in_array.load_state_dict(ckpt["in_array"])


def _on(tensors: list[Tensor] | None, device: torch.device) -> list[Tensor] | None:
    return None if tensors is None else [t.to(device) for t in tensors]


def _on_cpu(state: Any) -> Any:
    """``state`` (tensors in lists and dicts) with every tensor copied to the CPU."""
    if isinstance(state, Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, list) or type(state) is tuple:
        return type(state)(_on_cpu(v) for v in state)
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    return state
