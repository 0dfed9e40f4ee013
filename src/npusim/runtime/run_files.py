"""The files of a run folder and their checked readers: ``checkpoint.pt`` (weights-only, with a
checksum), ``results.json``, ``eval.json`` and the saved ledger. Each reader refuses a damaged
or foreign file with one :class:`RunError` naming it."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch

from npusim.runtime.config import ConfigError, TrainConfig
from npusim.runtime.io import RunError, load_state, read_json, save_state
from npusim.runtime.ledger import Ledger, LedgerError
from npusim.runtime.train import EpochRecord

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
EVAL = "eval.json"
CURVE = "learning_curve.png"


# ---- checkpoints -------------------------------------------------------------------------
def save_checkpoint(state: dict, path: Path) -> None:
    """Write a trainer's :meth:`~npusim.runtime.train.Trainer.checkpoint` atomically, with the
    SHA-256 of its content (:func:`npusim.runtime.io.save_state`)."""
    save_state(state, path)


def load_checkpoint(out: Path) -> dict:
    """The checkpoint of run folder ``out``, loaded without running any code from the file
    (``weights_only``), its checksum and structure verified."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"nothing to resume: {path} not found")
    state = load_state(path)
    _check_checkpoint(state, path)
    return state


def _finite_tensors(x: Any) -> bool:
    return isinstance(x, list) and all(
        isinstance(t, torch.Tensor) and t.is_floating_point() and bool(torch.isfinite(t).all())
        for t in x
    )


def _check_checkpoint(ck: Any, path: Path) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise RunError(f"{path} is not a usable checkpoint: {what}")

    keys = {"config", "epoch", "params", "best_params", "history", "optim"}
    need(isinstance(ck, dict) and keys <= set(ck), f"needs the entries {', '.join(sorted(keys))}")
    try:
        cfg = TrainConfig.from_dict(ck["config"]).resolved()
    except ConfigError as e:
        raise RunError(f"{path}: stored configuration is invalid: {e}") from None
    epoch = ck["epoch"]
    need(_int(epoch) and 0 <= epoch <= cfg.epochs, "epoch out of range")
    need(_finite_tensors(ck["params"]) and len(ck["params"]) > 0, "params are not finite tensors")
    best = ck["best_params"]
    need(best is None or _finite_tensors(best), "best_params are not finite tensors")
    if best is not None:
        need([b.shape for b in best] == [p.shape for p in ck["params"]], "best_params shapes")
    hist = ck["history"]
    need(isinstance(hist, list) and len(hist) == epoch, "history does not match epoch")
    for i, rec in enumerate(hist):
        need(_check_record(rec, i + 1), f"history entry {i + 1} is malformed")
    optim = ck["optim"]
    need(isinstance(optim, dict) and set(optim) == {"buffers"}, "optim state is malformed")
    need(optim["buffers"] is None or _finite_tensors(optim["buffers"]), "optim buffers")
    syn = ck.get("synapses")
    need(syn is None or _check_synapses(syn), "synapse state is malformed")
    led = ck.get("ledger")
    if led is not None:
        check_ledger(led, path)


def _finite_list(v: Any) -> bool:
    """A list of None or finite tensors (a synapse kind's per-parameter state)."""
    return isinstance(v, list) and all(
        t is None or (isinstance(t, torch.Tensor) and bool(torch.isfinite(t.float()).all()))
        for t in v
    )


def _check_synapses(s: Any) -> bool:
    """A saved synapse state of a known kind, its nested device arrays checked too."""
    if not isinstance(s, dict) or not isinstance(s.get("kind"), str):
        return False
    kind = s["kind"]
    if kind == "ideal":
        return True  # exact synapses keep no state of their own
    if kind == "mixed":  # devices + the digital accumulator
        return _check_synapses(s.get("devices")) and _finite_list(s.get("chi"))
    if kind in ("ttv2", "cttv2", "agad"):  # fast array A, slow array C, digital buffers
        return (
            _check_synapses(s.get("fast"))
            and _check_synapses(s.get("slow"))
            and all(_finite_list(s.get(k)) for k in ("h", "mean", "past", "chopper"))
        )
    if kind != "devices":
        return False
    ints = ("seed", "updates", "total_pulses", "refreshes", "refresh_pulses")
    return (
        all(_int(s.get(k)) and s[k] >= 0 for k in ints)
        and all(
            isinstance(s.get(k), list)
            and all(
                t is None or (isinstance(t, torch.Tensor) and bool(torch.isfinite(t).all()))
                for t in s[k]
            )
            for k in ("rec", "c1")
        )
        and isinstance(s.get("scale"), list)
        and all(_num(v) for v in s["scale"])
        and isinstance(s.get("rng"), dict)
    )


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return (
        isinstance(x, (int, float))
        and not isinstance(x, bool)
        and math.isfinite(x)
        and lo <= x <= hi
    )


def _check_record(rec: Any, epoch: int) -> bool:
    """An epoch record's entries (those with defaults may be missing: older files)."""
    names = {f.name for f in fields(EpochRecord)}
    required = {f.name for f in fields(EpochRecord) if f.default is MISSING}
    if not isinstance(rec, dict) or not required <= set(rec) <= names:
        return False
    rec = {"unconverged": 0, "relaxations": 0, **rec}
    if not (_int(rec["epoch"]) and rec["epoch"] == epoch):
        return False
    errors = ("train_error", "val_error", "test_error")
    return (
        all(_num(rec[k], 0.0, 1.0) for k in errors)
        and _num(rec["samples_per_s"], 0.0)
        and _num(rec["seconds"], 0.0)
        and all(_int(rec[k]) and rec[k] >= 0 for k in ("unconverged", "relaxations"))
    )


# ---- results.json, eval.json, the ledger -----------------------------------------------------
def check_ledger(d: Any, path: Path | str) -> Ledger:
    """A :class:`Ledger` from its saved dict (every entry's type and range checked by
    :meth:`Ledger.from_dict`); a malformed one is a :class:`RunError` naming ``path``."""
    try:
        led = Ledger.from_dict(d)
    except LedgerError as e:
        raise RunError(f"{path}: the ledger is malformed ({e})") from None
    if set(led.layers) != set(led.phases):  # every counted phase has both tables
        raise RunError(
            f"{path}: the ledger is malformed (phases {sorted(led.phases)} but per-array "
            f"counts for {sorted(led.layers)})"
        )
    return led


def read_results(out: Path) -> dict:
    """Run folder ``out``'s ``results.json``, checked: a valid configuration, well-formed epoch
    records, error rates in [0, 1] and a well-formed ledger (each when present)."""
    path = Path(out) / RESULTS
    if not path.is_file():
        raise RunError(f"{path} not found: pass the folder of a finished 'npusim train'")
    res = read_json(path)
    if not isinstance(res, dict):
        raise RunError(f"{path} is not a results table (it holds a {type(res).__name__})")
    try:
        TrainConfig.from_dict(res.get("config", {}))
    except ConfigError as e:
        raise RunError(f"{path}: stored configuration is invalid: {e}") from None
    epochs = res.get("epochs", [])
    if not isinstance(epochs, list) or not all(
        _check_record(r, i + 1) for i, r in enumerate(epochs)
    ):
        raise RunError(f"{path}: 'epochs' is not a list of epoch records")
    for key in ("best_val_error", "test_error", "last_test_error"):
        if res.get(key) is not None and not _num(res[key], 0.0, 1.0):
            raise RunError(f"{path}: {key} must be an error rate in [0, 1]")
    if "ledger" in res:
        check_ledger(res["ledger"], path)
    return res


def read_ledger(out: Path) -> tuple[Ledger, dict]:
    """The ledger of run folder ``out`` (its results.json's ``ledger``) and the results."""
    res = read_results(out)
    if "ledger" not in res:
        raise RunError(f"{Path(out) / RESULTS} has no 'ledger' entry; re-run training")
    return check_ledger(res["ledger"], Path(out) / RESULTS), res


def read_eval(out: Path) -> dict:
    """Run folder ``out``'s ``eval.json`` (``{chip: {chip, split, results: [...]}}``), checked;
    an empty dict when there is none yet."""
    path = Path(out) / EVAL
    if not path.exists():
        return {}
    data = read_json(path)

    def row_ok(r: Any, split: Any) -> bool:
        return (
            isinstance(r, dict)
            and isinstance(r.get("after"), str)
            and _num(r.get("seconds"), 0.0)
            and _num(r.get(f"{split}_error"), 0.0, 1.0)
        )

    ok = isinstance(data, dict) and all(
        isinstance(v, dict)
        and isinstance(v.get("chip"), str)
        and v.get("split") in ("val", "test")
        and isinstance(v.get("results"), list)
        and all(row_ok(r, v["split"]) for r in v["results"])
        for v in data.values()
    )
    if not ok:
        raise RunError(
            f"{path} is not an eval table of 'npusim eval' ({{chip: {{chip, split, results}}}}); "
            "move or delete it"
        )
    return data
