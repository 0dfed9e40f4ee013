"""The language model on the chip: deployment, fast frozen inference, loss over drift.

:func:`deploy_lm` puts every weight matrix of a :class:`~npusim.deploy.lm.model.GPT` (each
block's ``qkv``, ``proj``, ``fc1``, ``fc2`` and the ``head``) on the chip's arrays with
:func:`npusim.deploy.deploy` (differential pairs, programming error, stuck devices, drift,
1/f read noise, drift compensation, IR drop, output noise, DAC and ADC with ranges
calibrated on training text). The embeddings, layer norms, attention's products and softmax,
the residual adds and the sampling run in the digital periphery (unchanged torch code).

:func:`freeze` replaces each analog layer by a :class:`FrozenAnalogLinear` for fast
generation: the layer's programmed, drifted and compensated conductances at the current
time are folded once into one matrix in ADC LSBs per DAC LSB, so a token through a layer is
one fused DAC pass, one matmul and one fused pass for output noise, ADC, compensation, the
row-block sums and the bias — the arithmetic of the layer's own forward pass, reordered.
Off the CPU (a model moved to a GPU) the same arithmetic runs as tensor operations, with the
same output-noise offsets.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import Tensor, nn

from npusim.chip.spec import ChipSpec
from npusim.deploy import kernels
from npusim.deploy.convert import deploy
from npusim.deploy.layers import AnalogLinear, analog_layers, program, set_time
from npusim.deploy.lm.model import GPT
from npusim.deploy.lm.train import batches, loss_on


@njit(cache=True, fastmath=True)
def _dac_shifted(x: np.ndarray, inv_lsb: float, shift: float, top: float, out: np.ndarray) -> None:
    """out = clamp(round(x / lsb + shift), 0, top) − shift: the DAC's level in LSBs, where
    ``shift`` = −lo / lsb places code 0 at the range's low end."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.float32(round(x[i, j] * inv_lsb + shift))
            out[i, j] = min(max(v, np.float32(0.0)), np.float32(top)) - np.float32(shift)


@njit(cache=True, fastmath=True)
def _token(
    x: np.ndarray,
    w: np.ndarray,
    inv_lsb: float,
    shift: float,
    top: float,
    quantise_in: bool,
    bank: np.ndarray,
    start: int,
    sd: float,
    lo: float,
    hi: float,
    scale: np.ndarray,
    offset: np.ndarray,
    out: np.ndarray,
) -> None:
    """One input vector ``x`` (K,) through a frozen layer in one pass: DAC levels, each row
    block's partial sums ``Σ_k x_k w[r, k, :]`` (ADC LSBs), output noise, the ADC's nearest
    level (``floor + 1/2`` of a symmetric range), compensation scale, row-block sum, bias."""
    r_n, rows, n = w.shape
    k_n = x.shape[0]
    xq = np.empty(k_n, dtype=np.float32)
    for k in range(k_n):
        v = x[k]
        if quantise_in:
            v = np.float32(round(v * inv_lsb + shift))
            v = min(max(v, np.float32(0.0)), np.float32(top)) - np.float32(shift)
        xq[k] = v
    acc = np.empty(n, dtype=np.float32)
    for j in range(n):
        out[j] = np.float32(0.0)
    for r in range(r_n):
        for j in range(n):
            acc[j] = np.float32(0.0)
        k0 = r * rows
        k1 = min(k0 + rows, k_n)
        for k in range(k0, k1):
            xv = xq[k]
            wr = w[r, k - k0]
            for j in range(n):
                acc[j] += xv * wr[j]
        noise = bank[start + r * n :]
        for j in range(n):
            v = acc[j] + np.float32(sd) * noise[j]
            v = min(max(np.floor(v), np.float32(lo)), np.float32(hi))
            out[j] += v * scale[r, j] + offset[r, j]


class FrozenAnalogLinear(nn.Module):
    """Inference of one :class:`~npusim.deploy.layers.AnalogLinear` at its current
    programming and time (see the module docstring). Output noise is drawn from the layer's
    bank of normals at an offset from the layer's own generator, as the layer does."""

    def __init__(self, m: AnalogLinear) -> None:
        super().__init__()
        if m._w_eff is None:
            m.program(m.seed)
        assert m._w_eff is not None
        self.source = m
        self.in_features, self.out_features = m.in_features, m.out_features
        self.rows, self.row_blocks = m.rows, m.row_blocks
        r, n = m.row_blocks, m.out_features
        self.dac_bits, self.adc_bits = m.dac_bits, m.adc_bits
        d_lo, d_hi = m.dac_range
        a_lo, a_hi = m.adc_range
        self.symmetric_adc = m.adc_bits <= 0 or a_lo == -a_hi
        s_in = (d_hi - d_lo) / (2**m.dac_bits - 1) if m.dac_bits > 0 else 1.0
        s_out = (a_hi - a_lo) / (2**m.adc_bits - 1) if m.adc_bits > 0 else 1.0
        self.inv_lsb, self.shift = 1.0 / s_in, -d_lo / s_in
        self.top = float(2**m.dac_bits - 1)
        dev = m._w_eff.device
        alpha = m._alpha if m._alpha is not None else torch.ones(r, n, device=dev)
        scale = alpha * s_out
        offset = 0.5 * scale if m.adc_bits > 0 else torch.zeros_like(scale)
        if m.bias is not None:
            offset = offset.clone()
            offset[0] += m.bias.detach()
        self.scale, self.offset = scale.contiguous(), offset.contiguous()
        onoise = m.settings.noise.out_noise if m.settings.out_noise else 0.0
        self.sd = onoise * (2**m.adc_bits - 1) if m.adc_bits > 0 else 0.0
        w = (m._w_eff * (s_in / s_out)).detach()  # (R, rows, N): ADC LSBs per DAC LSB
        k = self.in_features
        self.w_blocks = w.contiguous()
        # the row blocks side by side: (K, R·N), block r's rows at its own inputs, zero elsewhere
        wide = torch.zeros(k, r * n, device=dev)
        for b in range(r):
            lo, hi = b * m.rows, min((b + 1) * m.rows, k)
            wide[lo:hi, b * n : (b + 1) * n] = w[b, : hi - lo]
        self.w_wide = wide
        self.gen = m._gen
        half = 2.0 ** (m.adc_bits - 1)
        self.bank = kernels.normal_bank(dev)
        self._np = (  # the fused single-token kernel's arrays (on the CPU only)
            (
                self.w_blocks.numpy(),
                self.bank.numpy(),
                self.scale.numpy(),
                self.offset.numpy(),
                -half,
                half - 1,
            )
            if dev.type == "cpu"
            else None
        )
        # a numpy generator for the bank offsets of single tokens, seeded from the layer's own
        self._rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=m._gen)))

    def forward(self, x: Tensor) -> Tensor:
        if not self.symmetric_adc:
            return self.source(x)
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, self.in_features).contiguous()
        token = x2.shape[0] == 1 and self.adc_bits > 0
        start = 0  # one token's output-noise offset: from the numpy generator on any device
        if token and self.sd:
            span = self.bank.numel() - self.row_blocks * self.out_features
            start = int(self._rng.integers(0, span))
        if token and self._np is not None:  # one token on the CPU: the fused kernel
            w, bank, scale, offset, lo, hi = self._np
            n = self.out_features
            out = torch.empty(n)
            _token(
                x2[0].numpy(),
                w,
                self.inv_lsb,
                self.shift,
                self.top,
                self.dac_bits > 0,
                bank,
                start,
                self.sd,
                lo,
                hi,
                scale,
                offset,
                out.numpy(),
            )
            return out.view(*lead, n)
        if self.dac_bits > 0 and self._np is None:  # off the CPU: tensor operations
            xq = torch.round(x2 * self.inv_lsb + self.shift).clamp_(0.0, self.top) - self.shift
        elif self.dac_bits > 0:
            xq = torch.empty_like(x2)
            _dac_shifted(x2.numpy(), self.inv_lsb, self.shift, self.top, xq.numpy())
        else:
            xq = x2
        m, r, n = x2.shape[0], self.row_blocks, self.out_features
        if m <= 64 or r == 1:  # one matmul over the blocks side by side: (M, 1·R, 1, N)
            y = (xq @ self.w_wide).view(m, r, 1, n)
            scale, offset = self.scale.view(r, 1, n), self.offset.view(r, 1, n)
        else:  # one matmul per block: (1, R, M, N)
            xp = F.pad(xq, (0, r * self.rows - self.in_features)).view(m, r, self.rows)
            y = torch.bmm(xp.transpose(0, 1), self.w_blocks).unsqueeze(0)
            scale, offset = self.scale.view(r, 1, n), self.offset.view(r, 1, n)
        if self.adc_bits > 0:
            bank = self.bank
            if self.sd > 0 and not token:
                start = int(torch.randint(0, bank.numel() - y.numel(), (1,), generator=self.gen))
            out = kernels.adc_accumulate(y, self.adc_bits, self.sd, bank, start, scale, offset)
        else:
            out = torch.addcmul(offset, y, scale).sum(1)
        return out.reshape(*lead, n)


def deploy_lm(
    model: GPT,
    chip: ChipSpec,
    calibration: Tensor,
    *,
    seed: int = 0,
    noise: str | None = None,
    **options: float | bool | int,
) -> GPT:
    """``model`` on ``chip`` (a deployed copy; see the module docstring). ``calibration``:
    token windows (B, T) whose digital forward pass sets every layer's DAC and ADC ranges;
    ``seed``: the first programming; ``options`` go to :func:`npusim.deploy.deploy`."""
    analog = deploy(
        model,
        chip,
        noise=noise,
        calibration=calibration,
        digital_fallback=True,  # embeddings and layer norms are digital by design
        seed=seed,
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(analog, GPT)
    return analog


def freeze(model: nn.Module) -> nn.Module:
    """A copy of a deployed model for fast inference at its current programming and time:
    every analog linear layer replaced by a :class:`FrozenAnalogLinear` (sharing the
    layer's noise generator). Re-freeze after :func:`program` or :func:`set_time`."""
    out = copy.copy(model)
    out._modules = dict(model._modules)  # shallow: new containers, shared leaves
    _swap(out)
    return out


def _swap(parent: nn.Module) -> None:
    for name, child in list(parent._modules.items()):
        if isinstance(child, AnalogLinear):
            parent._modules[name] = FrozenAnalogLinear(child)
        elif child is not None and len(child._modules):
            clone = copy.copy(child)
            clone._modules = dict(child._modules)
            parent._modules[name] = clone
            _swap(clone)


def calibration_windows(train_ids: Tensor, block: int, n: int = 8, seed: int = 0) -> Tensor:
    """``n`` random training windows (the converter-range calibration set)."""
    x, _ = batches(train_ids, block, n, torch.Generator().manual_seed(seed + 1))
    return x


def loss_after(
    analog: GPT,
    x: Tensor,
    y: Tensor,
    times: dict[str, float],
    repeats: int,
    seed: int = 0,
) -> dict[str, dict]:
    """Validation loss (nats/char) of a deployed model at each labelled time after
    programming (s): mean, s.d. and every run over ``repeats`` programmings (seeds
    ``seed .. seed + repeats − 1``), read through :func:`freeze`."""
    runs: dict[str, list[float]] = {k: [] for k in times}
    for r in range(repeats):
        program(analog, seed + r)
        for label, t in times.items():
            set_time(analog, t)
            runs[label].append(loss_on(freeze(analog), x, y))
    out = {}
    for label, v in runs.items():
        mean = sum(v) / len(v)
        sd = math.sqrt(sum((a - mean) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        out[label] = {"mean": mean, "std": sd, "perplexity": math.exp(mean), "runs": v}
    return out


def arrays_used(model: nn.Module) -> int:
    """Arrays the deployed model's layers occupy."""
    return sum(m.arrays for _, m in analog_layers(model))
