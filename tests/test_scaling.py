"""Scaling out: sweeps as Ray tasks (equal to the serial backend, a killed trial retried) and
data-parallel training with torch.distributed (equal to one process on the ideal chip, ranks'
devices equal on a device chip)."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch

from npusim.cli.main import main
from npusim.cli.trials import Trial, TrialError, _run_trial, run_trials
from npusim.runtime.config import TrainConfig
from npusim.runtime.run import load_checkpoint

SMALL = ["--dataset", "digits", "--hidden", "16", "--epochs", "1", "--no-progress"]
CFG = TrainConfig(dataset="digits", hidden=[16], epochs=1)


# ---- Ray ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the module's tests, shut down after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install npusim[ray])")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _trials(root, seeds=(0, 1)) -> list[Trial]:
    return [Trial(f"seed-{s}", dataclasses.replace(CFG, seed=s), root / f"seed-{s}") for s in seeds]


def _params(folder) -> list[torch.Tensor]:
    return load_checkpoint(folder)["params"]


def test_ray_sweep_equals_serial(tmp_path, local_ray, capsys):
    """Two trials as Ray tasks of 1 CPU each give the serial backend's runs bit for bit: the
    same summaries and the same weights in their checkpoints; a line per finished trial."""
    serial = run_trials(_trials(tmp_path / "serial"), jobs=1, threads=1, progress=False)
    on_ray = run_trials(_trials(tmp_path / "ray"), backend="ray", cpus_per_trial=1)
    out = capsys.readouterr().out
    assert "2 runs as Ray tasks, 1 CPU(s) and 1 torch thread(s) each" in out
    assert "[1/2," in out and "[2/2," in out
    for a, b in zip(serial, on_ray, strict=True):
        assert "error" not in b
        assert {k: v for k, v in a.items() if k != "folder"} == {
            k: v for k, v in b.items() if k != "folder"
        }
        for p, q in zip(_params(a["folder"]), _params(b["folder"]), strict=True):
            assert torch.equal(p, q)
    assert serial[0]["test_error"] != serial[1]["test_error"] or not torch.equal(
        _params(serial[0]["folder"])[0], _params(serial[1]["folder"])[0]
    )  # the seeds differ, so equality above is not of two copies of one run


def _killed_once(t: Trial, threads, progress, quiet) -> dict:
    """The trial function, except that the first attempt of seed 1 dies mid-process."""
    marker = t.folder.parent / f"killed-{t.cfg.seed}"
    if t.cfg.seed == 1 and not marker.exists():
        marker.write_text("killed")
        os._exit(9)
    return _run_trial(t, threads, progress, quiet)


def _always_fails(t: Trial, threads, progress, quiet) -> dict:
    if t.cfg.seed == 1:
        with open(t.folder.parent / "attempts", "a") as f:
            f.write(f"{os.getpid()}\n")
        raise RuntimeError(f"attempt in pid {os.getpid()} failed")
    return _run_trial(t, threads, progress, quiet)


def test_ray_killed_trial_is_retried_and_sweep_completes(tmp_path, local_ray):
    from ray import cloudpickle

    from npusim.cli.trials import run_trials_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    runs = run_trials_ray(_trials(tmp_path), cpus_per_trial=1, run=_killed_once)
    assert (tmp_path / "killed-1").exists()  # the first attempt did die
    assert [r["seed"] for r in runs] == [0, 1] and all("error" not in r for r in runs)
    assert load_checkpoint(tmp_path / "seed-1")["epoch"] == 1


def test_ray_trial_failing_twice_is_reported_and_others_finish(tmp_path, local_ray, capsys):
    from ray import cloudpickle

    from npusim.cli.trials import run_trials_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runs = run_trials_ray(_trials(tmp_path), cpus_per_trial=1, run=_always_fails)
    assert "error" not in runs[0] and runs[0]["test_error"] < 0.9  # chance: 0.9
    assert len((tmp_path / "attempts").read_text().split()) == 2  # tried, then retried once
    assert runs[1]["error"].startswith("RuntimeError: attempt in pid")
    assert "seed-1: FAILED (RuntimeError" in capsys.readouterr().out


def test_ray_sweep_on_the_command_line_resumes(tmp_path, local_ray, capsys):
    """``sweep --backend ray``: table written; launched again, the complete runs are reused."""
    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--param", "beta", "--values", "0.2,0.3", "--out", str(out)]
    assert main([*args, "--backend", "ray", "--cpus-per-trial", "1"]) == 0
    first = (out / "sweep.csv").read_text()
    capsys.readouterr()
    assert main([*args, "--backend", "ray"]) == 0
    assert "continuing the run found in" in capsys.readouterr().out
    assert (out / "sweep.csv").read_text() == first


def test_ray_options_need_the_ray_backend(tmp_path, capsys):
    with pytest.raises(TrialError, match="options of --backend ray"):
        run_trials(_trials(tmp_path), cpus_per_trial=2)


def test_backend_ray_without_ray_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--param", "beta", "--values", "0.2", "--out", str(out)]
    assert main([*args, "--backend", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["npusim: error: --backend ray needs Ray: pip install npusim[ray]"]
