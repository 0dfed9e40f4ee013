"""A whole training run on disk: run folder, lock, progress, resume, divergence checks,
results.json and the curve PNG (the folder's files and their checked readers are in
:mod:`npusim.runtime.run_files`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from npusim.runtime.config import TrainConfig, flag_of
from npusim.runtime.io import (
    LOCK,
    RunError,
    RunLock,
    atomic_json,
    atomic_write,
    clean_temp_files,
)
from npusim.runtime.ledger import Ledger
from npusim.runtime.run_files import (
    CHECKPOINT,
    CURVE,
    EVAL,
    RESULTS,
    load_checkpoint,
    read_eval,
    read_ledger,
    read_results,
    save_checkpoint,
)
from npusim.runtime.train import EpochRecord, Trainer

if TYPE_CHECKING:
    from npusim.runtime.parallel import DataParallel

__all__ = [
    "CHECKPOINT",
    "CURVE",
    "EVAL",
    "RESULTS",
    "RunError",
    "TrainingDiverged",
    "check_resume_options",
    "config_conflicts",
    "load_checkpoint",
    "read_eval",
    "read_ledger",
    "read_results",
    "save_checkpoint",
    "train_run",
]

RUNAWAY = 1e6  # weights beyond this many times their initial largest magnitude have run away
GROWTH = 10.0  # at chance-level error, weights grown this many times mean a collapse
CHANCE_MARGIN = 0.02  # train error within this of chance (1 - 1/classes) is chance


class TrainingDiverged(RunError):
    """Training ran away (non-finite or exploding weights) or collapsed to chance."""


# ---- folders -------------------------------------------------------------------------------
def new_run_dir(root: Path, cfg: TrainConfig) -> Path:
    """A fresh folder ``root/YYYYmmdd-HHMMSS-model-dataset[-n]`` that never reuses a name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{stamp}-{cfg.model}-{cfg.dataset}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def check_fresh(out: Path) -> None:
    """Refuse to train into a folder that holds an earlier run's files."""
    for name in (CHECKPOINT, RESULTS):
        if (out / name).exists():
            raise RunError(
                f"{out} already holds a run ({name}); pass --resume to continue it "
                "or choose another --out"
            )


def resume_trainer(
    out: Path, *, synapses=None, ledger: Ledger | None = None, device: str | None = None
) -> tuple[Trainer, dict, float]:
    """A trainer restored from run folder ``out``'s checkpoint, the checkpoint, and the largest
    initial weight magnitude of its network (the divergence check's reference). ``device``:
    where to continue (default: the stored ``--device``; checkpoints load on any device)."""
    ckpt = load_checkpoint(out)
    cfg = TrainConfig.from_dict(ckpt["config"])
    if device is not None:
        cfg.device = device
    tr = Trainer(cfg, synapses=synapses, ledger=ledger)
    w0 = _max_abs(tr.model.params())
    shapes = [tuple(p.shape) for p in tr.model.params()]
    if [tuple(p.shape) for p in ckpt["params"]] != shapes:
        raise RunError(f"{out / CHECKPOINT}: its weights do not fit the network it describes")
    try:
        tr.load_checkpoint(ckpt)
    except ValueError as e:  # e.g. device state saved from another chip
        raise RunError(f"cannot resume from {out / CHECKPOINT}: {e}") from None
    return tr, ckpt, w0


def results_dict(tr: Trainer, extra: dict | None = None) -> dict:
    best = tr.best
    hist = tr.state.history
    res = {
        "config": tr.cfg.to_dict(),
        "epochs": [r.to_dict() for r in hist],
        "best_epoch": best.epoch if best else None,
        "best_val_error": best.val_error if best else None,
        "test_error": best.test_error if best else None,
        "last_test_error": hist[-1].test_error if hist else None,
        "samples_per_s": sum(r.samples_per_s for r in hist) / len(hist) if hist else None,
        # relaxations that stopped at their sweep cap short of the tolerance, over the run
        "unconverged_relaxations": sum(r.unconverged for r in hist),
        "relaxations": sum(r.relaxations for r in hist),
    }
    res["chip"] = tr.cfg.chip
    res["device"] = str(tr.device)  # where it ran (``auto`` resolved)
    stats = tr.synapses.pulse_stats() if tr.synapses is not None else None
    res["pulses"] = stats or {"pulses_mean": 0.0, "pulses_max": 0, "pulses_total": 0}
    if tr.ledger is not None:  # event counts for `npusim report`
        res["ledger"] = tr.ledger.to_dict()
    if extra:
        res.update(extra)
    return res


def plot_curve(history: list[EpochRecord], path: Path, title: str) -> None:
    """Train/validation/test error per epoch, written atomically as a PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [r.epoch for r in history]
    for key, label in (
        ("train_error", "train"),
        ("val_error", "validation"),
        ("test_error", "test"),
    ):
        ax.plot(ep, [100 * getattr(r, key) for r in history], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    best = min(history, key=lambda r: (r.val_error, r.epoch))
    ax.axvline(best.epoch, color="grey", ls=":", label=f"best validation (epoch {best.epoch})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


# ---- resume options, divergence ----------------------------------------------------------------
def _same(key: str, stored: Any, given: Any) -> bool:
    if key == "lrs" and isinstance(given, list) and len(given) == 1 and isinstance(stored, list):
        return all(v == given[0] for v in stored)
    if key in ("chip", "data_dir") and stored is not None and given is not None:
        a, b = Path(str(stored)), Path(str(given))
        if a.exists() and b.exists():
            return a.resolve() == b.resolve()
    return stored == given


def _cli(value: Any) -> str:
    """A value as it is written on the command line (lists comma-separated)."""
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def config_conflicts(stored: TrainConfig, given: dict[str, Any]) -> list[str]:
    """``--option given (stored: value)`` for each of ``given`` that differs from ``stored``."""
    out = []
    for key, value in given.items():
        old = getattr(stored, key)
        if not _same(key, old, value):
            flag = flag_of(next(f for f in fields(TrainConfig) if f.name == key))
            out.append(f"{flag} {_cli(value)} (stored: {_cli(old)})")
    return out


def check_resume_options(stored: TrainConfig, given: dict[str, Any], out: Path) -> None:
    """Refuse options given with ``--resume`` that contradict the run's stored configuration."""
    bad = config_conflicts(stored, given)
    if bad:
        raise RunError(
            f"--resume continues {out} with its stored configuration, which conflicts with "
            f"{'; '.join(bad)}; drop those options or start a new run"
        )


def _max_abs(params: list[torch.Tensor]) -> float:
    return max((float(p.detach().abs().max()) for p in params if p.numel()), default=0.0)


def check_divergence(tr: Trainer, rec: EpochRecord, w0: float) -> None:
    """Raise :class:`TrainingDiverged` when the weights are non-finite, ran away beyond
    :data:`RUNAWAY` times their initial largest magnitude ``w0``, or grew :data:`GROWTH` times
    while the training error fell to chance."""
    params = tr.model.params()
    lrs = ",".join(f"{lr:g}" for lr in tr.cfg.lrs)
    kept = "no checkpoint was written" if rec.epoch == 1 else "the last good checkpoint is kept"
    hint = f"lower --lr (now {lrs}); {kept}"
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise TrainingDiverged(
            f"training diverged at epoch {rec.epoch}: weights became NaN/inf; {hint}"
        )
    w, ref = _max_abs(params), max(w0, 1e-12)
    if w > RUNAWAY * ref:
        raise TrainingDiverged(
            f"training diverged at epoch {rec.epoch}: weights ran away to {w:.3g}, "
            f"{w / ref:.3g}× their initial largest {ref:.3g}; {hint}"
        )
    trained = len(tr.cfg.classes) if tr.cfg.classes else tr.data.num_classes  # a class subset
    chance = 1.0 - 1.0 / trained
    if rec.train_error >= chance - CHANCE_MARGIN and w > GROWTH * ref:
        raise TrainingDiverged(
            f"training diverged at epoch {rec.epoch}: train error {100 * rec.train_error:.1f}% "
            f"is chance ({100 * chance:.0f}%) while the weights grew {w / ref:.3g}×; {hint}"
        )


# ---- the run ----------------------------------------------------------------------------------
def train_run(
    cfg: TrainConfig | None,
    out: Path,
    *,
    resume: bool = False,
    epochs: int | None = None,
    given: dict[str, Any] | None = None,
    synapses=None,
    ledger=None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    extra_results: Callable[[Trainer], dict] | None = None,
    parallel: DataParallel | None = None,
) -> Trainer:
    """Train ``cfg`` into folder ``out`` (checkpoint each epoch; ``resume`` continues exactly,
    from the checkpoint's configuration (``cfg`` may be None), optionally with a new total of
    ``epochs``; ``given``: options the user set explicitly, refused on resume when they
    contradict the stored ones).

    The folder is locked while the run writes it; temporary files of an interrupted write are
    removed; a resumed run rewrites results.json from its checkpoint (repairing a kill between
    the two); a run that diverges stops with :class:`TrainingDiverged`, keeping the last good
    checkpoint. ``parallel``: this process's :class:`npusim.runtime.parallel.DataParallel`
    rank (data-parallel training; only rank 0 locks and writes the folder and logs)."""
    writer = parallel is None or parallel.writer
    log = log or (lambda s: print(s, flush=True))
    if not writer:
        log = _silent
    out = Path(out)
    if str(out).strip() == "":
        raise RunError("the run folder (--out) must not be empty")
    if resume and not (out / CHECKPOINT).is_file():
        raise RunError(f"nothing to resume: {out / CHECKPOINT} not found")
    if not resume:
        if cfg is None:
            raise TypeError("train_run needs a configuration unless it resumes")
        cfg = cfg.resolved()  # a bad option fails before the folder is made
    created = writer and not out.exists()
    try:
        with RunLock(out) if writer else nullcontext():
            if writer:
                clean_temp_files(out)
            if resume:
                given = dict(given or {})  # --device says where to continue, not what to run
                device = given.pop("device", None)
                tr, _, w0 = resume_trainer(out, synapses=synapses, ledger=ledger, device=device)
                check_resume_options(tr.cfg, given, out)
                if epochs is not None:  # a resumed run may be extended
                    if epochs < tr.state.epoch:
                        raise RunError(f"--epochs {epochs}: {out} has already run {tr.state.epoch}")
                    tr.cfg.epochs = epochs
                log(f"resuming {out} after epoch {tr.state.epoch}")
            else:
                if writer:
                    check_fresh(out)
                tr = Trainer(cfg, synapses=synapses, ledger=ledger)
                w0 = _max_abs(tr.model.params())
            tr.parallel = parallel
            _train(tr, out, w0, resume, log, progress and writer, extra_results, writer)
    except BaseException:
        if created and not (out / CHECKPOINT).exists():  # leave no empty folder behind
            _remove_empty(out)
        raise
    return tr


def _train(
    tr: Trainer,
    out: Path,
    w0: float,
    resume: bool,
    log: Callable[[str], None],
    progress: bool,
    extra_results: Callable[[Trainer], dict] | None,
    writer: bool = True,
) -> None:
    """The epochs of :func:`train_run`, in the locked folder ``out`` (``writer`` False: a
    data-parallel rank other than 0, which writes nothing)."""
    title = f"{tr.cfg.model.upper()} {tr.cfg.algorithm} on {tr.cfg.dataset}"
    if writer and resume and tr.state.history:  # results.json from the checkpoint (a kill
        _write_results(tr, out, title, extra_results)  # may have come between the two)
    n_train = len(tr.data.x_train)
    for _ in range(tr.state.epoch, tr.cfg.epochs):
        rec = _epoch_with_progress(tr, n_train, progress)
        log(
            f"epoch {rec.epoch:3d}/{tr.cfg.epochs}  train {100 * rec.train_error:5.2f}%  "
            f"val {100 * rec.val_error:5.2f}%  test {100 * rec.test_error:5.2f}%  "
            f"{rec.samples_per_s:7.0f} samples/s  {rec.seconds:5.1f} s"
        )
        check_divergence(tr, rec, w0)
        if writer:
            save_checkpoint(tr.checkpoint(), out / CHECKPOINT)
            _write_results(tr, out, title, extra_results)


def _silent(_: str) -> None:
    pass


def _remove_empty(out: Path) -> None:
    """Remove a run folder this run created if it holds nothing but the lock and temp files."""
    (out / LOCK).unlink(missing_ok=True)
    clean_temp_files(out)
    try:
        out.rmdir()
    except OSError:  # something else is in it: keep it
        pass


def _write_results(
    tr: Trainer, out: Path, title: str, extra_results: Callable[[Trainer], dict] | None
) -> None:
    extra = extra_results(tr) if extra_results else None
    atomic_json(results_dict(tr, extra), out / RESULTS)
    plot_curve(tr.state.history, out / CURVE, title)


def _epoch_with_progress(tr: Trainer, n_train: int, progress: bool) -> EpochRecord:
    if not progress or not sys.stdout.isatty():  # a bar only where a person watches
        return tr.run_epoch()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"epoch {tr.state.epoch + 1}", total=n_train)
        return tr.run_epoch(lambda n: bar.advance(task, n))
