"""Training: digital (plain backprop) and hardware-aware (the chip in the forward pass).

Hardware-aware training (Joshi et al., Nat. Commun. 11, 2473 (2020); Rasch et al., Nat.
Commun. 14, 5282 (2023)) trains the digital weights of a deployed model while every forward
pass sees a fresh programming of the chip drifted to a random time (log-uniform between t0
and a year), its read noise, compensation, IR drop, output noise and the DAC/ADC roundings;
gradients pass straight through the noise and the converters to the digital weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npusim.deploy.layers import analog_layers, program


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 0.0,
    anneal: bool = False,
) -> nn.Module:
    """Train ``model`` (digital or deployed in train mode) by Adam on cross-entropy; returns it
    in eval mode. Batches are shuffled by ``seed``; ``anneal``: the learning rate follows a
    cosine from ``lr`` to 0 over the run (the last weights then settle instead of jittering
    with the injected noise)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if anneal else None
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    return model.eval()


def hwa_train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    noise_scale: float | None = None,
) -> nn.Module:
    """Hardware-aware training of a deployed ``model`` (from :func:`npusim.deploy.deploy`,
    calibrated) on inputs ``x`` and labels ``y``; ``noise_scale`` multiplies the injected
    programming and read noise (default: each layer's setting, 1). The model is programmed
    afresh (seed ``seed``) afterwards and returned in eval mode."""
    for k, (_, m) in enumerate(analog_layers(model)):
        if noise_scale is not None:
            m.settings.hwa_noise_scale = noise_scale
        m._gen.manual_seed(seed * 7919 + k)
    fit(model, x, y, epochs, lr=lr, batch_size=batch_size, seed=seed, anneal=True)
    return program(model, seed)


@torch.no_grad()
def error_rate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` misclassified (argmax of the outputs)."""
    model.eval()
    wrong = 0
    for lo in range(0, x.shape[0], batch_size):
        wrong += int((model(x[lo : lo + batch_size]).argmax(1) != y[lo : lo + batch_size]).sum())
    return wrong / max(x.shape[0], 1)


def drift_errors(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    times: dict[str, float],
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, dict]:
    """Test error (fraction) of a deployed model at each labelled time after programming
    (s): mean, s.d. and every run over ``repeats`` programmings (seeds ``seed .. seed +
    repeats − 1``)."""
    runs: dict[str, list[float]] = {k: [] for k in times}
    for r in range(repeats):
        program(model, seed + r)
        for label, t in times.items():
            for _, m in analog_layers(model):
                m.set_time(t)
            runs[label].append(error_rate(model, x, y))
    out = {}
    for label, v in runs.items():
        t = torch.tensor(v, dtype=torch.float64)
        sd = float(t.std()) if len(v) > 1 else 0.0
        out[label] = {"mean": float(t.mean()), "std": sd, "runs": v}
    return out
