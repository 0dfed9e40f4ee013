"""Analog inference of LeNet-5 on the ``pcm`` chip with every non-ideality on (programming
error, drift to 1 day, frozen 1/f read noise, drift compensation, 8-bit DAC/ADC with
calibrated ranges, output noise, IR drop), against digital torch inference of the same model,
in the same run. One JSON line named ``deploy-lenet5-pcm``: ``images_per_s`` (analog),
``digital_images_per_s``, ``ratio`` (digital / analog time per image; target <= 3) and
``target_images_per_s`` (20,000). Rounds alternate between the two and the best of each
counts, so a busy machine disturbs the ratio less.

``--device cpu|cuda|auto`` (default cpu): ``cuda`` adds the same comparison on the GPU
(``deploy-lenet5-pcm-cuda``, batch 500 and 5000, the GPU named); without CUDA one
``cuda-skipped`` line says why. ``auto`` runs both.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from npusim.chip import load_chip
from npusim.data import load_dataset
from npusim.deploy import deploy, set_time
from npusim.deploy.models import lenet5
from npusim.runtime.device import DEVICES, cuda_unavailable

BATCH, CALLS, ROUNDS = 500, 4, 7


def _seconds_per_image(model: torch.nn.Module, x: torch.Tensor) -> float:
    cuda = x.device.type == "cuda"
    with torch.no_grad():
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            model(x)
        if cuda:
            torch.cuda.synchronize()  # the GPU's work done, not only queued
        return (time.perf_counter() - t0) / (CALLS * x.shape[0])


def _best(analog: torch.nn.Module, digital: torch.nn.Module, x: torch.Tensor) -> dict:
    """Best seconds per image of each model over alternating rounds (round 0 warms up)."""
    best = {"analog": float("inf"), "digital": float("inf")}
    for r in range(ROUNDS + 1):
        for name, model in (("analog", analog), ("digital", digital)):
            s = _seconds_per_image(model, x)
            if r > 0:
                best[name] = min(best[name], s)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    device = parser.parse_args().device
    if device in ("cpu", "auto"):
        cpu_line()
    if device in ("cuda", "auto"):
        cuda_lines()


def cuda_lines() -> None:
    """The same comparison with the model, tiles and converters on the GPU."""
    if not torch.cuda.is_available():
        print(json.dumps({"name": "cuda-skipped", "reason": cuda_unavailable()}), flush=True)
        return
    data = load_dataset("mnist5k")
    torch.manual_seed(0)
    digital = lenet5().eval().cuda()
    calib = data.x_train[:BATCH].view(-1, 1, 28, 28).cuda()
    analog = set_time(deploy(digital, load_chip("pcm"), calibration=calib), 86400.0)
    for batch in (BATCH, 10 * BATCH):
        x = data.x_train[:batch].view(-1, 1, 28, 28).cuda()
        best = _best(analog, digital, x)
        line = {
            "name": "deploy-lenet5-pcm-cuda",
            "images_per_s": round(1.0 / best["analog"]),
            "digital_images_per_s": round(1.0 / best["digital"]),
            "ratio": round(best["analog"] / best["digital"], 2),
            "batch": int(x.shape[0]),
            "gpu": torch.cuda.get_device_name(),
        }
        print(json.dumps(line), flush=True)


def cpu_line() -> None:
    data = load_dataset("mnist5k")
    x = data.x_train[:BATCH].view(-1, 1, 28, 28)
    torch.manual_seed(0)
    digital = lenet5().eval()
    analog = deploy(digital, load_chip("pcm"), calibration=x)
    set_time(analog, 86400.0)
    best = _best(analog, digital, x)
    line = {
        "name": "deploy-lenet5-pcm",
        "images_per_s": round(1.0 / best["analog"]),
        "digital_images_per_s": round(1.0 / best["digital"]),
        "ratio": round(best["analog"] / best["digital"], 2),
        "target_images_per_s": 20000,
        "target_ratio": 3.0,
        "batch": BATCH,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
