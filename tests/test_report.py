"""Report files are written and parse; tables render; the claims check is included."""

import io
import json

import pytest
from rich.console import Console

from npusim.report import build_report, load_run_ledger, print_report, write_report
from npusim.runtime.ledger import Ledger


def dhn_ledger() -> Ledger:
    led = Ledger(logical_sizes=[784, 1024, 10])
    sizes = [784, 1024, 10]
    for _ in range(10):
        led.relax("free", sizes, 32, 20)
        led.relax("nudged+", sizes, 32, 4)
        led.relax("nudged-", sizes, 32, 4)
        led.update(sizes, 32, 0)
    return led


def test_report_files_written_and_parse(tmp_path):
    rep = build_report(dhn_ledger(), target_ratio=10000)
    paths = write_report(rep, tmp_path)
    data = json.loads(paths["json"].read_text())
    npu = data["systems"]["NPU EqProp"]
    assert npu["train"]["energy_j"] > 0 and npu["inference"]["energy_j"] > 0
    assert set(npu["train"]["breakdown_j"]) >= {"array", "adc", "programming", "digital"}
    assert data["claims"]["target_ratio"] == 10000
    assert all(v["source"] for v in data["constants"].values())
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gpu = data["systems"][data["reference_gpu"]]
    assert gpu["ratio_vs_npu"]["train"] == gpu["train"]["energy_j"] / npu["train"]["energy_j"]


def test_tables_render():
    buf = io.StringIO()
    print_report(build_report(dhn_ledger(), target_ratio=100), Console(file=buf, width=160))
    text = buf.getvalue()
    for word in ("NPU EqProp", "H100", "Samsung", "Claims check", "programming"):
        assert word in text


def test_load_run_ledger(tmp_path):
    led = dhn_ledger()
    (tmp_path / "results.json").write_text(json.dumps({"ledger": led.to_dict(), "acc": 0.9}))
    loaded, results = load_run_ledger(tmp_path)
    assert loaded.to_dict() == led.to_dict() and results["acc"] == 0.9


def test_report_command_on_a_run_folder(tmp_path):
    import argparse

    from npusim.cli.report_command import add_report_args, run_report

    led = dhn_ledger()
    config = {"chip": "rram"}
    (tmp_path / "results.json").write_text(json.dumps({"ledger": led.to_dict(), "config": config}))
    p = argparse.ArgumentParser()
    add_report_args(p)
    assert run_report(p.parse_args([str(tmp_path), "--target-ratio", "10000"])) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["chip"] == "rram" and data["claims"]["target_ratio"] == 10000
    assert data["chip_spec"] == "rram"
    assert data["constants"]["energy.program_pulse"]["source"].startswith("chip 'rram'")
    assert (tmp_path / "energy_breakdown.png").exists()


def test_a_run_priced_with_no_chip_uses_the_ideal_preset():
    from npusim.chip import load_chip
    from npusim.cost import per_sample

    led = dhn_ledger()
    rep = build_report(led)
    assert rep["chip_spec"] == "ideal"
    ideal = per_sample(led, load_chip("ideal"))["train"]["energy_j"]
    assert rep["systems"]["NPU EqProp"]["train"]["breakdown_j"] == ideal
    assert rep["network"]["arrays"] == {"in_use": 7 * 8 + 8, "on_chip": 1024}
    pcm = build_report(led, "pcm")["systems"]["NPU EqProp"]["train"]["energy_j"]
    assert pcm != rep["systems"]["NPU EqProp"]["train"]["energy_j"]


def test_a_damaged_run_folder_is_one_error_naming_the_file(tmp_path):
    from npusim.core.errors import NpusimError
    from npusim.report.report import ReportError

    path = tmp_path / "results.json"
    for text, words in [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "no 'ledger' entry"),
        ('{"ledger": {"sizes": "x"}}', "ledger sizes"),
        ('{"ledger": {}}', "counted nothing"),
    ]:
        if text is not None:
            path.write_text(text)
        with pytest.raises(ReportError, match=words) as info:
            load_run_ledger(tmp_path)
        assert isinstance(info.value, NpusimError) and str(path) in str(info.value)


def test_claims_refuse_a_target_ratio_out_of_range():
    from npusim.cost import claims_check
    from npusim.cost.constants import CostError

    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(CostError, match="finite number > 0"):
            claims_check({"array": 1.0}, {"macs": 1.0}, 10.0, bad)


def test_the_report_lists_the_arrays_of_a_conv_network():
    from npusim.core.interfaces import ArrayShape
    from npusim.cost.baselines import GPUS

    arr = [
        ArrayShape(25, 8, 576, 784, 4608, False, 0),
        ArrayShape(200, 16, 64, 1152, 1024, False, 1, ff_ops_in=4608),
        ArrayShape(1024, 10, 1, 1024, 10, True, 1),
    ]
    led = Ledger(logical_sizes=[784, 10])
    for blk in (0, 1):
        for phase in ("free", "nudged+", "nudged-"):
            led.relax(phase, arr, 8, 5, block=blk)
    led.update(arr, 8, 0)
    rep = build_report(led, target_compute=10)
    net = rep["network"]
    assert net["array_shapes"] == ["25×8×576", "200×16×64", "1024×10×1"]
    assert net["arrays"]["in_use"] == 1 + 2 + 8 and net["physical_sizes"] == led.sizes
    h100 = GPUS["h100"]
    gpu = rep["systems"][rep["reference_gpu"]]["train"]["energy_j"]
    assert gpu == pytest.approx(sum(h100.cost(arr, 8)["train"]["energy_j"].values()))
