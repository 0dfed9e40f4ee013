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
    head = "chip,value,seeds,test_error_mean,test_error_std,test_error_se"
    assert table[0].startswith(head) and len(table) == 3
    for line in table[1:]:  # binomial standard error of the error rate on the test split
        err, sd, se = (float(v) for v in line.split(",")[3:6])
        assert sd == 0.0 and se == pytest.approx((err * (1 - err) / 179) ** 0.5)
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


def test_sweep_over_update_rules_with_seeds_gives_mean_and_sd(tmp_path, capsys):
    """``sweep --param update --values sgd,mixed --chips ideal,rram-gong2018 --seeds 0,1``: one
    row per chip and rule with the mean and s.d. over the seeds' runs (each in its own
    folder), energy per training sample and lifetime; a second launch reuses every run."""
    import statistics

    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--param", "update", "--values", "sgd,mixed", "--seeds", "0,1"]
    args += ["--chips", "ideal,rram-gong2018", "--out", str(out)]
    assert main(args) == 0
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("chip,value,seeds,test_error_mean")
    for chip in ("ideal", "rram-gong2018"):
        for rule in ("sgd", "mixed"):
            errs = []
            for seed in (0, 1):
                res = json.loads((out / chip / f"update={rule}" / f"seed-{seed}" / "results.json")
                                 .read_text())  # fmt: skip
                assert res["config"]["update"] == rule and res["config"]["seed"] == seed
                errs.append(res["test_error"])
            line = next(r for r in rows[1:] if r.startswith(f"{chip},{rule},"))
            mean, sd = (float(v) for v in line.split(",")[3:5])
            assert mean == pytest.approx(statistics.fmean(errs))
            assert sd == pytest.approx(statistics.stdev(errs))
    table = (out / "sweep.md").read_text()
    assert "(s.d., 2 seeds)" in table and " nJ |" in table
    assert (out / "sweep.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(args) == 0  # every run is found complete: nothing trains again
    assert capsys.readouterr().out.count("continuing the run found in") == 8


@pytest.mark.parametrize(
    ("param", "values", "needle"),
    [
        ("chip", "ideal,rram", "use --chips"),
        ("nonsense", "1,2", "neither a chip key"),
        ("update", "sgd,bogus", "update"),
        ("lr", "0.1,abc", "lr"),
    ],
)
def test_sweep_refuses_bad_parameters_in_one_line(tmp_path, capsys, param, values, needle):
    args = ["sweep", *SMALL, "--param", param, "--values", values, "--out", str(tmp_path / "s")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "s").exists()  # refused before anything was written
