"""``--device cpu|cuda|auto``: the CPU side runs everywhere; the CUDA checks need a GPU.

On a GPU: the ideal chip trains on cuda as on the CPU to float32 tolerance; the torch kernel
on cuda programs the rram preset's devices exactly as the numba kernel on the CPU; a hybrid
network trains a step on cuda; a cuda checkpoint resumes on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from npusim.chip import load_chip
from npusim.cli.main import main
from npusim.core.outer import OuterProduct
from npusim.devices import DeviceSynapses
from npusim.runtime.config import ConfigError, TrainConfig
from npusim.runtime.run import load_checkpoint
from npusim.runtime.train import Trainer, move_to

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="CUDA is not available on this machine: GPU tests skipped"
)
SMALL = ["--dataset", "digits", "--hidden", "32", "--epochs", "1", "--no-progress"]
IDEAL_ATOL = 1e-4  # float32: cuda's matmuls sum in another order (and may use TF32 off)


def _train(tmp_path, name: str, *args: str) -> tuple[dict, list[torch.Tensor]]:
    out = tmp_path / name
    assert main(["train", *SMALL, "--out", str(out), *args]) == 0
    res = json.loads((out / "results.json").read_text())
    return res, load_checkpoint(out)["params"]


@pytest.mark.skipif(CUDA, reason="auto means cuda on this machine")
def test_device_auto_on_a_cpu_machine_equals_cpu(tmp_path):
    res_cpu, w_cpu = _train(tmp_path, "cpu", "--device", "cpu", "--chip", "rram")
    res_auto, w_auto = _train(tmp_path, "auto", "--device", "auto", "--chip", "rram")
    assert res_cpu["device"] == res_auto["device"] == "cpu"
    assert res_auto["config"]["device"] == "auto"
    assert res_cpu["epochs"][0]["test_error"] == res_auto["epochs"][0]["test_error"]
    assert res_cpu["pulses"] == res_auto["pulses"]
    assert all(torch.equal(a, b) for a, b in zip(w_cpu, w_auto, strict=True))


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_error_line(capsys):
    with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
        TrainConfig(device="cuda").resolved()
    assert main(["train", *SMALL, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and "CUDA is not available" in err[0]


def test_resume_may_name_another_device(tmp_path):
    """``--device`` with ``--resume`` says where to continue, not what the run is."""
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--device", "auto"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["epochs"]) == 2 and res["device"] == ("cuda:0" if CUDA else "cpu")


@pytest.mark.parametrize(
    "extra",
    [
        {"chip": "rram"},
        {"chip": "rram", "update": "ttv2"},
        {"model": "drn"},
        {"model": "hybrid", "arch": "conv4k3-pool|fc10"},
    ],
    ids=["dhn-rram", "dhn-ttv2", "drn", "hybrid"],
)
def test_moving_a_trainer_in_place_keeps_it_training_the_same(extra):
    """What ``--device cuda`` does to a built trainer, done on the CPU: every tensor moved in
    place, caches dropped, the synapses rebound; training goes on bit for bit."""
    a, b = _steps("cpu", steps=1, **extra), _steps("cpu", steps=1, **extra)
    move_to([b.model, b.synapses, b.periphery, b.estimator], torch.device("cpu"))
    x, y = a.data.x_train, a.data.y_train
    for k in range(1, 4):
        a.step(x[16 * k : 16 * (k + 1)], y[16 * k : 16 * (k + 1)])
        b.step(x[16 * k : 16 * (k + 1)], y[16 * k : 16 * (k + 1)])
    assert all(torch.equal(p, q) for p, q in zip(a.model.params(), b.model.params(), strict=True))
    assert a.evaluate("val") == b.evaluate("val")


# ---- on a GPU ---------------------------------------------------------------------------------
def _steps(device: str, steps: int = 4, **cfg) -> Trainer:
    tr = Trainer(TrainConfig(dataset="digits", hidden=[32], epochs=1, device=device, **cfg))
    x, y = tr.data.x_train, tr.data.y_train
    for k in range(steps):
        tr.step(x[16 * k : 16 * (k + 1)], y[16 * k : 16 * (k + 1)])
    return tr


@needs_cuda
def test_ideal_dhn_on_cuda_equals_cpu_to_float32_tolerance():
    cpu, gpu = _steps("cpu"), _steps("cuda")
    assert all(p.device.type == "cuda" for p in gpu.model.params())
    for a, b in zip(cpu.model.params(), gpu.model.params(), strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=IDEAL_ATOL)


@needs_cuda
def test_torch_kernel_on_cuda_equals_numba_on_cpu_for_rram():
    dev = load_chip("rram").device
    g = torch.Generator().manual_seed(0)
    w = torch.rand(64, 48, generator=g) - 0.5
    a = DeviceSynapses(dev, [w.clone()], [True], seed=3, kernel_impl="numba")
    b = DeviceSynapses(dev, [w.clone()], [True], seed=3).to("cuda")  # programmed on the CPU
    b.params[0].data = b.params[0].data.cuda()  # the network's parameter, moved in place
    assert b.use_torch
    for k in range(6):
        if k % 2:
            left = torch.randn(8, 64, generator=g)
            d = OuterProduct(left, torch.randn(8, 48, generator=g) * 3 * a.pulse_unit(0))
            db = OuterProduct(d.left.cuda(), d.right.cuda())
        else:
            d = torch.randn(64, 48, generator=g) * 3 * a.pulse_unit(0)
            db = d.cuda()
        a.apply(a.params, [d])
        b.apply(b.params, [db])
    assert torch.equal(a.rec[0], b.rec[0].cpu()) and torch.equal(a.c1[0], b.c1[0].cpu())
    assert torch.equal(a.params[0], b.params[0].cpu())
    assert a.total_pulses == b.total_pulses > 0


@needs_cuda
def test_rram_training_on_cuda_gives_the_cpu_pulses_statistically():
    """Device chip on cuda: the same kernel, but the relaxation's float32 sums differ by an
    ulp, which can move a count across a pulse threshold; totals agree closely."""
    cpu, gpu = _steps("cpu", chip="rram"), _steps("cuda", chip="rram")
    a, b = cpu.synapses.total_pulses, gpu.synapses.total_pulses
    assert a > 0 and abs(a - b) <= 0.01 * a


@needs_cuda
def test_drn_with_shockley_diodes_trains_on_cuda_close_to_cpu():
    cpu, gpu = (
        _steps("cpu", model="drn", diode="shockley"),
        _steps("cuda", model="drn", diode="shockley"),
    )
    for a, b in zip(cpu.model.params(), gpu.model.params(), strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-6)


@needs_cuda
def test_hybrid_network_trains_a_step_on_cuda():
    tr = _steps("cuda", steps=1, model="hybrid", arch="conv4k3-pool|fc10")
    assert all(p.device.type == "cuda" and bool(torch.isfinite(p).all()) for p in tr.model.params())


@needs_cuda
@pytest.mark.parametrize("update", ["sgd", "mixed", "ttv2"])
def test_a_cuda_checkpoint_resumes_on_the_cpu(tmp_path, update):
    out = tmp_path / "run"
    args = ["--chip", "rram", "--update", update, "--device", "cuda", "--out", str(out)]
    assert main(["train", *SMALL, *args]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--device", "cpu"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["epochs"]) == 2 and res["device"] == "cpu"
