"""The chip on the command line: train on a device chip, evaluate after drift, sweep."""

from __future__ import annotations

import argparse
import json

import pytest

from npusim.cli.chip_commands import parse_duration
from npusim.cli.main import main
from npusim.runtime.run import load_checkpoint

SMALL = ["--dataset", "digits", "--hidden", "16", "--epochs", "1", "--no-progress"]


def test_parse_duration():
    assert parse_duration("1h") == 3600.0
    assert parse_duration("30min") == 1800.0
    assert parse_duration("1d") == 86400.0
    assert parse_duration("1y") == pytest.approx(3.15576e7)
    assert parse_duration("10") == 10.0
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("1 fortnight")


def test_train_on_a_chip_then_eval_after_drift(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--chip", "pcm", "--out", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["chip"] == "pcm"
    assert res["pulses"]["pulses_mean"] > 0 and res["pulses"]["pulses_max"] >= 1
    assert main(["eval", str(run), "--after", "0s", "1y"]) == 0
    ev = json.loads((run / "eval.json").read_text())["pcm"]["results"]
    assert [r["after"] for r in ev] == ["0s", "1y"]
    assert main(["eval", str(run), "--chip", "ideal", "--after", "1y"]) == 0
    out = capsys.readouterr().out
    assert "after     1y" in out


def test_bad_chip_is_one_line_error(tmp_path, capsys):
    assert main(["train", *SMALL, "--chip", "rrm", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such preset" in err


def test_sweep_writes_table_and_plot(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--chip", "rram", "--param", "device.n_states", "--values", "8,64"]
    assert main([*args, "--out", str(out)]) == 0
    table = (out / "sweep.csv").read_text().splitlines()
    assert table[0].startswith("value,test_error,test_error_se") and len(table) == 3
    for line in table[1:]:  # binomial standard error of the error rate on the test split
        err, se = (float(v) for v in line.split(",")[1:3])
        assert se == pytest.approx((err * (1 - err) / 179) ** 0.5)
    assert (out / "sweep.png").stat().st_size > 1000
    assert "| device.n_states |" in (out / "sweep.md").read_text()


def test_resume_on_a_device_chip_is_exact(tmp_path):
    import torch

    base = ["train", "--dataset", "digits", "--hidden", "16", "--no-progress", "--chip", "rram"]
    assert main([*base, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main([*base, "--epochs", "2", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a")
    b = load_checkpoint(tmp_path / "b")
    for pa, pb in zip(a["params"], b["params"]):
        assert torch.equal(pa, pb)
    ra = json.loads((tmp_path / "a" / "results.json").read_text())
    rb = json.loads((tmp_path / "b" / "results.json").read_text())
    assert ra["pulses"] == rb["pulses"]
