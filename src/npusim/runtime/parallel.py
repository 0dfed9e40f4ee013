"""Data-parallel training with torch.distributed: each rank relaxes its shard of every batch,
the ranks' gradient estimates are summed once per step (each weighted by its shard's share of
the batch), and every rank applies the same update to its own copy of the network and devices
(programmed from the same seed, so the copies stay equal). Rank 0 alone writes the run folder
and counts the work in its ledger, for the whole batch.

Ranks come from torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set) or
from :func:`spawn`, which starts them on this machine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from npusim.core.errors import NpusimError
from npusim.core.outer import OuterProduct, dense

TIMEOUT = timedelta(minutes=30)  # a collective that waits longer than this fails


class ParallelError(NpusimError):
    """Data-parallel training that cannot run as asked."""


class DataParallel:
    """This process's rank among ``world`` ranks of an initialised process group."""

    def __init__(self) -> None:
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.device = torch.device("cuda") if dist.get_backend() == "nccl" else None

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run folder (rank 0)."""
        return self.rank == 0

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's contiguous part of a batch (sizes differ by at most one; a batch smaller
        than the ranks leaves some ranks none)."""
        return x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]

    def reduce(self, grads: list[Tensor | OuterProduct] | None, n: int, like: list[Tensor]):
        """(the batch's estimate, the batch's size): the ranks' batch-averaged estimates
        weighted by their shards' sizes ``n`` and summed, one all-reduce per step. ``grads``
        None: this rank's shard was empty (``like``: the parameters, for the shapes)."""
        sizes = self._to(torch.tensor([n], dtype=torch.int64))
        dist.all_reduce(sizes)  # the batch's size (the last one may be short)
        total = int(sizes.item())
        if grads is None:
            flat = torch.zeros(sum(p.numel() for p in like), dtype=like[0].dtype)
            shapes = [p.shape for p in like]
        else:
            parts = [dense(g) for g in grads]
            shapes = [g.shape for g in parts]
            flat = torch.cat([g.reshape(-1) for g in parts]) * (n / total)
        flat = self._to(flat)
        dist.all_reduce(flat)
        flat = self._from(flat)
        out, i = [], 0
        for shape in shapes:
            k = shape.numel()
            out.append(flat[i : i + k].view(shape))
            i += k
        return out, total

    def total(self, value: int) -> int:
        """``value`` summed over the ranks."""
        t = self._to(torch.tensor([value], dtype=torch.int64))
        dist.all_reduce(t)
        return int(self._from(t).item())

    def same_on_all(self, tensors: list[Tensor]) -> bool:
        """Whether ``tensors`` are bit for bit equal on every rank (rank 0's broadcast compared)."""
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        ref = self._to(flat.clone())
        dist.broadcast(ref, 0)
        same = self._to(torch.tensor([int(torch.equal(self._from(ref), flat))]))
        dist.all_reduce(same, op=dist.ReduceOp.MIN)
        return bool(same.item())

    def _to(self, t: Tensor) -> Tensor:
        return t if self.device is None else t.to(self.device)

    def _from(self, t: Tensor) -> Tensor:
        return t if self.device is None else t.cpu()


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun launch."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(backend: str | None = None) -> DataParallel:
    """Join the process group the environment describes (gloo on CPU; NCCL with ``backend``
    "nccl" when CUDA is there)."""
    if backend == "nccl" and not torch.cuda.is_available():
        raise ParallelError("the nccl backend needs CUDA; use gloo on CPU")
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend or "gloo", timeout=TIMEOUT)
    return DataParallel()


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` new processes on this machine, as ranks 0..nproc−1 of
    one process group (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set for
    :func:`init`); returns when all have ended. A rank that fails ends the others; its
    :class:`NpusimError` is raised here as a :class:`ParallelError` with its message."""
    import torch.multiprocessing as mp

    port = free_port()
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    try:
        mp.spawn(_rank_main, (nproc, port, fn, args, errors), nprocs=nproc, join=True)
    except mp.ProcessExitedException:  # a rank failed: its message, else a crash
        if not errors.empty():
            raise ParallelError(errors.get()) from None
        raise


def _rank_main(rank: int, nproc: int, port: int, fn: Callable[..., Any], args: tuple, errors):
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    try:
        fn(*args)
    except NpusimError as e:
        errors.put(" ".join(str(e).split()))
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
