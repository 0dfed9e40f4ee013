"""npusim.edge: a trained chip that keeps learning in the field, one sample at a time, from a
stream whose distribution shifts, within a power budget (``npusim edge``)."""

from npusim.edge.learn import (
    EdgeError,
    ReplayBuffer,
    buffer_capacity_bytes,
    learn_on_edge,
    lifetime_s,
    load_trainer,
    run_stream,
    stream_ledger,
    with_buffer_reads,
)
from npusim.edge.streams import STREAMS, Shift, Stream, StreamError, make_stream

__all__ = [
    "STREAMS",
    "EdgeError",
    "ReplayBuffer",
    "Shift",
    "Stream",
    "StreamError",
    "buffer_capacity_bytes",
    "learn_on_edge",
    "lifetime_s",
    "load_trainer",
    "make_stream",
    "run_stream",
    "stream_ledger",
    "with_buffer_reads",
]
