"""Several training runs (the seeds of ``train --seeds``, the cells of ``sweep``) one after
another or in parallel processes, each summarised for a results table.

Each trial is one run folder. In parallel, every process trains with ``cores // jobs`` torch
threads (or ``--threads``), prints its epoch lines prefixed with its name, and the parent prints
one line per finished trial. A trial that fails with a user error (a diverged run, a refused
folder) is reported by name and the others go on; the caller decides what to do with it. A
worker whose parent is killed exits too (its run resumes when the command is run again).

With ``backend="ray"`` each trial is one Ray task (a local Ray instance, or the cluster at
``address``) running the same trial function; a task whose process dies or raises is retried
once (continuing the run its folder holds), then reported as failed.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from npusim.core.errors import NpusimError
from npusim.runtime.config import TrainConfig

BACKENDS = ("local", "ray")
RAY_RETRIES = 1  # a trial whose task dies or raises runs once more


@dataclass(frozen=True)
class Trial:
    """One run: ``cfg`` trained into ``folder`` (``resume``: continue the complete or partial
    run found there to ``cfg.epochs``)."""

    name: str
    cfg: TrainConfig
    folder: Path
    resume: bool = False


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_jobs(n_trials: int, jobs: int | None, threads: int | None) -> tuple[int, int | None]:
    """(processes, torch threads per process): ``jobs`` or as many as the cores allow (at most
    one per trial); threads ``threads`` or the cores shared out (None: one process keeps
    torch's own choice)."""
    cores = available_cores()
    n = max(1, min(n_trials, jobs if jobs is not None else cores))
    if threads is not None or n == 1:
        return n, threads
    return n, max(1, cores // n)


def run_trials(
    trials: Sequence[Trial], *, jobs: int | None = None, threads: int | None = None,
    progress: bool = True, backend: str = "local", address: str | None = None,
    cpus_per_trial: int | None = None,
) -> list[dict]:  # fmt: skip
    """Run ``trials``; a summary dict per trial, in order (``error`` set for a failed one).
    ``backend``: ``local`` (this machine's processes, ``jobs``) or ``ray`` (one task per trial
    with ``cpus_per_trial`` CPUs, default 1, on a local Ray or the cluster at ``address``)."""
    if backend == "ray":
        return run_trials_ray(trials, address=address, cpus_per_trial=cpus_per_trial or 1,
                              threads=threads)  # fmt: skip
    if backend != "local":
        raise TrialError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if address is not None or cpus_per_trial is not None:
        raise TrialError("--address and --cpus-per-trial are options of --backend ray")
    n, per = plan_jobs(len(trials), jobs, threads)
    if n == 1:  # in this process; a single run prints its energy tables as `train` does
        show = len(trials) == 1
        return [_run_trial(t, per, progress, quiet=False, tables=show) for t in trials]
    print(f"{len(trials)} runs in {n} processes, {per} torch thread(s) each", flush=True)
    results: dict[int, dict] = {}
    t0 = time.perf_counter()
    spawn = get_context("spawn")
    with ProcessPoolExecutor(
        n, mp_context=spawn, initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending = {
            pool.submit(_run_trial, t, per, False, True, False): i for i, t in enumerate(trials)
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        results[i] = fut.result()
                    except Exception as e:  # noqa: BLE001 - a crashed process: report, go on
                        results[i] = _failed(trials[i], f"{type(e).__name__}: {e}")
                    print(_finished_line(results[i], len(results), len(trials), t0), flush=True)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[i] for i in range(len(trials))]


PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it is alive


def exit_with_parent(parent: int) -> None:
    """In a worker process: exit as soon as ``parent`` is gone (killed, not just interrupted),
    instead of training on as an orphan. The run folder keeps its last checkpoint, so the
    relaunched command resumes it."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(143)  # as killed by SIGTERM

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class TrialError(NpusimError):
    """A backend that cannot run the trials (Ray missing or unreachable, options that clash)."""


def run_trials_ray(
    trials: Sequence[Trial], *, address: str | None = None, cpus_per_trial: int = 1,
    threads: int | None = None, run: Callable[..., dict] | None = None,
) -> list[dict]:  # fmt: skip
    """Run ``trials`` as Ray tasks of ``cpus_per_trial`` CPUs each (torch threads: ``threads``,
    default ``cpus_per_trial``), on the Ray this process is connected to, else a local Ray
    (``address`` None) or the cluster at ``address``, started here and shut down after. A task
    that dies or raises is retried :data:`RAY_RETRIES` time(s), continuing the run in its
    folder; then it is reported as failed and the others go on. ``run``: the function a task
    runs, called as ``run(trial, threads, progress, quiet)`` (default: train and summarise)."""
    try:
        import ray
    except ImportError:
        raise TrialError("--backend ray needs Ray: pip install npusim[ray]") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise TrialError(f"cannot start {where}: {' '.join(str(e).split())}") from None
    task = ray.remote(num_cpus=cpus_per_trial, max_retries=RAY_RETRIES, retry_exceptions=True)(
        _ray_trial
    )
    per = threads or cpus_per_trial
    print(f"{len(trials)} runs as Ray tasks, {cpus_per_trial} CPU(s) and {per} torch "
          f"thread(s) each", flush=True)  # fmt: skip
    results: dict[int, dict] = {}
    t0 = time.perf_counter()
    try:
        pending = {task.remote(t, per, run or _run_trial): i for i, t in enumerate(trials)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a task that failed twice: report, go on
                    results[i] = _failed(trials[i], _ray_error(e))
                print(_finished_line(results[i], len(results), len(trials), t0), flush=True)
    finally:
        if started:
            ray.shutdown()
    return [results[i] for i in range(len(trials))]


def _ray_trial(t: Trial, threads: int, run: Callable[..., dict]) -> dict:
    """One trial in a Ray task; a retried task continues the run its folder already holds."""
    from dataclasses import replace

    from npusim.runtime.run import CHECKPOINT

    if not t.resume and (t.folder / CHECKPOINT).is_file():  # an earlier attempt's epochs
        t = replace(t, resume=True)
    return run(t, threads, False, True)


def _ray_error(e: Exception) -> str:
    """A failed task's error as one line: its cause's type and message, without the traceback
    Ray adds."""
    cause = getattr(e, "cause", None) or e  # a RayTaskError carries the task's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()


def _failed(t: Trial, message: str) -> dict:
    return {"name": t.name, "folder": str(t.folder), "seed": t.cfg.seed, "error": message}


def _finished_line(r: dict, k: int, n: int, t0: float) -> str:
    head = f"[{k}/{n}, {time.perf_counter() - t0:.0f} s] {r['name']}:"
    if "error" in r:
        return f"{head} FAILED ({r['error']})"
    return f"{head} test error {100 * r['test_error']:.2f}% (best epoch {r['best_epoch']})"


def _run_trial(
    t: Trial, threads: int | None, progress: bool, quiet: bool, tables: bool | None = None
) -> dict:
    """Train one trial and summarise it (runs in a worker process when parallel). ``quiet``:
    epoch lines prefixed with the trial's name, user errors returned, not raised; ``tables``:
    print the run's energy tables (default: when not ``quiet``; its report files are written
    either way)."""
    from rich.console import Console

    from npusim.core.errors import NpusimError
    from npusim.cost.constants import drn_power_scale_w
    from npusim.report import report_ledger
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.run import train_run
    from npusim.runtime.threads import apply_default_threads

    apply_default_threads(threads)
    cfg = t.cfg
    scale = drn_power_scale_w(cfg.chip, cfg.input_gain) if cfg.model == "drn" else None
    log = (lambda s: print(f"[{t.name}] {s}", flush=True)) if quiet else None
    try:
        tr = train_run(
            cfg, t.folder, resume=t.resume, epochs=cfg.epochs if t.resume else None,
            progress=progress, ledger=Ledger(power_scale_w=scale), log=log,
        )  # fmt: skip
        show = not quiet if tables is None else tables
        console = None if show else Console(file=io.StringIO(), width=120)
        if tr.ledger is not None and tr.ledger.training_samples > 0:
            report_ledger(tr.ledger, t.folder, chip=tr.cfg.chip, console=console)
    except NpusimError as e:
        if not quiet:
            raise
        return _failed(t, str(e))
    return summarise(t, tr)


def summarise(t: Trial, tr) -> dict:
    """Test error at the best validation epoch, pulses per device, energy and time per
    training sample (the chip's cost model on the run's ledger) and device lifetime at that
    training throughput, for the mean and the most-pulsed device."""
    from npusim.chip import load_chip
    from npusim.cost.npu import per_sample
    from npusim.cost.wear import lifetime_s

    best = tr.best
    stats = tr.synapses.pulse_stats() if tr.synapses is not None else {}
    out = {
        "name": t.name,
        "folder": str(t.folder),
        "seed": tr.cfg.seed,
        "test_error": best.test_error,
        "val_error": best.val_error,
        "best_epoch": best.epoch,
        "test_samples": len(tr.data.split("test")[1]),
        "pulses_mean": float(stats.get("pulses_mean", 0.0)),
        "pulses_max": int(stats.get("pulses_max", 0)),
    }
    ledger = tr.ledger
    if ledger is None or ledger.training_samples == 0:
        return out
    spec = load_chip(tr.cfg.chip)
    train = per_sample(ledger, spec)["train"]
    n, dt = ledger.training_samples, train["time_s"]
    out["energy_per_train_sample_j"] = sum(train["energy_j"].values())
    out["time_per_train_sample_s"] = dt
    endurance = spec.device.endurance
    out["lifetime_mean_device_s"] = lifetime_s(out["pulses_mean"], n, dt, endurance)
    out["lifetime_max_device_s"] = lifetime_s(out["pulses_max"], n, dt, endurance)
    return out


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean and sample s.d. (0 for one run) of the finished runs of a cell (fractions, J, s),
    the first run's binomial standard error ``test_error_se``, and the shortest lifetimes."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"seeds": [], "failed": [r["seed"] for r in runs]}
    errs = [r["test_error"] for r in ok]
    agg: dict = {
        "seeds": [r["seed"] for r in ok],
        "failed": [r["seed"] for r in runs if "error" in r],
        "test_error_mean": statistics.fmean(errs),
        "test_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
        "test_error_se": _binomial_se(errs[0], ok[0]["test_samples"]),
        "val_error_mean": statistics.fmean(r["val_error"] for r in ok),
        "best_epochs": [r["best_epoch"] for r in ok],
        "pulses_mean": statistics.fmean(r["pulses_mean"] for r in ok),
        "pulses_max": max(r["pulses_max"] for r in ok),
    }
    for key in ("energy_per_train_sample_j", "time_per_train_sample_s"):
        if all(key in r for r in ok):
            agg[key] = statistics.fmean(r[key] for r in ok)
    for key in ("lifetime_mean_device_s", "lifetime_max_device_s"):
        if all(key in r for r in ok):
            agg[key] = min(r[key] for r in ok)  # the shortest over the seeds
    return agg


def _binomial_se(p: float, n: int) -> float:
    """Binomial standard error of an error rate ``p`` measured on ``n`` samples."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else 0.0
