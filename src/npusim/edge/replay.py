"""The replay buffer: stored samples of the run's own training data in the chip's on-chip
buffer, replayed after each stream sample, and what they change in the ledger."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from npusim.chip import ChipSpec
from npusim.core.phases import Phase
from npusim.edge.errors import EdgeError
from npusim.runtime.ledger import Ledger

# On-chip buffer that holds a replay buffer: ISAAC's tile has a 64 KB eDRAM buffer shared by its
# 12 IMAs of 8 crossbars (96 arrays) (Shafiee et al., ISAAC, ISCA 2016, Table 6); a chip of
# `array.tiles` arrays has one such buffer per 96 arrays.
TILE_BUFFER_BYTES = 64 * 1024  # B
ARRAYS_PER_BUFFER = 96
LABEL_BYTES = 1  # a stored sample's label (one byte: up to 256 classes)


def buffer_capacity_bytes(spec: ChipSpec) -> int:
    """On-chip buffer (B) of ``spec``: 64 KiB per 96 arrays (ISAAC's tile), rounded up."""
    return math.ceil(spec.array.tiles / ARRAYS_PER_BUFFER) * TILE_BUFFER_BYTES


def check_buffer_fits(buffer: ReplayBuffer, spec: ChipSpec) -> None:
    """Refuse a replay buffer larger than the chip's on-chip buffer."""
    cap = buffer_capacity_bytes(spec)
    if buffer.bytes > cap:
        raise EdgeError(
            f"--replay {len(buffer)}: the buffer needs {buffer.bytes} B of SRAM, the chip has "
            f"{cap} B (64 KiB per 96 arrays); at most {cap // buffer.sample_bytes} samples"
        )


@dataclass
class ReplayBuffer:
    """``x``, ``y``: stored samples of the run's own training data, replayed in turn (one after
    each stream sample). Each is stored as one ``word_bytes`` code per input (its DAC code)
    and a label byte."""

    x: Tensor
    y: Tensor
    word_bytes: int = 1
    next_index: int = 0

    @classmethod
    def draw(cls, pool_x: Tensor, pool_y: Tensor, k: int, seed: int, word_bytes: int = 1):
        """``k`` samples drawn without replacement from the pool, seeded."""
        if not 0 < k <= len(pool_x):
            raise EdgeError(
                f"--replay {k}: the buffer holds 1 to {len(pool_x)} samples (the run's "
                "training samples)"
            )
        g = torch.Generator().manual_seed(seed * 1_000_003 + 13)
        idx = torch.randperm(len(pool_x), generator=g)[:k]
        return cls(pool_x[idx], pool_y[idx], word_bytes)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sample_bytes(self) -> int:
        """Bytes of one stored sample (B)."""
        return (self.x.shape[1] + LABEL_BYTES) * self.word_bytes

    @property
    def bytes(self) -> int:
        """SRAM the buffer needs (B)."""
        return len(self) * self.sample_bytes

    def next(self) -> tuple[Tensor, Tensor]:
        """The next stored sample, as a batch of 1."""
        i = self.next_index
        self.next_index = (i + 1) % len(self)
        return self.x[i : i + 1], self.y[i : i + 1]


def with_buffer_reads(ledger: Ledger, replays: int, buffer: ReplayBuffer | None) -> Ledger:
    """A copy of ``ledger`` in which the ``replays`` replayed samples were read from the on-chip
    buffer: the ledger counted each sample's input as an off-chip fetch (``bytes_mem`` of the
    free phase); for a replayed sample that fetch is an SRAM read of its stored bytes instead
    (``bytes_tile``, label included)."""
    out = Ledger.from_dict(ledger.to_dict())
    if buffer is None or replays == 0:
        return out
    moved = replays * buffer.x.shape[1] * ledger.word_bytes
    lay = out.layers[Phase.FREE]
    if lay["bytes_mem"][0] < moved:
        raise ValueError("the ledger counted fewer input fetches than replays")
    lay["bytes_mem"][0] -= moved
    lay["bytes_tile"][0] += replays * buffer.sample_bytes
    return out
