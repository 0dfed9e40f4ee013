"""A whole training run on disk: run folder, progress, checkpoints, results.json, curve PNG."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from npusim.core.errors import NpusimError
from npusim.runtime.config import TrainConfig
from npusim.runtime.io import atomic_json, atomic_write
from npusim.runtime.train import EpochRecord, Trainer

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
CURVE = "learning_curve.png"


class RunError(NpusimError, RuntimeError):
    """A run folder cannot be used as asked (exists, or has nothing to resume)."""


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


def load_checkpoint(out: Path) -> dict:
    path = out / CHECKPOINT
    if not path.is_file():
        raise RunError(f"nothing to resume: {path} not found")
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # a damaged checkpoint is one clear error
        raise RunError(f"cannot read checkpoint {path}: {e}") from None


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
    }
    res["chip"] = tr.cfg.chip
    stats = tr.synapses.pulse_stats() if hasattr(tr.synapses, "pulse_stats") else None
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


def train_run(
    cfg: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    epochs: int | None = None,
    synapses=None,
    ledger=None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    extra_results: Callable[[Trainer], dict] | None = None,
) -> Trainer:
    """Train ``cfg`` into folder ``out`` (checkpoint each epoch; ``resume`` continues exactly,
    from the checkpoint's configuration, optionally with a new total of ``epochs``)."""
    log = log or (lambda s: print(s, flush=True))
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        cfg = TrainConfig.from_dict(ckpt["config"])
        if epochs is not None:  # a resumed run may be extended
            cfg.epochs = epochs
    else:
        check_fresh(out)
    tr = Trainer(cfg, synapses=synapses, ledger=ledger)
    if ckpt is not None:
        tr.load_checkpoint(ckpt)
        log(f"resuming {out} after epoch {tr.state.epoch}")
    out.mkdir(parents=True, exist_ok=True)
    n_train = len(tr.data.x_train)
    title = f"{tr.cfg.model.upper()} {tr.cfg.algorithm} on {tr.cfg.dataset}"
    for _ in range(tr.state.epoch, tr.cfg.epochs):
        rec = _epoch_with_progress(tr, n_train, progress)
        log(
            f"epoch {rec.epoch:3d}/{tr.cfg.epochs}  train {100 * rec.train_error:5.2f}%  "
            f"val {100 * rec.val_error:5.2f}%  test {100 * rec.test_error:5.2f}%  "
            f"{rec.samples_per_s:7.0f} samples/s  {rec.seconds:5.1f} s"
        )
        tr.save_checkpoint(out / CHECKPOINT)
        extra = extra_results(tr) if extra_results else None
        atomic_json(results_dict(tr, extra), out / RESULTS)
        plot_curve(tr.state.history, out / CURVE, title)
    return tr


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
