"""``npusim deploy --device``: what runs on the CPU of any machine (the CUDA side is in
tests/test_gpu.py). The converters' tensor path (what runs off the CPU) equals the fused
numba kernels; ``auto`` on a machine without CUDA is ``cpu`` bit for bit; ``cuda`` there is
one error line."""

from __future__ import annotations

import json

import pytest
import torch

from npusim.cli.main import main
from npusim.deploy import kernels

CUDA = torch.cuda.is_available()
SMALL = ["mlp", "--dataset", "digits", "--chip", "pcm", "--epochs", "2", "--hwa-epochs", "1"]
SMALL += ["--after", "1h", "1y", "--repeats", "2", "--threads", "1"]


def test_the_converters_tensor_path_equals_the_fused_kernels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 40, generator=g) * 1.2
    fused, tensor = kernels.dac_codes(x, 255.0, 8), kernels.dac_codes(x, 255.0, 8, fused=False)
    assert torch.equal(fused, tensor)
    bank = kernels.normal_bank()
    for p, q, sp, sq in ((1, 30, 1, 30), (6, 5, 6, 1)):  # linear and conv layouts
        y = torch.randn(3, 2, p, q, generator=g) * 60
        scale, offset = torch.rand(2, sp, sq, generator=g), torch.rand(2, sp, sq, generator=g)
        args = (y, 8, 0.3, bank, 1234, scale, offset)
        a, b = kernels.adc_accumulate(*args), kernels.adc_accumulate(*args, fused=False)
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-5)  # only the sums' order differs


def test_normal_bank_is_one_draw_wherever_it_lives():
    assert kernels.normal_bank("cpu") is kernels.normal_bank()
    assert torch.equal(kernels.normal_bank(torch.device("cpu"))[:5], kernels.normal_bank()[:5])


def _deploy(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    assert main(["deploy", *SMALL, "--out", str(out), *extra]) == 0
    res = json.loads((out / "deploy.json").read_text())
    res.pop("seconds")
    return res


@pytest.mark.skipif(CUDA, reason="auto means cuda on this machine")
def test_deploy_auto_on_a_cpu_machine_equals_cpu(tmp_path, capsys):
    cpu = _deploy(tmp_path, "cpu", "--device", "cpu")
    auto = _deploy(tmp_path, "auto", "--device", "auto")
    default = _deploy(tmp_path, "default")
    assert cpu["device"] == auto["device"] == default["device"] == "cpu"
    assert cpu == auto == default  # digital training, HWA, programmings, drift: bit for bit


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_deploy_cuda_without_cuda_is_one_error_line(tmp_path, capsys):
    assert main(["deploy", *SMALL, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "CUDA is not available" in err[0]
    assert not (tmp_path / "o").exists()
