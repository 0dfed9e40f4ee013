"""Training configuration: one validated dataclass, with per-model defaults."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from npusim.core.errors import NpusimError
from npusim.data.datasets import DATASETS
from npusim.learning.estimators import ALGORITHMS, VARIANTS

MODELS = ("dhn", "drn")
DIODES = ("ideal", "shockley")

# Defaults per model, chosen on the validation split of mnist5k (see README).
MODEL_DEFAULTS: dict[str, dict] = {
    "dhn": {
        "beta": 0.2,
        "sweeps": 15,
        "batch_size": 16,
        "lrs": [0.1, 0.05],
        "epochs": 30,
        "lr_decay": 0.92,
    },
    "drn": {
        "beta": 1.0,
        "sweeps": 4,
        "batch_size": 4,
        "lrs": [0.006, 0.006],
        "epochs": 10,
        "lr_decay": 0.99,
    },
}


class ConfigError(NpusimError, ValueError):
    """A training option is invalid; the message names it and the allowed values."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means "the model's default"."""

    dataset: str = "mnist5k"
    data_dir: str | None = None
    model: str = "dhn"
    hidden: list[int] = field(default_factory=lambda: [1024])
    algorithm: str = "eqprop"
    variant: str = "centered"
    beta: float | None = None
    sweeps: int | None = None
    free_sweeps: int | None = None
    batch_size: int | None = None
    lrs: list[float] | None = None
    momentum: float = 0.0
    lr_decay: float | None = None
    weight_decay: float = 0.0
    epochs: int | None = None
    seed: int = 0
    input_gain: float = 480.0
    diode: str = "ideal"
    augment: int | None = None
    chip: str = "ideal"
    eval_batch: int = 1000

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the model's default, validated."""
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        d = MODEL_DEFAULTS[self.model]
        out = TrainConfig(**asdict(self))
        if out.augment is None:  # shift 28×28 images by up to 1 pixel; 8×8 digits not at all
            out.augment = 0 if out.dataset == "digits" else 1
        for key in ("beta", "sweeps", "batch_size", "epochs", "lr_decay"):
            if getattr(out, key) is None:
                setattr(out, key, d[key])
        if out.lrs is None:
            n = len(out.hidden) + 1
            base = d["lrs"]
            out.lrs = [base[0]] * (n - 1) + [base[-1]]
        out.validate()
        return out

    def validate(self) -> None:
        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"{key}={getattr(self, key)!r} is invalid: allowed {allowed}")

        need(self.dataset in DATASETS, "dataset", ", ".join(DATASETS))
        need(self.algorithm in ALGORITHMS, "algorithm", ", ".join(ALGORITHMS))
        need(self.variant in VARIANTS, "variant", ", ".join(VARIANTS))
        need(len(self.hidden) >= 1 and all(h >= 2 for h in self.hidden), "hidden", "sizes >= 2")
        need(self.beta is not None and 0 < self.beta < math.inf, "beta", "a number > 0")
        need(self.sweeps is not None and self.sweeps >= 1, "sweeps", "an integer >= 1")
        need(self.free_sweeps is None or self.free_sweeps >= 1, "free_sweeps", "an integer >= 1")
        need(self.batch_size is not None and self.batch_size >= 1, "batch_size", "integer >= 1")
        need(self.epochs is not None and self.epochs >= 1, "epochs", "an integer >= 1")
        need(0.0 <= self.momentum < 1.0, "momentum", "[0, 1)")
        need(
            self.lr_decay is not None and 0.0 < self.lr_decay <= 1.0,
            "lr_decay",
            "(0, 1] (learning-rate factor per epoch)",
        )
        need(self.weight_decay >= 0.0, "weight_decay", ">= 0")
        need(self.input_gain > 0.0, "input_gain", "> 0")
        need(self.diode in DIODES, "diode", ", ".join(DIODES))
        need(self.diode == "ideal" or self.model == "drn", "diode", "shockley only with model drn")
        need(
            self.augment is not None and 0 <= self.augment <= 4,
            "augment",
            "0..4 pixels of random shift",
        )
        need(self.eval_batch >= 1, "eval_batch", "an integer >= 1")
        n = len(self.hidden) + 1
        need(
            self.lrs is not None and len(self.lrs) == n and all(lr >= 0 for lr in self.lrs),
            "lrs",
            f"{n} learning rates >= 0 (one per weight layer)",
        )
        if self.model == "dhn" and self.algorithm == "eqprop":
            need(self.beta < 1.0, "beta", "(0, 1) for the DHN (output curvature is 1)")

    @property
    def inference_sweeps(self) -> int:
        return self.free_sweeps or self.sweeps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**d)
