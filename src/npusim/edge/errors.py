"""The error of on-device learning."""

from __future__ import annotations

from npusim.core.errors import NpusimError


class EdgeError(NpusimError, ValueError):
    """On-device learning cannot run as asked; the message says what to change."""
