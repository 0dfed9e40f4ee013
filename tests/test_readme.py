"""The docs' code runs: every ```python block of README.md and docs/*.md executes (in a
temporary folder), and every dotted ``npusim.…`` name they mention resolves to a module or an
attribute."""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
TEXTS = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in DOCS}
BLOCKS = [
    (name, i, code)
    for name, text in TEXTS.items()
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S))
]
NAMES = sorted(
    {n for text in TEXTS.values() for n in re.findall(r"`(npusim(?:\.[A-Za-z_]\w*)+)", text)}
)


def test_readme_has_python_blocks() -> None:
    assert sum(name == "README.md" for name, _, _ in BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{n}:{i + 1}" for n, i, _ in BLOCKS])
def test_docs_python_block_runs(block: tuple[str, int, str], tmp_path: Path, monkeypatch) -> None:
    name, index, code = block
    if "ngspice" in code and shutil.which("ngspice") is None:
        pytest.skip("ngspice is not installed (the block reads its operating point)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{name} python block {index + 1}", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("dotted", NAMES)
def test_readme_names_exist(dotted: str) -> None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"the docs name {dotted}, but {attr!r} does not exist"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"the docs name {dotted}, which is not importable")
