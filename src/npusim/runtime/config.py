"""Training configuration: one dataclass whose field metadata is the table of every option.

Each field of :class:`TrainConfig` carries its type, allowed range or choices, unit and help
(see :func:`option`). :meth:`TrainConfig.validate` checks every field against that table, and the
``npusim train`` options, their help and their parsing are generated from it, so an option is
declared once.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

import torch

from npusim.circuits.arch import PRESETS, ArchError, trained_layers
from npusim.core.errors import NpusimError
from npusim.data.datasets import DATASETS
from npusim.devices.coincidence import DEFAULT_PULSE_TRAIN
from npusim.devices.rules import UPDATE_RULES
from npusim.learning.estimators import ALGORITHMS, VARIANTS
from npusim.runtime.device import DEVICES, cuda_unavailable

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
    "hybrid": {
        "beta": 0.2,
        "sweeps": 15,
        "batch_size": 16,
        "lrs": [0.1, 0.1],
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
MODELS = tuple(MODEL_DEFAULTS)
UPDATE_RULE_NAMES = tuple(UPDATE_RULES)
DIODES = ("ideal", "shockley")
OUTER_PRODUCTS = ("digital", "coincidence")
SEED_MAX = 2**32 - 1
STAYS_NONE = ("data_dir", "free_sweeps", "classes")  # None after resolution too (no data
# folder; = sweeps; every class)
MAX_INPUTS = 784  # the largest input layer of the datasets (28×28)
MAX_PARAMS = 100_000_000  # weights a simulated network may hold (several float32 copies each)


class ConfigError(NpusimError, ValueError):
    """A training option is invalid; the message names it and the allowed values."""


def option(
    default: Any = None,
    *,
    kind: type | str,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    unit: str = "",
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    length: tuple[int, int] | None = None,
    factory: Any = None,
    default_text: str | None = None,
) -> Any:
    """A :class:`TrainConfig` field and its row of the option table.

    ``kind``: ``bool``, ``int``, ``float``, ``str``, ``"ints"`` or ``"floats"`` (lists; each
    element is range-checked, ``length`` bounds the count). ``lo``/``hi``: the allowed range
    (closed unless ``lo_open``/``hi_open``); floats must be finite. ``flag``: the command-line
    option (default ``--field-name``). A ``None`` default means "the model's default"
    (:data:`MODEL_DEFAULTS`).
    """
    meta = {
        "kind": kind,
        "help": help,
        "lo": lo,
        "hi": hi,
        "lo_open": lo_open,
        "hi_open": hi_open,
        "unit": unit,
        "choices": choices,
        "flag": flag,
        "length": length,
        "default_text": default_text,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means "the model's default"."""

    dataset: str = option("mnist5k", kind=str, choices=DATASETS, help="dataset")
    data_dir: str | None = option(
        kind=str,
        help="folder with IDX files (mnist, fashion-mnist) or CIFAR batches (cifar10, cifar100)",
    )
    classes: list[int] | None = option(
        kind="ints",
        lo=0,
        hi=9,
        length=(2, 10),
        help="train, validate and test on these classes only, e.g. 0-4 or 0,2,4 (the output "
        "layer keeps one unit per class of the dataset)",
        default_text="all",
    )
    model: str = option("dhn", kind=str, choices=MODELS, help="network")
    arch: str = option(
        "mnist-conv-fc",
        kind=str,
        help="hybrid network's layers (--model hybrid): a preset (" + ", ".join(PRESETS) + ") or "
        "e.g. conv32k5-pool|conv64k5-pool|fc10 (weight layers joined by - settle together as "
        "one energy-based block; pool, bn, an analog ffN/ffconvC layer or | starts the next "
        "block), or a .toml file",
    )
    hidden: list[int] = option(
        kind="ints",
        factory=lambda: [1024],
        lo=2,
        hi=65536,
        length=(1, 16),
        help="hidden sizes, e.g. 1024 or 512,256",
    )
    algorithm: str = option("eqprop", kind=str, choices=ALGORITHMS, help="learning rule")
    variant: str = option("centered", kind=str, choices=VARIANTS, help="EqProp nudging")
    beta: float | None = option(kind=float, lo=0, hi=1e3, lo_open=True, help="nudging strength β")
    sweeps: int | None = option(kind=int, lo=1, hi=100_000, help="relaxation sweeps per phase")
    free_sweeps: int | None = option(
        kind=int, lo=1, hi=100_000, help="sweeps of the free phase and inference"
    )
    batch_size: int | None = option(kind=int, lo=1, hi=65536, help="samples per update")
    lrs: list[float] | None = option(
        kind="floats",
        lo=0,
        length=(1, 17),
        flag="--lr",
        help="learning rate(s), one for all or one per weight layer",
    )
    momentum: float = option(0.0, kind=float, lo=0, hi=1, hi_open=True, help="SGD momentum")
    lr_decay: float | None = option(
        kind=float, lo=0, hi=1, lo_open=True, help="learning-rate factor per epoch"
    )
    weight_decay: float = option(0.0, kind=float, lo=0, hi=1e3, help="L2 weight decay λ")
    epochs: int | None = option(kind=int, lo=1, hi=100_000, help="epochs (total)")
    seed: int = option(0, kind=int, lo=0, hi=SEED_MAX, help="seed of initialisation and order")
    input_gain: float = option(
        480.0,
        kind=float,
        lo=1e-3,
        hi=1e5,
        unit="V per unit input",
        help="DRN input gain",
    )
    diode: str = option(
        "ideal",
        kind=str,
        choices=DIODES,
        help="DRN diodes: ideal, or Shockley (Is 1e-12 A, n 1, 27 °C)",
    )
    augment: int | None = option(
        kind=int,
        lo=0,
        hi=4,
        unit="pixels",
        help="random shift of training images",
        default_text="1; hybrid 2; digits 0",
    )
    flip: bool = option(
        False,
        kind=bool,
        help="mirror each training image left-right with probability 1/2 (e.g. for CIFAR)",
    )
    rotate: float | None = option(
        kind=float,
        lo=0.0,
        hi=180.0,
        unit="degrees",
        help="rotate each training image about its centre by an angle uniform in ±this",
        default_text="0; hybrid on 28×28 images 10",
    )
    zoom: float | None = option(
        kind=float,
        lo=0.0,
        hi=1.0,
        hi_open=True,
        help="scale each training image by a factor uniform in 1 ± this",
        default_text="0; hybrid on 28×28 images 0.1",
    )
    chip: str = option(
        "ideal", kind=str, help="chip preset (ideal, rram, pcm, ecram) or a .toml file"
    )
    update: str = option(
        "sgd",
        kind=str,
        choices=UPDATE_RULE_NAMES,
        help="update rule on a device chip: sgd (each update at once), mixed (digital "
        "accumulator), ttv2, cttv2, agad (Tiki-Taka transfer)",
    )
    outer_product: str = option(
        "digital",
        kind=str,
        choices=OUTER_PRODUCTS,
        help="where the update is formed: digital (ADC reads, outer products in the periphery) "
        "or coincidence (pulse trains from held signals program the array; sgd only)",
    )
    pulse_train_length: int = option(
        DEFAULT_PULSE_TRAIN,
        kind=int,
        lo=1,
        hi=10_000,
        unit="slots",
        help="slots BL per stochastic pulse train of a coincidence update (default: Gokmen & "
        "Vlasov 2016)",
    )
    eval_batch: int = option(1000, kind=int, lo=1, hi=1_000_000, help="samples per evaluation")
    device: str = option(
        "cpu",
        kind=str,
        choices=DEVICES,
        help="where the tensors live: cpu, cuda (the first CUDA GPU; a device chip programs "
        "through the torch kernel, same pulses) or auto (cuda when available, else cpu)",
    )

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the model's default, validated."""
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        self.validate(partial=True)
        d = MODEL_DEFAULTS[self.model]
        out = TrainConfig(**asdict(self))
        if out.augment is None:  # shift 28×28 images by up to 1 pixel (a hybrid network's
            # convolutions by 2); 8×8 digits not at all
            out.augment = 0 if out.dataset == "digits" else 2 if out.model == "hybrid" else 1
        mnist_like = out.model == "hybrid" and out.dataset in ("mnist5k", "mnist", "fashion-mnist")
        if out.rotate is None:  # small rotations and zooms of 28×28 digits (README: hybrid)
            out.rotate = 10.0 if mnist_like else 0.0
        if out.zoom is None:
            out.zoom = 0.1 if mnist_like else 0.0
        for key in ("beta", "sweeps", "batch_size", "epochs", "lr_decay"):
            if getattr(out, key) is None:
                setattr(out, key, d[key])
        n = out.weight_layers
        if out.lrs is None:
            base = d["lrs"]
            out.lrs = [base[0]] * (n - 1) + [base[-1]]
        elif len(out.lrs) == 1:  # one learning rate for every weight layer
            out.lrs = list(out.lrs) * n
        out.validate()
        return out

    def validate(self, partial: bool = False) -> None:
        """Check every field against its row of the table, then the rules that join fields.
        ``partial``: ``None`` (the model's default) is allowed where the default is ``None``."""
        for f in fields(self):
            none_ok = f.default is None and (partial or f.name in STAYS_NONE)
            check_field(f, getattr(self, f.name), allow_none=none_ok)
        if partial:
            return

        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"{describe(key)}={getattr(self, key)!r} is invalid: {allowed}")

        need(self.diode == "ideal" or self.model == "drn", "diode", "shockley only with model drn")
        need(
            self.classes is None or len(set(self.classes)) == len(self.classes),
            "classes",
            "give each class once",
        )
        n = self.weight_layers
        need(
            self.lrs is not None and len(self.lrs) == n,
            "lrs",
            f"give 1 or {n} learning rates (one per weight layer)",
        )
        if self.outer_product == "coincidence":  # nothing digital holds an update
            why = "the coincidence update keeps no digital state; use --outer-product digital"
            need(self.update == "sgd", "update", f"only sgd: {why}")
            need(self.momentum == 0.0, "momentum", f"0 only: {why}")
            need(self.weight_decay == 0.0, "weight_decay", f"0 only: {why}")
            need(
                self.algorithm != "backprop",
                "algorithm",
                "backprop has no in-array update; use eqprop or contrastive",
            )
        if self.model == "hybrid":
            need(
                self.algorithm in ("eqprop", "backprop"),
                "algorithm",
                "a hybrid network trains by eqprop (chained BP-EP) or backprop",
            )
            need(self.outer_product == "digital", "outer_product", "digital only for hybrid")
        sizes = [MAX_INPUTS, *self.hidden, 10]
        params = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        need(
            params <= MAX_PARAMS,
            "hidden",
            f"at most {MAX_PARAMS:.0e} weights in all (these sizes need {params:.3g})",
        )
        need(
            self.device != "cuda" or torch.cuda.is_available(),
            "device",
            cuda_unavailable(),
        )
        need(
            self.device != "cuda" or self.outer_product == "digital",
            "device",
            "the coincidence update (--outer-product coincidence) runs on the CPU only",
        )
        if self.model in ("dhn", "hybrid") and self.algorithm == "eqprop":
            need(self.beta < 1.0, "beta", "allowed (0, 1) for the DHN (output curvature is 1)")

    @property
    def weight_layers(self) -> int:
        """Weight layers of the network (one learning rate each)."""
        if self.model != "hybrid":
            return len(self.hidden) + 1
        try:
            return trained_layers(self.arch)  # weight layers and batch norms
        except ArchError as e:
            raise ConfigError(f"{describe('arch')}: {e}") from None

    @property
    def inference_sweeps(self) -> int:
        return self.free_sweeps or self.sweeps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        """A configuration from a dict (results.json, a checkpoint); unknown keys are errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a table of options, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(map(str, unknown)))}")
        cfg = cls(**d)
        cfg.validate(partial=True)
        return cfg


FIELDS: dict[str, Field] = {f.name: f for f in fields(TrainConfig)}


def flag_of(f: Field) -> str:
    """The command-line option of a field (``lrs``: ``--lr``; ``batch_size``: ``--batch-size``)."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def describe(key: str) -> str:
    """``key (--flag)`` for messages that reach both file and command-line users."""
    return f"{key} ({flag_of(FIELDS[key])})"


def allowed(f: Field, unit: bool = True) -> str:
    """The allowed values of a field in words, e.g. ``an integer in [1, 100000]``."""
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(m["choices"])
    kind = m["kind"]
    noun = {
        bool: "on or off",
        int: "an integer",
        float: "a finite number",
        str: "a non-empty text",
        "ints": "integers",
        "floats": "finite numbers",
    }[kind]
    lo, hi = m["lo"], m["hi"]
    if lo is not None and hi is not None:
        left, right = "(" if m["lo_open"] else "[", ")" if m["hi_open"] else "]"
        rng = f" in {left}{_num(lo)}, {_num(hi)}{right}"
    elif lo is not None:
        rng = f" {'>' if m['lo_open'] else '>='} {_num(lo)}"
    elif hi is not None:
        rng = f" {'<' if m['hi_open'] else '<='} {_num(hi)}"
    else:
        rng = ""
    if m["length"]:
        a, b = m["length"]
        noun = f"{a} to {b} {noun}"
    return noun + rng + (f" ({m['unit']})" if unit and m["unit"] else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _scalar_ok(f: Field, v: Any) -> bool:
    m = f.metadata
    kind = {"ints": int, "floats": float}.get(m["kind"], m["kind"])
    if kind is bool or isinstance(v, bool):
        return kind is bool and isinstance(v, bool)
    if kind is int and not isinstance(v, int):
        return False
    if kind is float and not (isinstance(v, (int, float)) and math.isfinite(v)):
        return False
    if kind is str:
        return isinstance(v, str) and v.strip() != "" and (not m["choices"] or v in m["choices"])
    lo, hi = m["lo"], m["hi"]
    if lo is not None and (v < lo or (m["lo_open"] and v == lo)):
        return False
    return not (hi is not None and (v > hi or (m["hi_open"] and v == hi)))


def check_field(f: Field, value: Any, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` naming the field, its option and the allowed values unless
    ``value`` fits the field's row of the table."""
    if value is None and allow_none:
        return
    if f.metadata["kind"] in ("ints", "floats"):
        a, b = f.metadata["length"]
        ok = (
            isinstance(value, (list, tuple))
            and a <= len(value) <= b
            and all(_scalar_ok(f, v) for v in value)
        )
    else:
        ok = _scalar_ok(f, value)
    if not ok:
        raise ConfigError(f"{describe(f.name)}={value!r} is invalid: allowed {allowed(f)}")
