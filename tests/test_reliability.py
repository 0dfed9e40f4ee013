"""Reliability of the command line and the run folder (issue 9, item 6): each case a user or an
adversary met, fixed, with its test. Small runs: digits, one hidden layer of 16, one epoch."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from npusim.cli.main import main
from npusim.core.errors import NpusimError
from npusim.data import DatasetError, IdxError, load_dataset, read_idx
from npusim.runtime.config import TrainConfig
from npusim.runtime.io import RunLock, atomic_json, digest, read_json
from npusim.runtime.run import (
    CHECKPOINT,
    RESULTS,
    RunError,
    TrainingDiverged,
    check_divergence,
    load_checkpoint,
    read_eval,
    read_results,
    train_run,
)
from npusim.runtime.train import Trainer

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # unconverged relaxations

SMALL = ["--dataset", "digits", "--hidden", "16", "--epochs", "1", "--no-progress"]
SMALL_CFG = dict(dataset="digits", hidden=[16], epochs=1, seed=1)


def quiet(s: str) -> None:
    pass


def one_error_line(capsys, code: int, *words: str) -> str:
    """Assert exit code 2 and a single ``npusim: error:`` line holding ``words``."""
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npusim: error:"), err
    for w in words:
        assert w in err[0], (w, err[0])
    return err[0]


def run_main(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:  # argparse's own errors exit
        return int(e.code)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished run folder (ideal chip), shared read-only by the tests that copy it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---- errors: NpusimError is one line, anything else a traceback ----------------------------------
def test_a_bug_shows_its_traceback(monkeypatch):
    import npusim.cli.main as cli

    def boom(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setitem(cli.COMMANDS, "train", (cli.COMMANDS["train"][0], boom))
    with pytest.raises(ValueError, match="a bug"):
        main(["train"])


def test_os_error_on_a_user_path_names_it(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "run"
    one_error_line(capsys, main(["train", *SMALL, "--out", str(bad)]), str(bad))


# ---- checkpoints ---------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(_Evil.target),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_checkpoint_runs_no_code(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    _Evil.target = str(tmp_path / "pwned")
    torch.save({"config": {}, "x": _Evil()}, run / CHECKPOINT)
    code = main(["train", "--out", str(run), "--resume", "--no-progress"])
    one_error_line(capsys, code, "cannot read checkpoint", str(run / CHECKPOINT))
    assert not (tmp_path / "pwned").exists()
    with open(run / CHECKPOINT, "wb") as f:  # a plain pickle, not even a torch file
        pickle.dump(_Evil(), f)
    one_error_line(capsys, main(["eval", str(run), "--after", "1h"]), "cannot read checkpoint")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "content",
    [
        {"not": "a checkpoint"},
        [1, 2, 3],
        {"format": "npusim-checkpoint", "version": 1, "sha256": "0" * 64, "state": {}},
    ],
)
def test_checkpoint_of_the_wrong_structure_is_one_error_line(tmp_path, capsys, trained, content):
    run = copy_run(trained, tmp_path / "run")
    torch.save(content, run / CHECKPOINT)
    one_error_line(capsys, main(["train", "--out", str(run), "--resume"]), str(run / CHECKPOINT))


def test_checkpoint_with_valid_checksum_but_wrong_structure(tmp_path):
    good = load_checkpoint(_fresh_run(tmp_path / "a"))
    for key, bad in [
        ("epoch", -1),
        ("params", [torch.full((3,), float("nan"))]),
        ("history", [{"epoch": 1}]),
        ("config", {"hidden": "many"}),
        ("optim", {"buffers": "x"}),
        ("ledger", {"sizes": "x"}),
    ]:
        state = {**good, key: bad}
        wrapper = {"format": "npusim-checkpoint", "version": 1, "sha256": digest(state)}
        torch.save({**wrapper, "state": state}, tmp_path / "a" / CHECKPOINT)
        with pytest.raises(RunError, match="checkpoint"):
            load_checkpoint(tmp_path / "a")


def _fresh_run(out: Path, **kw) -> Path:
    train_run(TrainConfig(**{**SMALL_CFG, **kw}), out, progress=False, log=quiet)
    return out


def test_flipped_bytes_in_a_checkpoint_are_detected(tmp_path, capsys):
    run = _fresh_run(tmp_path / "run")
    wrapper = torch.load(run / CHECKPOINT, weights_only=True)
    wrapper["state"]["params"][0].view(-1)[0] = 2e24  # what a flipped exponent bit gives
    torch.save(wrapper, run / CHECKPOINT)
    with pytest.raises(RunError, match="checksum does not match"):
        load_checkpoint(run)
    # the same in the file's bytes: find the first weight's 4 bytes and flip a bit of them
    run2 = _fresh_run(tmp_path / "run2")
    w = torch.load(run2 / CHECKPOINT, weights_only=True)["state"]["params"][0]
    raw = bytearray((run2 / CHECKPOINT).read_bytes())
    at = raw.find(w.contiguous().view(-1)[:4].numpy().tobytes())
    assert at > 0
    raw[at + 3] ^= 0x40
    (run2 / CHECKPOINT).write_bytes(bytes(raw))
    capsys.readouterr()  # what training the runs printed
    code = main(["train", "--out", str(run2), "--resume", "--epochs", "2", "--no-progress"])
    one_error_line(capsys, code, str(run2 / CHECKPOINT))


def test_checkpoint_round_trips_numpy_rng_state(tmp_path):
    run = _fresh_run(tmp_path / "run", chip="rram")
    state = load_checkpoint(run)["synapses"]["rng"]
    assert isinstance(state["state"]["state"], np.ndarray)
    assert state["state"]["state"].dtype == np.uint64


# ---- --resume ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,value,stored",
    [("--hidden", "32", "16"), ("--dataset", "mnist5k", "digits"), ("--chip", "rram", "ideal")],
)
def test_resume_refuses_conflicting_options(trained, tmp_path, capsys, option, value, stored):
    run = copy_run(trained, tmp_path / "run")
    before = (run / CHECKPOINT).read_bytes()
    code = main(["train", "--out", str(run), "--resume", "--no-progress", option, value])
    one_error_line(capsys, code, f"{option} {value} (stored: {stored})")
    assert (run / CHECKPOINT).read_bytes() == before


def test_resume_accepts_the_stored_values_and_defaults(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    args = ["train", "--out", str(run), "--resume", "--no-progress", "--hidden", "16"]
    assert main([*args, "--dataset", "digits", "--epochs", "2"]) == 0
    assert len(read_results(run)["epochs"]) == 2


def test_resume_repairs_results_after_a_kill_before_them(tmp_path):
    run = _fresh_run(tmp_path / "run")
    good = json.loads((run / RESULTS).read_text())
    (run / RESULTS).unlink()  # killed between checkpoint.pt and results.json
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert json.loads((run / RESULTS).read_text())["epochs"] == good["epochs"]


def test_second_run_into_the_same_folder_fails_while_the_first_holds_it(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        one_error_line(capsys, main(["train", *SMALL, "--out", str(out)]), "in use")
        assert not (out / CHECKPOINT).exists()
    (out / ".npusim.lock").write_text("999999999\n")  # a stale lock of a dead process
    assert main(["train", *SMALL, "--out", str(out)]) == 0


def test_two_processes_into_one_folder(tmp_path):
    """A second `npusim train` into a folder another process is training into fails at once
    with one line; the first is unharmed."""
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "npusim.cli.main", "train", *SMALL[:4], "--no-progress"]
    first = subprocess.Popen(
        [*cmd, "--epochs", "50", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        lock = out / ".npusim.lock"
        while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
            time.sleep(0.02)
        second = subprocess.run(
            [*cmd, "--epochs", "1", "--out", str(out)], capture_output=True, text=True
        )
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "in use by another npusim process" in err[0]
        assert str(first.pid) in err[0]
    finally:
        first.kill()
        first.wait()


def test_leftover_temp_files_are_cleaned(tmp_path):
    run = _fresh_run(tmp_path / "run")
    left = run / ".checkpoint.pt.x1y2.tmp"
    left.write_bytes(b"half a checkpoint")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert not left.exists()


def test_empty_out_is_an_error(capsys):
    one_error_line(capsys, run_main(["train", *SMALL, "--out", ""]), "--out")


# ---- sweep ---------------------------------------------------------------------------------
def test_sweep_refuses_runs_made_with_another_configuration(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", *SMALL, "--chip", "rram", "--param", "device.n_states", "--values", "8"]
    assert main([*args, "--out", str(out)]) == 0
    table = (out / "sweep.csv").read_text()
    assert main([*args, "--out", str(out)]) == 0  # same configuration: reused
    assert (out / "sweep.csv").read_text() == table
    other = ["sweep", *SMALL[:2], "--hidden", "8", *SMALL[4:], "--chip", "rram"]
    code = main([*other, "--param", "device.n_states", "--values", "8", "--out", str(out)])
    one_error_line(capsys, code, "another configuration", "--hidden 8 (stored: 16)")
    code = main([*args[:-5], "pcm", *args[-4:], "--out", str(out)])
    one_error_line(capsys, code, "chip.toml differs")
    assert (out / "sweep.csv").read_text() == table


# ---- IDX files and datasets ----------------------------------------------------------------------
def _idx(arr: np.ndarray, code: int = 0x08, dtype=">u1") -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(dtype).tobytes()


def test_corrupt_gzip_stream_is_an_idx_error(tmp_path):
    raw = gzip.compress(_idx(np.zeros((50, 28, 28))))
    bad = raw[:20] + bytes(b ^ 0xFF for b in raw[20:40]) + raw[40:]
    (tmp_path / "x.gz").write_bytes(bad)
    with pytest.raises(IdxError, match="x.gz"):
        read_idx(tmp_path / "x.gz")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 3_000_000, 28, 28)  # 2.35 GB declared
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        f.write(head)
        f.write(bytes(1 << 20))  # more zeros would follow; the reader must not inflate them
    (tmp_path / "bomb.gz").write_bytes(buf.getvalue())
    with pytest.raises(IdxError, match="more than"):
        read_idx(tmp_path / "bomb.gz")


def test_trailing_garbage_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(_idx(np.arange(10)) + b"junk")
    with pytest.raises(IdxError, match="padded"):
        read_idx(tmp_path / "x")


def _folder(tmp_path: Path, images: bytes, labels: bytes) -> Path:
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    return tmp_path


def test_idx_values_and_shapes_are_checked_at_load(tmp_path):
    labels = _idx(np.arange(120) % 10)
    big = _idx(np.full((120, 28, 28), 250_000_000), 0x0C, ">i4")
    with pytest.raises(IdxError, match="pixels outside 0..255"):
        load_dataset("mnist", _folder(tmp_path, big, labels))
    with pytest.raises(IdxError, match=r"shape \(n, 28, 28\)"):
        load_dataset("mnist", _folder(tmp_path, _idx(np.zeros((120, 27, 28))), labels))
    with pytest.raises(IdxError, match="120 images but 119 labels"):
        load_dataset(
            "mnist", _folder(tmp_path, _idx(np.zeros((120, 28, 28))), _idx(np.arange(119) % 10))
        )
    bad_labels = _idx(np.arange(120) % 11)
    with pytest.raises(IdxError, match="labels must be integers in 0..9"):
        load_dataset("mnist", _folder(tmp_path, _idx(np.zeros((120, 28, 28))), bad_labels))


def test_an_empty_validation_split_is_refused(tmp_path):
    few = _folder(tmp_path, _idx(np.zeros((20, 28, 28))), _idx(np.arange(20) % 10))
    with pytest.raises(DatasetError, match="val split is empty"):
        load_dataset("mnist", few)


# ---- report, eval, JSON ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "ledger",
    [
        "nonsense",
        {"sizes": [64, 16, 10], "layers": {"free": {"macs": ["x", 1]}}},
        {"sizes": [64, 16, 10], "phases": {"free": {"samples": -5}}},
        {"sizes": [64, 16, 10], "phases": {"warp": {"samples": 5}}},
        {"sizes": [64, 16, 10], "layers": {"free": {"macs": [1, 2, 3]}}},
        {"word_bytes": True},
        {"colour": 1},
        {},
    ],
)
def test_report_on_a_malformed_ledger_is_one_error_line(tmp_path, capsys, trained, ledger):
    run = copy_run(trained, tmp_path / "run")
    res = json.loads((run / RESULTS).read_text())
    res["ledger"] = ledger
    (run / RESULTS).write_text(json.dumps(res))
    one_error_line(capsys, main(["report", str(run), "--no-files"]), str(run / RESULTS))


@pytest.mark.parametrize("ratio", ["inf", "nan", "0", "-3"])
def test_report_refuses_a_non_finite_target_ratio(trained, capsys, ratio):
    code = main(["report", str(trained), "--no-files", "--target-ratio", ratio])
    one_error_line(capsys, code, "--target-ratio")


def test_report_names_a_corrupt_results_file(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / RESULTS).write_text('{"ledger": NaN')
    one_error_line(capsys, main(["report", str(run)]), str(run / RESULTS), "not valid JSON")


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"ideal": {"results": 3}}'])
def test_eval_refuses_a_malformed_eval_json(tmp_path, capsys, trained, content):
    run = copy_run(trained, tmp_path / "run")
    (run / "eval.json").write_text(content)
    one_error_line(capsys, main(["eval", str(run), "--after", "1h"]), str(run / "eval.json"))
    assert (run / "eval.json").read_text() == content


@pytest.mark.parametrize("args", [["--after", "1e999y"], ["--after", "inf"], ["--seed", "-1"]])
def test_eval_refuses_non_finite_times_and_negative_seeds(trained, capsys, args):
    one_error_line(capsys, run_main(["eval", str(trained), *args]))


def test_eval_writes_a_table_read_eval_accepts(tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    assert main(["eval", str(run), "--after", "0s", "1y"]) == 0
    assert [r["after"] for r in read_eval(run)["ideal"]["results"]] == ["0s", "1y"]


def test_json_files_are_strict(tmp_path):
    atomic_json({"a": float("nan"), "b": [float("inf"), 1.0]}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda c: 1 / 0) == {
        "a": "nan",
        "b": ["inf", 1.0],
    }
    (tmp_path / "y.json").write_text('{"a": Infinity}')
    with pytest.raises(RunError, match="y.json"):
        read_json(tmp_path / "y.json")


@pytest.mark.parametrize(
    "args,word",
    [
        (["--model", "drn", "--input-gain", "1e12"], "--input-gain"),
        (["--model", "drn", "--input-gain", "1e-300"], "--input-gain"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "-1", "--chip", "rram"], "--seed"),
        (["--lr", "nan"], "--lr"),
        (["--hidden", "32", "--lr", "0.1,0.2,0.3"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--threads", "0"], "--threads"),
        (["--hidden", "65536,65536"], "weights in all"),
        (["--data-dir", ""], "--data-dir"),
    ],
)
def test_out_of_range_options_are_one_error_line(tmp_path, capsys, args, word):
    code = run_main(["train", *SMALL, *args, "--out", str(tmp_path / "r")])
    one_error_line(capsys, code, word)
    assert not (tmp_path / "r" / RESULTS).exists()


# ---- divergence --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["dhn", "drn"])
def test_a_diverging_run_stops_with_one_error_line(tmp_path, capsys, model):
    out = tmp_path / "r"
    code = main(["train", *SMALL, "--model", model, "--lr", "1e3", "--out", str(out)])
    one_error_line(capsys, code, "diverged", "--lr")
    assert not out.exists()  # nothing was kept, so no empty folder is left behind


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = _fresh_run(tmp_path / "run")
    good = (run / CHECKPOINT).read_bytes()
    real = Trainer.run_epoch

    def explode(self, on_batch=None):
        rec = real(self, on_batch)
        for p in self.model.params():
            p.mul_(1e7)
        return rec

    monkeypatch.setattr(Trainer, "run_epoch", explode)
    with pytest.raises(TrainingDiverged, match="ran away"):
        train_run(None, run, resume=True, epochs=2, progress=False, log=quiet)
    assert (run / CHECKPOINT).read_bytes() == good
    assert len(read_results(run)["epochs"]) == 1


def test_divergence_check_on_weights():
    tr = Trainer(TrainConfig(**SMALL_CFG))
    rec = tr.run_epoch()
    w0 = max(float(p.abs().max()) for p in tr.model.params())
    check_divergence(tr, rec, w0)  # a healthy epoch passes
    tr.model.params()[0][0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="NaN"):
        check_divergence(tr, rec, w0)


def test_collapse_to_chance_counts_the_classes_a_run_trains_on():
    """On a two-class subset chance is 50% error, not 90%: grown weights at 49% train error
    are a collapse there, and the same error on all ten classes is not chance."""
    import dataclasses

    tr = Trainer(TrainConfig(**SMALL_CFG, classes=[0, 1]))
    w0 = max(float(p.abs().max()) for p in tr.model.params())
    rec = dataclasses.replace(tr.run_epoch(), train_error=0.49)
    grow = 20.0 * w0 / max(float(q.abs().max()) for q in tr.model.params())
    with torch.no_grad():
        for p in tr.model.params():
            p.mul_(grow)  # the largest weight now 20x its initial: grown, far from a runaway
    with pytest.raises(TrainingDiverged, match=r"is chance \(50%\)"):
        check_divergence(tr, rec, w0)
    tr.cfg = dataclasses.replace(tr.cfg, classes=None)
    check_divergence(tr, rec, w0)  # 49% on ten classes is learning, not chance


# ---- chip files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content,word",
    [
        (b"", "no [device] table"),
        (b'name = "x"\n[array]\nrows = 64\n', "no [device] table"),
        (b"\x80\x81\xfe\xff\x00binary", "not a UTF-8"),
    ],
)
def test_chip_files_that_define_nothing_or_are_binary(tmp_path, capsys, content, word):
    chip = tmp_path / "chip.toml"
    chip.write_bytes(content)
    code = main(["train", *SMALL, "--chip", str(chip), "--out", str(tmp_path / "r")])
    one_error_line(capsys, code, word, str(chip))


# ---- results.json: unconverged relaxations ---------------------------------------------------
def test_results_count_unconverged_relaxations(trained):
    res = read_results(trained)
    assert res["relaxations"] == sum(e["relaxations"] for e in res["epochs"]) > 0
    assert res["unconverged_relaxations"] == sum(e["unconverged"] for e in res["epochs"])


def test_every_error_class_is_an_npusim_error():
    from npusim.chip import ChipSpecError
    from npusim.circuits import RelaxationDiverged
    from npusim.cli.options import CliError
    from npusim.runtime.config import ConfigError

    for cls in (ConfigError, RunError, ChipSpecError, CliError, IdxError, DatasetError):
        assert issubclass(cls, NpusimError)
    assert issubclass(RelaxationDiverged, NpusimError) and issubclass(TrainingDiverged, RunError)


@pytest.mark.parametrize("rule", ["mixed", "ttv2", "agad"])
def test_saved_update_rule_states_are_checked_to_their_device_arrays(rule):
    from npusim.chip import load_chip
    from npusim.devices import make_synapses
    from npusim.runtime.run_files import _check_synapses

    params = [torch.randn(6, 4) * 0.1, torch.zeros(4)]
    syn = make_synapses(load_chip("rram-gong2018"), params, [True, True], seed=0, update=rule)
    syn.apply(params, [torch.randn(6, 4) * 0.01, torch.zeros(4)])
    state = syn.state_dict()
    assert _check_synapses(state)
    inner = state["devices"] if rule == "mixed" else state["slow"]
    inner["scale"][0] = float("nan")  # a damaged device array inside the rule's state
    assert not _check_synapses(state)
    assert not _check_synapses({**syn.state_dict(), "kind": "unknown"})
