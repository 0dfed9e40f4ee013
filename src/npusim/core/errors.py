"""The one base class of every error a user can cause and fix (bad option, bad file, bad chip).

The CLI turns an :class:`NpusimError` into one ``npusim: error: …`` line and exit code 2; any
other exception is a bug and shows its traceback.
"""

from __future__ import annotations


class NpusimError(Exception):
    """A user-facing error: its message says what is wrong and what to do."""
