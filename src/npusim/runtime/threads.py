"""How many torch threads to use by default: no more than the cores other processes leave free.

torch's intra-op pool and the device kernel's numba pool are OpenMP (libgomp) teams whose
threads meet at a barrier after every operation. A thread that shares its core with another
busy process gets the core half the time, and the others spin at the barrier waiting for it:
with a busy-loop process pinned to one of two cores, 2 threads trained DHN-1H at 193 samples/s
against 5,900 with 1 thread (DRN-1H: 68 against 1,778). So the default is counted from the
cores actually free, sampled from ``/proc/stat`` when the run starts (:func:`free_cores`), and
is 1 when the work's operations are too small to gain from a second thread
(:func:`default_threads`). An explicit ``--threads`` always wins (:func:`apply_default_threads`).

:func:`busy_neighbour` starts the busy-loop process the benchmark measures beside.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLE_S = 0.1  # how long free_cores watches /proc/stat (10 ticks per core at USER_HZ = 100)
ROUND_UP = 0.15  # free cores within this of the next whole core count as it (sampling noise)
# An operation smaller than this per thread does not gain from it. Best-of timings of a float32
# matrix product with 2 threads against 1 (2-core machine, load average 4.5): 0.03 MFLOP 0.48x,
# 1.6 MFLOP 1.1x, 4.8 MFLOP 1.25x, 38.5 MFLOP 1.7x, 77 MFLOP 1.8x, 411 MFLOP 2.7x.
MIN_FLOPS_PER_THREAD = 2e6


def affinity_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count), capped
    by a cgroup v2 CPU quota where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def _cgroup_cpus(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """CPUs allowed by a cgroup v2 quota (``"200000 100000"`` -> 2.0), or None: no quota."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _read(path: Path) -> str:
    return path.read_text()


def _own_cpu_s() -> float:
    """CPU seconds this process (all its threads) has used."""
    return time.process_time()


def _cpu_times(cpus: set[int], stat: Path) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` summed from ``/proc/stat``, or None if unreadable.
    Busy: everything but idle and iowait (steal counts as busy: the core is not ours)."""
    try:
        lines = _read(stat).splitlines()
    except OSError:
        return None
    busy = total = 0
    seen = False
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - ticks[4]
        total += sum(ticks)
        seen = True
    return (busy, total) if seen else None


def free_cores(sample_s: float = SAMPLE_S, stat: Path = Path("/proc/stat")) -> float:
    """Cores of this process's affinity that other processes left idle over the last
    ``sample_s`` seconds: the cores minus their busy time in ``/proc/stat`` (sampled twice)
    minus this process's own CPU time in between. Without ``/proc/stat``, the cores minus the
    1-minute load average; without that, the cores."""
    cores = affinity_cores()
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    first = _cpu_times(cpus, stat)
    if first is None:
        try:
            return max(0.0, cores - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(cores)
    own0, wall0 = _own_cpu_s(), time.perf_counter()
    time.sleep(sample_s)
    second = _cpu_times(cpus, stat)
    own, wall = _own_cpu_s() - own0, time.perf_counter() - wall0
    if second is None or second[1] <= first[1]:
        return float(cores)
    busy, total = second[0] - first[0], second[1] - first[1]
    used = busy / (total / len(cpus))  # cores' worth of work over the sample
    others = used - (own / wall if wall > 0 else 0.0)
    return min(float(cores), max(0.0, cores - others))


def default_threads(work_flops_per_op: float | None = None, free: float | None = None) -> int:
    """The torch thread count to use when the user gives none: the free cores rounded down
    (within :data:`ROUND_UP` of a whole core counts as it), at least 1, and no more threads
    than give each at least :data:`MIN_FLOPS_PER_THREAD` of a typical operation's
    ``work_flops_per_op`` (None: not limited by the work). ``free``: the free cores if already
    known (default: :func:`free_cores`)."""
    if free is None:
        free = free_cores()
    n = min(affinity_cores(), math.floor(free + ROUND_UP))
    if work_flops_per_op is not None:
        n = min(n, math.floor(work_flops_per_op / MIN_FLOPS_PER_THREAD))
    return max(1, n)


def apply_default_threads(threads: int | None, work_flops_per_op: float | None = None) -> int:
    """Set torch's thread count (and so the device kernel's, which follows it) and return it:
    ``threads`` if given, else torch's own count if the user set ``OMP_NUM_THREADS``, else
    :func:`default_threads`."""
    import torch

    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        threads = default_threads(work_flops_per_op)
    torch.set_num_threads(threads)
    return threads


_BUSY_LOOP = """\
import os, sys
os.sched_setaffinity(0, {{{core}}})
parent = os.getppid()
print("ready", flush=True)
i = 0
while True:
    i += 1
    if i & 0xFFFFF == 0 and os.getppid() != parent:
        break  # the parent is gone: do not outlive it
"""


@contextmanager
def busy_neighbour(core: int | None = None) -> Iterator[subprocess.Popen]:
    """A busy-loop process pinned to ``core`` (default: the first core of this process's
    affinity) for the ``with`` block; it is killed on leaving, however the block ends, and
    stops by itself if this process dies first."""
    if core is None:
        core = min(os.sched_getaffinity(0))
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _BUSY_LOOP.format(core=int(core))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"busy-loop process did not start (exit code {proc.poll()})")
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
