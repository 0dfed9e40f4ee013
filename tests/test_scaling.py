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


# ---- data-parallel training -----------------------------------------------------------------
def test_two_gloo_processes_train_as_one_process(tmp_path, capfd):
    """``train --nproc 2`` (2 spawned gloo ranks, 1 thread each) on the ideal chip ends the
    epoch with one process's weights for the same global batch, to float32 rounding: each
    rank's estimate is its half-batch mean, weighted ½ and summed, where one process averages
    the whole batch in one sum (measured difference <= 4e-7; tolerance atol 1e-5, rtol
    1e-4). ``--resume`` continues it in 2 processes to a second epoch, still as one process
    would."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *SMALL, "--threads", "1", "--out", str(one)]) == 0
    assert main(["train", *SMALL, "--nproc", "2", "--threads", "1", "--out", str(two)]) == 0
    out = capfd.readouterr().out
    assert "data-parallel training in 2 processes, 1 torch thread(s) each" in out
    assert out.count("(2 processes)") == 1  # rank 0 alone reports
    a, b = load_checkpoint(one), load_checkpoint(two)
    diffs = [float((p - q).abs().max()) for p, q in zip(a["params"], b["params"], strict=True)]
    print("max |w_1proc - w_2proc| per parameter:", diffs)
    for p, q in zip(a["params"], b["params"], strict=True):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4)
    assert not torch.equal(a["params"][0], load_checkpoint_initial(tmp_path))  # it trained
    assert b["ledger"] == a["ledger"]  # the global work counted once, as by one process
    assert b["history"][0]["train_error"] == pytest.approx(a["history"][0]["train_error"], abs=0.01)
    resume = ["train", "--resume", "--epochs", "2", "--no-progress", "--threads", "1"]
    assert main([*resume, "--out", str(one)]) == 0
    assert main([*resume, "--nproc", "2", "--out", str(two)]) == 0
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert a["epoch"] == b["epoch"] == 2 and len(b["history"]) == 2
    for p, q in zip(a["params"], b["params"], strict=True):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4)


def _train_rank_and_dump(cfg: TrainConfig, out, dump) -> None:
    """One rank of a data-parallel run; saves its device arrays to ``dump``/rank-R.pt."""
    from npusim.runtime.parallel import init
    from npusim.runtime.run import train_run

    torch.set_num_threads(1)
    dp = init("gloo")
    tr = train_run(cfg, out, progress=False, parallel=dp, log=lambda s: None)
    torch.save(tr.synapses.state_dict(), dump / f"rank-{dp.rank}.pt")


def _tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state) for t in _tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return [torch.tensor(float(state))] if isinstance(state, (int, float)) else []


def test_data_parallel_ranks_keep_equal_devices_on_a_device_chip(tmp_path):
    """On rram (noisy, quantised devices) both ranks program the same update with the same
    seeded randomness: their device arrays are bit for bit equal after the epoch, and rank 0
    alone wrote the run folder."""
    from npusim.runtime.parallel import spawn

    cfg = dataclasses.replace(CFG, chip="rram")
    spawn(_train_rank_and_dump, 2, cfg, tmp_path / "run", tmp_path)
    r0 = torch.load(tmp_path / "rank-0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank-1.pt", weights_only=False)
    t0, t1 = _tensors(r0), _tensors(r1)
    assert t0 and len(t0) == len(t1)
    assert all(torch.equal(a, b) for a, b in zip(t0, t1, strict=True))
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1
    pulses = load_checkpoint(tmp_path / "run")["synapses"]
    assert any(float(t.abs().sum()) > 0 for t in _tensors(pulses))


def test_nproc_refuses_a_batch_that_does_not_split(tmp_path, capsys):
    args = ["train", *SMALL, "--batch-size", "15", "--nproc", "2", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "npusim: error: --batch-size 15 does not split evenly over 2 processes; choose a "
        "multiple of 2"
    ]
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL needs CUDA; this machine has none")
def test_nccl_ranks_reduce_on_the_gpu(tmp_path):
    """With CUDA (2 GPUs), the NCCL backend sums the estimates as gloo does."""
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL data-parallel needs 2 GPUs")
    from npusim.runtime.parallel import spawn

    spawn(_reduce_rank, 2, "nccl", tmp_path)
    spawn(_reduce_rank, 2, "gloo", tmp_path)
    assert torch.equal(torch.load(tmp_path / "nccl.pt"), torch.load(tmp_path / "gloo.pt"))


def _reduce_rank(backend: str, dump) -> None:
    from npusim.runtime.parallel import init

    dp = init(backend)
    g = [torch.full((3, 2), float(dp.rank + 1)), torch.arange(4.0) * (dp.rank + 1)]
    out, n = dp.reduce(g, 2, g)
    assert n == 4
    if dp.writer:
        torch.save(torch.cat([t.reshape(-1) for t in out]), dump / f"{backend}.pt")


def load_checkpoint_initial(tmp_path) -> torch.Tensor:
    """The untrained network's first weight matrix (the configuration's seed)."""
    from npusim.runtime.train import Trainer

    return Trainer(TrainConfig(dataset="digits", hidden=[16], epochs=1)).model.params()[0]


def test_workers_exit_when_the_sweep_process_is_killed(tmp_path):
    """`train --seeds` in parallel processes, its parent killed with SIGKILL mid-training: the
    workers do not train on as orphans, they exit within seconds (and each run folder resumes
    when the command runs again)."""
    import signal
    import subprocess
    import time

    cmd = [sys.executable, "-m", "npusim.cli.main", "train", "--dataset", "digits",
           "--hidden", "16", "--epochs", "400", "--seeds", "0,1", "--jobs", "2", "--threads", "1",
           "--out", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started: set[str] = set()
    assert proc.stdout is not None
    for line in proc.stdout:  # both workers are training
        if line.startswith("[seed-") and "epoch" in line:
            started.add(line.split("]")[0])
        if len(started) == 2:
            break
    children_file = f"/proc/{proc.pid}/task/{proc.pid}/children"
    workers = [int(p) for p in open(children_file).read().split()]
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if alive(p)]
    for p in left:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} trained on after their parent was killed"
