"""The README's code runs: every ```python block executes (in a temporary folder), and every
dotted ``npusim.…`` name it mentions resolves to a module or an attribute."""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
NAMES = sorted(set(re.findall(r"`(npusim(?:\.[A-Za-z_]\w*)+)", README.read_text("utf-8"))))


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: Path, monkeypatch) -> None:
    code = BLOCKS[index]
    if "ngspice" in code and shutil.which("ngspice") is None:
        pytest.skip("ngspice is not installed (the README block reads its operating point)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("dotted", NAMES)
def test_readme_names_exist(dotted: str) -> None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"README names {dotted}, but {attr!r} does not exist"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"README names {dotted}, which is not importable")
