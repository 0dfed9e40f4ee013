"""``npusim lm-train``, ``lm-eval`` and ``generate`` on a tiny model and a small text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from npusim.cli.main import main

TINY = ["--layers", "1", "--embd", "32", "--heads", "2", "--block", "32"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("lmcli")
    r = random.Random(1)
    words = "a small dog ran over the green hill to see the old cat".split()
    text = "\n".join(" ".join(r.choice(words) for _ in range(6)) + "." for _ in range(500))
    (root / "t.txt").write_text(text + "\n", encoding="utf-8")
    common = ["--text", str(root / "t.txt"), "--model-dir", str(root / "m"), "--hwa-steps", "3"]
    assert main(["lm-train", *common, *TINY, "--steps", "20", "--hwa", "pcm"]) == 0
    assert (root / "m" / "t.pt").exists() and (root / "m" / "t-hwa-pcm.pt").exists()
    return root, common


def test_lm_eval_writes_json_and_plot(setup: tuple[Path, list[str]], capsys) -> None:
    root, common = setup
    out = root / "ev"
    args = ["lm-eval", *common, "--chip", "pcm", "--after", "1h", "1d", "--repeats", "2"]
    assert main([*args, "--eval-chars", "512", "--out", str(out)]) == 0
    res = json.loads((out / "lm_eval.json").read_text())
    assert res["digital_val_loss"] > 0
    for label in ("1h", "1d"):
        r = res["after"][label]
        assert r["mean"] > 0 and r["std"] >= 0 and len(r["runs"]) == 2
    assert set(res["energy_per_token"]) == {"1", "16", "32"}
    assert (out / "lm_eval.png").stat().st_size > 0
    assert "nats/char" in capsys.readouterr().out
    assert main([*args, "--out", str(out)]) == 2  # the result exists: one error line


def test_generate_streams_text_and_prices_tokens(setup: tuple[Path, list[str]], capsys) -> None:
    _, common = setup
    args = ["generate", *common, "--chip", "pcm", "--prompt", "a small", "--tokens", "40"]
    assert main([*args, "--seed", "2"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "2"]) == 0
    again = capsys.readouterr().out
    text = first.split("\n\n")[0]
    assert text == again.split("\n\n")[0] and len(text) > 40
    assert "tokens/s" in first and "H100" in first and "Samsung" in first and "static" in first
    assert main([*args, "--prompt", "Ω"]) == 2  # a character the model never saw
