"""The language-model commands' ``--device``: what runs on the CPU of any machine (the CUDA
side is in tests/test_gpu.py). A frozen layer's tensor path (what runs off the CPU) gives the
fused kernels' numbers with the same output-noise offsets; ``auto`` without CUDA is ``cpu``
bit for bit (training, fine-tuning, generation, evaluation); ``cuda`` there is one error."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from npusim.chip import load_chip
from npusim.cli.main import main
from npusim.deploy import deploy, set_time
from npusim.deploy.layers import analog_layers
from npusim.deploy.lm import FrozenAnalogLinear

CUDA = torch.cuda.is_available()
TINY = ["--layers", "1", "--embd", "32", "--heads", "2", "--block", "32"]


def _frozen() -> FrozenAnalogLinear:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(300, 20))  # three row blocks of the pcm chip's 128 rows
    analog = deploy(lin, load_chip("pcm"), calibration=torch.randn(64, 300, generator=g))
    set_time(analog, 86400.0)
    return FrozenAnalogLinear(next(m for _, m in analog_layers(analog)))


@pytest.mark.parametrize("rows", [1, 5, 80], ids=["token", "prompt", "blocks"])
def test_a_frozen_layers_tensor_path_equals_its_fused_kernels(rows):
    """``_np = None`` is the layer as it runs off the CPU: DAC and ADC as tensor operations,
    one token through the general path with the fused kernel's noise offset."""
    fused = _frozen()
    x = torch.randn(rows, 300, generator=torch.Generator().manual_seed(1))
    tensor = copy.copy(fused)
    tensor._rng, tensor._np = copy.deepcopy(fused._rng), None
    state = fused.gen.get_state()
    a = fused(x)
    fused.gen.set_state(state)  # the same bank offsets for the batched path
    b = tensor(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lmdev") / "t.txt"
    r = random.Random(1)
    words = "a small dog ran over the green hill to see the old cat".split()
    lines = (" ".join(r.choice(words) for _ in range(6)) + "." for _ in range(500))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(text: Path, folder: Path, capsys: pytest.CaptureFixture, *device: str) -> dict:
    """A tiny lm-train (digital and HWA), two generations and an lm-eval in ``folder``: the
    evaluation's results, the saved weights and the generated texts."""
    common = ["--text", str(text), "--model-dir", str(folder / "m"), "--hwa-steps", "3", *device]
    assert main(["lm-train", *common, *TINY, "--steps", "12", "--hwa", "pcm"]) == 0
    gen = ["generate", *common, "--chip", "pcm", "--prompt", "a small", "--tokens", "60"]
    texts = []
    for extra in (["--seed", "2"], ["--temperature", "0"]):
        capsys.readouterr()
        assert main([*gen, *extra]) == 0
        out = capsys.readouterr().out
        assert "(simulated, every non-ideality on; one thread)" in out
        texts.append(out.split("\n\n")[0])
    out = folder / "ev"
    ev = ["lm-eval", *common, "--chip", "pcm", "--after", "1h", "1y", "--repeats", "2"]
    assert main([*ev, "--eval-chars", "256", "--out", str(out)]) == 0
    res = json.loads((out / "lm_eval.json").read_text())
    res.pop("seconds")
    res["training"].pop("seconds")
    res["texts"] = texts
    res["weights"] = {
        name: torch.load(folder / "m" / name, weights_only=True)["state"]
        for name in ("t.pt", "t-hwa-pcm.pt")
    }
    return res


@pytest.mark.skipif(CUDA, reason="auto means cuda on this machine")
def test_lm_auto_on_a_cpu_machine_equals_cpu(text, tmp_path, capsys):
    cpu = _run(text, tmp_path / "cpu", capsys, "--device", "cpu")
    auto = _run(text, tmp_path / "auto", capsys, "--device", "auto")
    assert cpu["device"] == auto["device"] == cpu["training"]["device"] == "cpu"
    assert all(len(t) > 60 for t in cpu["texts"])
    w_cpu, w_auto = cpu.pop("weights"), auto.pop("weights")
    for name, w in w_cpu.items():  # digital and hardware-aware weights
        assert all(torch.equal(v, w_auto[name][k]) for k, v in w.items())
    assert cpu == auto  # generated texts, losses after drift, records, bills: bit for bit


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["lm-train", "generate", "lm-eval"])
def test_lm_cuda_without_cuda_is_one_error_line(text, tmp_path, capsys, command):
    args = [command, "--text", str(text), "--model-dir", str(tmp_path / "m"), "--device", "cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "CUDA is not available" in err[0]
    assert not (tmp_path / "m").exists()
