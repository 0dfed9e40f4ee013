"""The data package's user error (its own module so every reader can raise it)."""

from __future__ import annotations

from npusim.core.errors import NpusimError


class DatasetError(NpusimError, ValueError):
    """A dataset is unknown, missing or malformed."""
