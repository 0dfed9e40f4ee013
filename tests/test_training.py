"""Training runs end to end: accuracy reached, exact resume, files, CLI errors."""

import json
import subprocess
import sys

import pytest
import torch

from npusim.cli.main import main
from npusim.runtime.config import ConfigError, TrainConfig
from npusim.runtime.run import train_run
from npusim.runtime.train import Trainer

SMALL = dict(dataset="digits", hidden=[32], epochs=3, seed=3)


def test_dhn_eqprop_learns_digits():
    tr = Trainer(TrainConfig(dataset="digits", hidden=[64], epochs=4, lrs=[0.2, 0.1]))
    for _ in range(4):
        rec = tr.run_epoch()
    assert rec.test_error < 0.10 and rec.train_error < 0.10


@pytest.mark.parametrize("algorithm", ["backprop", "contrastive"])
def test_baselines_learn_digits(algorithm):
    tr = Trainer(TrainConfig(dataset="digits", hidden=[64], algorithm=algorithm, lrs=[0.2, 0.1]))
    for _ in range(3):
        rec = tr.run_epoch()
    # backprop through the clipped output gets no signal from saturated units, so it learns
    # more slowly than EqProp here; it still must beat chance (90%) by far
    assert rec.test_error < (0.35 if algorithm == "backprop" else 0.10)


def test_drn_eqprop_learns_digits():
    cfg = TrainConfig(
        dataset="digits", model="drn", hidden=[64], input_gain=100.0, lrs=[0.01, 0.01]
    )
    tr = Trainer(cfg)
    for _ in range(3):
        rec = tr.run_epoch()
    assert rec.test_error < 0.15
    assert all((w >= 0).all() for w in tr.model.weights)


def test_resume_continues_exactly(tmp_path):
    full = train_run(TrainConfig(**SMALL), tmp_path / "full", progress=False, log=lambda s: None)
    part = TrainConfig(**{**SMALL, "epochs": 1})
    train_run(part, tmp_path / "part", progress=False, log=lambda s: None)
    resumed = train_run(
        part, tmp_path / "part", resume=True, epochs=3, progress=False, log=lambda s: None
    )
    for a, b in zip(full.model.params(), resumed.model.params()):
        assert torch.equal(a, b)
    ra = json.loads((tmp_path / "full" / "results.json").read_text())
    rb = json.loads((tmp_path / "part" / "results.json").read_text())
    assert [e["val_error"] for e in ra["epochs"]] == [e["val_error"] for e in rb["epochs"]]


def test_run_folder_contents_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["epochs"]) == 2 and res["best_epoch"] in (1, 2)
    assert 0 <= res["test_error"] <= 1 and res["samples_per_s"] > 0
    assert res["config"]["hidden"] == [16]
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "checkpoint.pt").read_bytes()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--beta", "-1"], "beta"),
        (["--dataset", "mnist"], "--data-dir"),
        (["--hidden", "0"], "hidden"),
        (["--lr", "0.1,0.2,0.3"], "lrs"),
        (["--resume"], "--resume needs --out"),
        (["--hidden", "ten"], "expected integers"),
        (["--model", "cnn"], "invalid choice"),
    ],
)
def test_bad_options_give_one_error_line(args, msg, capsys):
    try:
        code = main(["train", "--no-progress", *args])
    except SystemExit as e:  # argparse's own errors exit
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npusim: error:") and msg in err[0]


def test_diverging_run_is_one_error_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "npusim.cli.main",
        "train",
        "--dataset",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--lr",
        "1e300",
        "--model",
        "drn",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("npusim: error:") and "Traceback" not in p.stderr


def test_config_round_trip_and_unknown_keys():
    cfg = TrainConfig(**SMALL).resolved()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown configuration keys: colour"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_train_options_come_from_the_config_table():
    """Every TrainConfig field is one `npusim train` option with help; today's option names
    and defaults are kept; the option's checks are the field's."""
    from dataclasses import fields

    from npusim.cli.main import build_parser
    from npusim.cli.options import config_from_args

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s: a for a in train._actions for s in a.option_strings}
    for name in (
        "--dataset --data-dir --model --hidden --algorithm --variant --beta --sweeps "
        "--free-sweeps --batch-size --lr --momentum --lr-decay --weight-decay --epochs --seed "
        "--input-gain --diode --augment --out --runs --resume --no-progress --threads --chip"
    ).split():
        assert name in flags and flags[name].help, name
    for f in fields(TrainConfig):
        assert f.metadata["help"] and any(a.dest == f.name for a in flags.values()), f.name
    assert flags["--lr"].dest == "lrs"
    a = parser.parse_args(["train"])
    assert all(getattr(a, f.name) is None for f in fields(TrainConfig))  # nothing given
    d = config_from_args(a)
    assert (d.dataset, d.model, d.hidden, d.chip, d.seed, d.input_gain) == (
        "mnist5k",
        "dhn",
        [1024],
        "ideal",
        0,
        480.0,
    )
    c = config_from_args(parser.parse_args(["train", "--hidden", "512,256", "--lr", "0.3"]))
    assert c.hidden == [512, 256] and c.lrs == [0.3, 0.3, 0.3]
    assert "integer in [0, 4294967295]" in flags["--seed"].help


def test_kill_9_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """A run killed with SIGKILL during its second epoch resumes to exactly the same weights
    and errors as a run never interrupted (and its lock dies with it)."""
    import time

    from npusim.runtime.run import load_checkpoint

    base = [
        sys.executable,
        "-m",
        "npusim.cli.main",
        "train",
        "--dataset",
        "digits",
        "--hidden",
        "16",
        "--seed",
        "3",
        "--no-progress",
        "--threads",
        "1",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run([*base, "--epochs", "3", "--out", str(full)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [*base, "--epochs", "3", "--out", str(part)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (part / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL, somewhere in epoch 2
    proc.wait()
    assert load_checkpoint(part)["epoch"] in (1, 2)
    cmd = [*base, "--out", str(part), "--resume", "--epochs", "3"]
    subprocess.run(cmd, check=True, capture_output=True)
    a, b = load_checkpoint(full), load_checkpoint(part)
    for pa, pb in zip(a["params"], b["params"], strict=True):
        assert torch.equal(pa, pb)
    strip = ("samples_per_s", "seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in a["history"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in b["history"]
    ]


def test_an_epoch_hides_old_objects_from_the_collector_and_returns_them():
    """During an epoch the objects alive at its start are frozen out of the cyclic collector (a
    full collection over them took 100 ms); after it they are collectable again: a trainer
    caught in a reference cycle is freed once dropped. A caller's own freeze is left alone."""
    import gc
    import weakref

    cfg = TrainConfig(dataset="digits", hidden=[8], epochs=1, batch_size=64)
    tr = Trainer(cfg)
    tr.data.x_train, tr.data.y_train = tr.data.x_train[:128], tr.data.y_train[:128]
    frozen = []
    tr.step = lambda x, y, step=tr.step: (frozen.append(gc.get_freeze_count()), step(x, y))[1]
    tr.cycle = tr  # only the cyclic collector can free it
    tr.train_epoch()
    assert frozen and min(frozen) > 0  # frozen while the steps ran
    assert gc.get_freeze_count() == 0  # and returned after
    ref = weakref.ref(tr)
    del tr
    gc.collect()
    assert ref() is None
    gc.freeze()  # a caller's freeze
    try:
        held = gc.get_freeze_count()
        t2 = Trainer(cfg)
        t2.data.x_train, t2.data.y_train = t2.data.x_train[:64], t2.data.y_train[:64]
        t2.train_epoch()
        assert gc.get_freeze_count() > held // 2  # not unfreezing it (some freed meanwhile)
    finally:
        gc.unfreeze()
