"""Generated tokens/s of the character-level GPT on the pcm chip with every non-ideality on
(programming error, stuck devices, drift to 1 day, 1/f read noise, compensation, IR drop,
output noise, 8-bit DAC/ADC) vs the digital torch model, side by side; one JSON line.

The speed does not depend on the weights: a trained model from the model folder is used
when there is one, else a fresh one of the default shape (1.0 M parameters).

``--device cpu|cuda|auto`` (default cpu): ``cuda`` adds the same line with the model and its
frozen layers on the GPU (``lm-generate-pcm-cuda``; sampling still draws on the CPU); without
CUDA one ``cuda-skipped`` line says why. ``auto`` runs both."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from npusim.chip import load_chip
from npusim.deploy import set_time
from npusim.deploy.lm import GPT, GPTConfig, deploy_lm, freeze, generate, load_model, model_dir
from npusim.runtime.device import DEVICES, cuda_unavailable

TOKENS = 300


def _rate(model: torch.nn.Module, prompt: torch.Tensor) -> float:
    generate(model, prompt, 20, seed=0)  # warm-up (numba kernels, allocator)
    best = 0.0
    for rep in range(3):
        t0 = time.perf_counter()
        generate(model, prompt, TOKENS, temperature=0.8, seed=rep)  # each token read back
        best = max(best, TOKENS / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    device = parser.parse_args().device
    if device in ("cpu", "auto"):
        line("cpu")
    if device in ("cuda", "auto"):
        if torch.cuda.is_available():
            line("cuda")
        else:
            print(json.dumps({"bench": "cuda-skipped", "reason": cuda_unavailable()}), flush=True)


def line(device: str) -> None:
    """One JSON line: analog vs digital tokens/s with the models on ``device``."""
    path = model_dir() / "shakespeare.pt"
    if path.exists():
        model, _, _ = load_model(path)
        source = str(path)
    else:
        torch.manual_seed(0)
        model, source = GPT(GPTConfig(vocab=81)).eval(), "untrained, default shape"
    model = model.to(device)
    chip = load_chip("pcm")
    calib = torch.randint(
        0, model.cfg.vocab, (8, model.cfg.block), generator=torch.Generator().manual_seed(0)
    )
    analog = deploy_lm(model, chip, calib, seed=0)
    set_time(analog, 86400.0)
    prompt = torch.randint(0, model.cfg.vocab, (16,), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    fast = freeze(analog)
    freeze_s = time.perf_counter() - t0
    analog_rate, digital_rate = _rate(fast, prompt), _rate(model, prompt)
    fields = {
        "bench": "lm-generate-pcm" if device == "cpu" else f"lm-generate-pcm-{device}",
        "model": source,
        "params": model.num_params(),
        "tokens": TOKENS,
        "analog_tokens_per_s": round(analog_rate, 1),
        "digital_tokens_per_s": round(digital_rate, 1),
        "ratio_digital_over_analog": round(digital_rate / analog_rate, 2),
        "freeze_s": round(freeze_s, 3),
        "threads": 1,  # generate() decodes on one torch thread
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device != "cpu":
        fields["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(fields), flush=True)


if __name__ == "__main__":
    main()
