"""The default thread count: no more than the free cores, explicit counts win, and the busy
neighbour the benchmark measures beside starts and is always stopped."""

from __future__ import annotations

import os

import pytest
import torch

from npusim.runtime import threads as th


@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _stat(ticks_per_cpu: list[list[int]]) -> str:
    lines = ["cpu " + " ".join(map(str, [sum(c) for c in zip(*ticks_per_cpu, strict=True)]))]
    lines += [f"cpu{i} " + " ".join(map(str, t)) + " 0 0" for i, t in enumerate(ticks_per_cpu)]
    return "\n".join(lines + ["intr 0", "ctxt 0"]) + "\n"


def test_default_within_the_affinity_and_at_least_one():
    cores = len(os.sched_getaffinity(0))
    assert 1 <= th.default_threads() <= cores
    assert 0 <= th.free_cores(sample_s=0.02) <= cores
    assert th.default_threads(free=0.0) == 1
    assert th.default_threads(free=1000.0) == th.affinity_cores() <= cores
    assert th.default_threads(free=1.9) == min(2, th.affinity_cores())  # sampling noise
    assert th.default_threads(free=1.5) == 1
    assert th.default_threads(work_flops_per_op=1.0, free=1000.0) == 1  # too small to share


def test_a_simulated_load_lowers_the_default(monkeypatch, tmp_path):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(th, "_cgroup_cpus", lambda: None)
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal; each sample 10 ticks per core later
    before = [[100, 0, 0, 900, 0, 0, 0, 0], [100, 0, 0, 900, 0, 0, 0, 0]]
    idle_after = [[100, 0, 0, 910, 0, 0, 0, 0], [100, 0, 0, 910, 0, 0, 0, 0]]
    busy_after = [[110, 0, 0, 900, 0, 0, 0, 0], [100, 0, 0, 910, 0, 0, 0, 0]]  # core 0 busy
    for after, free, default in ((idle_after, 2.0, 2), (busy_after, 1.0, 1)):
        texts = iter([_stat(before), _stat(after)])
        monkeypatch.setattr(th, "_read", lambda path, texts=texts: next(texts))
        monkeypatch.setattr(th, "_own_cpu_s", lambda: 0.0)  # this process did no work
        assert th.free_cores(sample_s=0.0, stat=stat) == pytest.approx(free)
        texts = iter([_stat(before), _stat(after)])
        monkeypatch.setattr(th, "_read", lambda path, texts=texts: next(texts))
        assert th.default_threads() == default


def test_without_proc_stat_the_load_average_counts(monkeypatch, tmp_path):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(th, "_cgroup_cpus", lambda: None)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (2.5, 0.0, 0.0))
    assert th.free_cores(stat=tmp_path / "missing") == pytest.approx(1.5)


def test_a_cgroup_quota_caps_the_cores(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert th._cgroup_cpus(f) == 1.5
    f.write_text("max 100000\n")
    assert th._cgroup_cpus(f) is None
    assert th._cgroup_cpus(tmp_path / "missing") is None


def test_an_explicit_count_wins(monkeypatch, keep_torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "free_cores", lambda *a, **k: 0.0)
    assert th.apply_default_threads(3) == 3 and torch.get_num_threads() == 3
    assert th.apply_default_threads(None) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's environment is a choice too
    torch.set_num_threads(2)
    assert th.apply_default_threads(None) == 2 and torch.get_num_threads() == 2


def test_set_threads_of_the_cli(monkeypatch, keep_torch_threads):
    from npusim.cli.options import set_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "free_cores", lambda *a, **k: 0.0)
    set_threads(None)
    assert torch.get_num_threads() == 1
    set_threads(2)
    assert torch.get_num_threads() == 2


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_busy_neighbour_starts_pinned_and_is_killed():
    with th.busy_neighbour() as proc:
        pid = proc.pid
        assert proc.poll() is None and _alive(pid)
        assert os.sched_getaffinity(pid) == {min(os.sched_getaffinity(0))}
    assert proc.returncode is not None and not _alive(pid)


def test_busy_neighbour_is_killed_when_the_block_raises():
    with pytest.raises(KeyboardInterrupt), th.busy_neighbour() as proc:
        raise KeyboardInterrupt
    assert proc.returncode is not None and not _alive(proc.pid)


def test_programming_a_device_chip_keeps_torchs_thread_count():
    """numba's OpenMP pool, started by the first device-programming kernel, shares torch's
    runtime and would reset torch's count to the pool size: a 1-thread run (the default beside
    a busy neighbour) would silently go on with 2. In a fresh process, the count stays 1."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from npusim.chip import load_chip\n"
        "from npusim.circuits import make_network\n"
        "from npusim.devices import make_synapses\n"
        "net = make_network('dhn', [20, 16, 4], seed=0)\n"
        "syn = make_synapses(load_chip('rram'), net.params(), net.signed, seed=0)\n"
        "syn.apply(net.params(), [torch.full_like(p, 0.01) for p in net.params()])\n"
        "syn.refresh()\n"
        "print(torch.get_num_threads(), syn.total_pulses > 0)\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout.split()  # fmt: skip
    assert out == ["1", "True"]
