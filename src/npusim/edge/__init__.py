"""npusim.edge: a trained chip that keeps learning in the field, one sample at a time, from a
stream whose distribution shifts, within a power budget (``npusim edge``)."""

from npusim.edge.errors import EdgeError
from npusim.edge.learn import learn_on_edge, load_trainer, run_stream, stream_ledger
from npusim.edge.replay import ReplayBuffer, buffer_capacity_bytes, with_buffer_reads
from npusim.edge.streams import STREAMS, Shift, Stream, StreamError, make_stream
from npusim.edge.wear import lifetime_s

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
