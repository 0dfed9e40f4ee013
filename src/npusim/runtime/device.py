"""``--device cpu|cuda|auto``: the one place that says what each choice means.

Training (:mod:`npusim.runtime.config`, :mod:`npusim.runtime.train`), deployment
(``npusim deploy``) and the language-model commands resolve the option here, so ``auto``
and the error for ``cuda`` on a machine without CUDA read the same everywhere. Random numbers
stay on the CPU everywhere (CPU generators, tensors moved after the draw), so a run on the
CPU is the same bit for bit whichever of ``cpu`` and ``auto`` chose it.
"""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")


def cuda_unavailable() -> str:
    """The message for ``--device cuda`` on a machine where torch sees no GPU."""
    return (
        f"CUDA is not available on this machine (torch {torch.__version__}); use --device "
        "cpu or auto"
    )


def resolve_device(name: str) -> torch.device:
    """The torch device of ``--device``: ``auto`` is ``cuda`` when torch sees a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return (
        torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device(name)
    )


def checked_device(name: str, error: type[Exception]) -> torch.device:
    """:func:`resolve_device`, after refusing ``cuda`` without CUDA (and a name that is not
    one of :data:`DEVICES`) with one ``error`` naming ``--device``."""
    if name not in DEVICES:
        raise error(f"--device {name!r} is invalid: one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise error(f"--device cuda: {cuda_unavailable()}")
    return resolve_device(name)
