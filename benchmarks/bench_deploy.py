"""Analog inference of LeNet-5 on the ``pcm`` chip with every non-ideality on (programming
error, drift to 1 day, frozen 1/f read noise, drift compensation, 8-bit DAC/ADC with
calibrated ranges, output noise, IR drop), against digital torch inference of the same model,
in the same run. One JSON line named ``deploy-lenet5-pcm``: ``images_per_s`` (analog),
``digital_images_per_s``, ``ratio`` (digital / analog time per image; target <= 3) and
``target_images_per_s`` (20,000). Rounds alternate between the two and the best of each
counts, so a busy machine disturbs the ratio less.
"""

from __future__ import annotations

import json
import time

import torch

from npusim.chip import load_chip
from npusim.data import load_dataset
from npusim.deploy import deploy, set_time
from npusim.deploy.models import lenet5

BATCH, CALLS, ROUNDS = 500, 4, 7


def _seconds_per_image(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(CALLS):
            model(x)
        return (time.perf_counter() - t0) / (CALLS * x.shape[0])


def main() -> None:
    data = load_dataset("mnist5k")
    x = data.x_train[:BATCH].view(-1, 1, 28, 28)
    torch.manual_seed(0)
    digital = lenet5().eval()
    analog = deploy(digital, load_chip("pcm"), calibration=x)
    set_time(analog, 86400.0)
    best = {"analog": float("inf"), "digital": float("inf")}
    for r in range(ROUNDS + 1):
        for name, model in (("analog", analog), ("digital", digital)):
            s = _seconds_per_image(model, x)
            if r > 0:  # round 0 warms up
                best[name] = min(best[name], s)
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
