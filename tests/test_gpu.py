"""``--device cpu|cuda|auto``: the CPU side runs everywhere; the CUDA checks need a GPU.

On a GPU: the ideal chip trains on cuda as on the CPU to float32 tolerance; the torch kernel
on cuda programs the rram preset's devices exactly as the numba kernel on the CPU; a hybrid
network trains a step on cuda; a cuda checkpoint resumes on the CPU; ``npusim deploy`` and
the language model's generation and evaluation on cuda agree with the CPU within the tolerances
stated below (the ``check_*`` helpers take the device, so they also run as a dry run on the
CPU).
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
from npusim.runtime.device import resolve_device
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


# ---- deploy and the language model on a GPU ---------------------------------------------------
# Tolerances: the conductances agree to float32 rounding (rtol 1e-4); an ADC input within an
# ulp of a level boundary can round the other way on cuda (one LSB), so outputs agree within a
# few per cent of their range and decisions (argmax, error rates) almost everywhere.
OUT_FRAC = 0.05  # max |Δ output| / max |output|
ERR_ATOL = 0.02  # test error rates (fraction)
LOSS_ATOL = 0.02  # nats/char
ARGMAX_AGREE = 0.9  # fraction of positions with the same likeliest character


def _deployed_mlp(dev: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """An mlp trained on digits on the CPU, deployed on the pcm chip on ``dev``, 1 d after
    programming; and the test set on ``dev``."""
    from npusim.data import load_dataset
    from npusim.deploy import deploy, set_time
    from npusim.deploy.hwa import fit
    from npusim.deploy.models import mlp

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = fit(mlp(64, (64,), 10), data.x_train, data.y_train, 3, seed=0).to(dev)
    calib = data.x_train[:500].to(dev)
    analog = set_time(deploy(model, load_chip("pcm"), calibration=calib, seed=0), 86400.0)
    return analog, data.x_test.to(dev), data.y_test.to(dev)


def check_deploy_agrees(dev: str) -> None:
    from npusim.deploy import analog_layers
    from npusim.deploy.hwa import error_rate

    (a, x, y), (b, xb, yb) = _deployed_mlp("cpu"), _deployed_mlp(dev)
    for (_, la), (_, lb) in zip(analog_layers(a), analog_layers(b), strict=True):
        assert lb.weight.device.type == torch.device(dev).type
        torch.testing.assert_close(lb._w_eff.cpu(), la._w_eff, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        out_a, out_b = a(x), b(xb).cpu()
    assert (out_b - out_a).abs().max() <= OUT_FRAC * out_a.abs().max()
    assert abs(error_rate(a, x, y) - error_rate(b, xb, yb)) <= ERR_ATOL


@needs_cuda
def test_deploy_on_cuda_agrees_with_cpu():
    check_deploy_agrees("cuda")


def check_deploy_command_agrees(tmp_path, dev: str) -> None:
    args = ["mlp", "--dataset", "digits", "--chip", "pcm", "--epochs", "2", "--hwa-epochs", "1"]
    args += ["--after", "1h", "1y", "--repeats", "2", "--threads", "1"]
    res = {}
    for d in ("cpu", dev):
        assert main(["deploy", *args, "--device", d, "--out", str(tmp_path / d)]) == 0
        res[d] = json.loads((tmp_path / d / "deploy.json").read_text())
    a, b = res["cpu"], res[dev]
    assert b["device"] == str(resolve_device(dev))
    assert abs(a["digital_test_error"] - b["digital_test_error"]) <= ERR_ATOL
    for label in ("1h", "1y"):
        assert abs(a["after"][label]["mean"] - b["after"][label]["mean"]) <= 2 * ERR_ATOL
    assert a["fit"] == b["fit"]


@needs_cuda
def test_deploy_command_on_cuda_agrees_with_cpu(tmp_path):
    """Digital training, hardware-aware training and drift on cuda: close to the CPU run."""
    check_deploy_command_agrees(tmp_path, "cuda")


def _write_text(tmp_path):  # noqa: ANN202
    """A small text of a few words, ``tmp_path / "t.txt"``."""
    import random

    r = random.Random(1)
    words = "a small dog ran over the green hill to see the old cat".split()
    lines = (" ".join(r.choice(words) for _ in range(6)) + "." for _ in range(500))
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "t.txt"


def _tiny_lm(tmp_path):  # noqa: ANN202
    """A tiny GPT trained on a small text on the CPU (fc2: 2 row blocks), and the text."""
    from npusim.deploy.lm import GPTConfig, TrainSettings, train_lm
    from npusim.deploy.lm.corpus import text_corpus

    corpus = text_corpus(_write_text(tmp_path))
    cfg = GPTConfig(vocab=len(corpus.chars), block=32, n_layer=1, n_head=2, n_embd=64)
    model, _ = train_lm(corpus, cfg, TrainSettings(steps=60), eval_chars=256)
    return model, corpus


def check_generation_agrees(tmp_path, dev: str) -> None:
    """Teacher-forced logits through the KV cache (the generation path) on ``dev`` vs the
    CPU, digital and on the pcm chip; a sampled generation runs with the CPU's positions."""
    import copy

    from npusim.deploy import set_time
    from npusim.deploy.lm import KVCache, deploy_lm, freeze, generate, loss_after
    from npusim.deploy.lm.analog import calibration_windows
    from npusim.deploy.lm.train import windows

    model, corpus = _tiny_lm(tmp_path)
    ids = corpus.encode(corpus.val)
    calib = calibration_windows(corpus.encode(corpus.train), model.cfg.block)
    logits, runs, losses = {}, {}, {}
    for d in ("cpu", dev):
        m = copy.deepcopy(model).to(d)
        analog = set_time(deploy_lm(m, load_chip("pcm"), calib, seed=0), 86400.0)
        for kind, net in (("digital", m), ("analog", freeze(analog))):
            cache, steps = KVCache(model.cfg, 1, device=d), []
            with torch.no_grad():
                for t in ids[:31].tolist():
                    steps.append(net(torch.tensor([[t]], device=d), cache)[0, -1].cpu())
            logits[d, kind] = torch.stack(steps)
        runs[d] = generate(freeze(analog), ids[:5], 40, temperature=0.8, seed=2)
        x, y = windows(ids, model.cfg.block, 256)
        losses[d] = loss_after(analog, x, y, {"1d": 86400.0}, repeats=2)["1d"]["mean"]
    a, b = logits["cpu", "digital"], logits[dev, "digital"]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    a, b = logits["cpu", "analog"], logits[dev, "analog"]
    assert (b - a).abs().max() <= OUT_FRAC * a.abs().max()
    assert (b.argmax(-1) == a.argmax(-1)).float().mean() >= ARGMAX_AGREE
    (_, pos_a), (toks_b, pos_b) = runs["cpu"], runs[dev]
    assert pos_a == pos_b and len(toks_b) == 40 and int(toks_b.max()) < model.cfg.vocab
    assert abs(losses["cpu"] - losses[dev]) <= LOSS_ATOL


@needs_cuda
def test_generation_on_cuda_agrees_with_cpu(tmp_path):
    check_generation_agrees(tmp_path, "cuda")


@needs_cuda
def test_lm_commands_run_on_cuda(tmp_path, capsys):
    """lm-train (digital and HWA), generate and lm-eval with --device cuda."""
    common = ["--text", str(_write_text(tmp_path)), "--model-dir", str(tmp_path / "m")]
    common += ["--hwa-steps", "3", "--device", "cuda"]
    tiny = ["--layers", "1", "--embd", "32", "--heads", "2", "--block", "32", "--steps", "12"]
    assert main(["lm-train", *common, *tiny, "--hwa", "pcm"]) == 0
    gen = ["generate", *common, "--chip", "pcm", "--prompt", "a small", "--tokens", "30"]
    assert main(gen) == 0
    assert "on cuda:0)" in capsys.readouterr().out
    out = tmp_path / "ev"
    ev = ["lm-eval", *common, "--chip", "pcm", "--repeats", "2", "--eval-chars", "256"]
    assert main([*ev, "--out", str(out)]) == 0
    res = json.loads((out / "lm_eval.json").read_text())
    assert res["device"] == "cuda:0" and res["training"]["device"] == "cuda:0"
