"""Analog layers: a weight matrix tiled onto the chip's crossbar arrays.

A layer computing ``y = x Wᵀ + b`` (``W``: out × in, torch layout) holds ``Wᵀ`` (in × out) on
arrays of ``rows × cols`` devices: ``R = ⌈in / rows⌉`` row blocks by ``C = ⌈out / cols⌉``
column blocks, every signed weight a differential pair of devices in two arrays of the same
shape (``G+`` and ``G−``, their column currents subtracted before the ADC). Conductances,
normalised by ``g_max`` (y = G / g_max), are programmed to

    y± = y_min + (1 − y_min) · max(±w, 0) / w_max,    w_max = max |W| of the layer,

so ``w = w_max (y+ − y−) / (1 − y_min)``. One inference through the layer:

1. the DAC quantises each input (``converters.dac_bits`` over the layer's calibrated range);
2. each array computes its column currents: ``x_r @ W_eff[r]`` for row block ``r`` with the
   effective weights of the pair at time ``t`` (programming error, drift, frozen 1/f read
   noise, IR drop; :meth:`AnalogMatrix.effective`);
3. output noise is added and the ADC quantises each array's partial sums
   (``converters.adc_bits`` over the layer's calibrated range);
4. the digital periphery scales each array's outputs by its drift-compensation factor
   (Joshi et al., Nat. Commun. 11, 2473 (2020): one global factor per array, from the summed
   column currents of an all-ones read after programming and at ``t``), adds the partial sums
   of the row blocks and the bias.

The programmed and drifted conductances are computed once per (programming, time), so an
inference is a DAC rounding, one batched matmul over the row blocks, the output noise and an
ADC rounding. Output noise is drawn from a bank of 2²² standard normals at a random offset
per call (statistically independent of the signal; the bank is reused across calls).
A convolution's arrays are evaluated as one ``conv2d`` whose ``R·N`` filters are the row
blocks' effective weights, each zero outside its block's rows: the same sums as the unfolded
matrix-vector products, computed without materialising the patches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from npusim.chip.capacity import arrays_for
from npusim.chip.spec import ChipSpec
from npusim.deploy import kernels
from npusim.deploy.irdrop import ir_drop_first_order
from npusim.deploy.noise import InferenceNoise
from npusim.deploy.noise.base import cpu_randn

YEAR_S = 3.15576e7
_normal_bank = kernels.normal_bank
_quantize = kernels.quantize


@dataclass
class AnalogSettings:
    """What one deployment simulates. ``chip``: the ChipSpec (array size, converters, device);
    ``noise``: its inference noise model; switches for drift compensation, IR drop, read and
    output noise; ``hwa_noise_scale`` multiplies the programming and read noise injected while
    training (1 = the model's own statistics); ``hwa_max_time_s``: drift times for training
    are drawn log-uniformly from [t0, this] (s)."""

    chip: ChipSpec
    noise: InferenceNoise
    drift_compensation: bool
    ir_drop: bool = True
    read_noise: bool = True
    out_noise: bool = True
    hwa_noise_scale: float = 1.0
    hwa_max_time_s: float = YEAR_S


@dataclass
class _Programmed:
    y_target: Tensor  # (2, R, rows, C*cols): G+ and G− targets, normalised
    y_prog: Tensor  # programmed, normalised
    nu: Tensor  # drift exponents
    w_max: float
    ref_sums: Tensor | None  # (R, C): |all-ones read| per array at t0 (compensation reference)


class AnalogMatrix(nn.Module):
    """The tiles of one weight matrix and its periphery (base of the analog layers).

    ``weight`` (out, in) and ``bias`` stay digital parameters (hardware-aware training updates
    them; :func:`npusim.deploy.undeploy` copies them back); the chip holds their programmed
    image. ``dac_range`` / ``adc_range`` (normalised signal units of the layer's inputs and of
    one array's partial sums) come from :func:`npusim.deploy.calibrate` or the chip's
    converters.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, settings: AnalogSettings) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float().reshape(weight.shape[0], -1))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())
        self.settings = settings
        a, c = settings.chip.array, settings.chip.converters
        self.out_features, self.in_features = self.weight.shape
        self.rows, self.cols = a.rows, a.cols
        self.row_blocks = math.ceil(self.in_features / a.rows)
        self.col_blocks = math.ceil(self.out_features / a.cols)
        self.dac_bits, self.adc_bits = c.dac_bits, c.adc_bits
        self.dac_range = (c.dac_lo, c.dac_hi)
        self.adc_range = (c.adc_lo, c.adc_hi)
        self.time_s = 0.0
        self.seed = 0
        self._prog: _Programmed | None = None
        self._w_eff: Tensor | None = None  # (R, rows, N)
        self._alpha: Tensor | None = None  # (R, N)
        self._calib: dict[str, float] | None = None
        self._gen = torch.Generator()
        self._conv_w: Tensor | None = None
        self._fast_cache: tuple[Tensor, Tensor, Tensor, float, float] | None = None

    # ---- geometry ------------------------------------------------------------------------
    @property
    def arrays(self) -> int:
        """Arrays this matrix occupies (two per block: the pair's G+ and G− arrays)."""
        return arrays_for(self.in_features, self.out_features, self.settings.chip, devices=2)

    def _tiles(self, w: Tensor) -> Tensor:
        """``Wᵀ`` zero-padded to (R, rows, C*cols)."""
        k, n = self.in_features, self.out_features
        wt = F.pad(w.t(), (0, self.col_blocks * self.cols - n, 0, self.row_blocks * self.rows - k))
        return wt.reshape(self.row_blocks, self.rows, self.col_blocks * self.cols)

    def _per_array(self, y: Tensor) -> Tensor:
        """(..., R, rows, C*cols) -> (..., R, C, rows, cols): one matrix per array."""
        *lead, r, rows, _ = y.shape
        return y.reshape(*lead, r, rows, self.col_blocks, self.cols).transpose(-3, -2)

    def _from_arrays(self, y: Tensor) -> Tensor:
        *lead, r, c, rows, cols = y.shape
        return y.transpose(-3, -2).reshape(*lead, r, rows, c * cols)

    # ---- programming and time ------------------------------------------------------------
    def targets(self, w: Tensor) -> tuple[Tensor, float]:
        """Target conductances (2, R, rows, C*cols) of ``G+``/``G−`` (normalised) and w_max."""
        noise = self.settings.noise
        w_max = float(w.detach().abs().max()) or 1.0
        t = self._tiles(w.detach()) / w_max
        span = noise.y_max - noise.y_min
        return noise.y_min + span * torch.stack([t.clamp(min=0), (-t).clamp(min=0)]), w_max

    def program(self, seed: int) -> None:
        """Program the chip's devices (one draw of the programming error, drift exponents and
        stuck devices from ``seed``) and read them right after programming (t = 0)."""
        gen = torch.Generator().manual_seed(int(seed))
        noise = self.settings.noise
        y_t, w_max = self.targets(self.weight)
        y_p, y_t = noise.program_pair(y_t, gen)
        nu = noise.drift_nu(y_t, gen)
        self.seed = int(seed)
        self._gen.manual_seed(int(seed) ^ 0x5EED)
        self._prog = _Programmed(y_t, y_p, nu, w_max, None)
        if self.settings.drift_compensation:
            self._prog.ref_sums = self._array_sums(self._conductances(y_p))
        self.set_time(0.0)

    def _conductances(self, y: Tensor) -> Tensor:
        """Effective normalised conductances seen at the column outputs (IR drop applied)."""
        noise, chip = self.settings.noise, self.settings.chip
        if not (self.settings.ir_drop and noise.wire_ohm > 0):
            return y
        g_max = chip.device.g_max
        per = self._per_array(y * g_max)
        return self._from_arrays(ir_drop_first_order(per, noise.wire_ohm)) / g_max

    def _array_sums(self, y_eff: Tensor) -> Tensor:
        """Σ_j |Σ_i (y+ − y−)_ij| per array (R, C): the summed column currents of an
        all-ones read, normalised (Joshi et al. 2020's calibration read)."""
        d = self._per_array(y_eff[0] - y_eff[1])
        return d.sum(-2).abs().sum(-1)

    def effective(
        self, t: float, scale: float = 1.0, prog: _Programmed | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Effective weights (R, rows, N) at ``t`` s after programming (drift, frozen 1/f read
        noise of s.d. ``scale`` × the model's, IR drop) and the per-array compensation factors
        (R, N) or None. ``prog``: a programming other than the layer's own."""
        p, noise = prog or self._prog, self.settings.noise
        if p is None:
            raise RuntimeError("program the layer first (npusim.deploy.program)")
        y = noise.drifted(p.y_prog, p.nu, t)
        if self.settings.read_noise:
            std = noise.read_std(y, p.y_target, t)
            y = y + scale * std * cpu_randn(y, self._gen)
        y_eff = self._conductances(y.clamp(min=0.0))
        w = (y_eff[0] - y_eff[1]) * (p.w_max / (noise.y_max - noise.y_min))
        alpha = None
        if p.ref_sums is not None:
            a = p.ref_sums / self._array_sums(y_eff).clamp(min=1e-30)
            alpha = a.repeat_interleave(self.cols, dim=1)[:, : self.out_features]
        return w[..., : self.out_features].contiguous(), alpha

    def set_time(self, t: float) -> None:
        """Let the programmed devices drift to ``t`` s after programming and freeze that
        state (with its read noise) for the following inferences."""
        self.time_s = float(t)
        self._w_eff, self._alpha = self.effective(self.time_s)
        self._conv_w = None
        self._fast_cache = None

    # ---- the matrix-vector products ------------------------------------------------------
    def _sample(self) -> tuple[Tensor, Tensor | None]:
        """Hardware-aware training: a fresh programming and drift time per step, the gradient
        passing straight through to the digital weights."""
        s = self.settings
        gen, noise = self._gen, s.noise
        with torch.no_grad():
            y_t, w_max = self.targets(self.weight)
            y_p, y_t = noise.program_pair(y_t, gen)
            if s.hwa_noise_scale != 1.0:
                y_p = (y_t + s.hwa_noise_scale * (y_p - y_t)).clamp_(min=0.0)
            nu = noise.drift_nu(y_t, gen)
            lo, hi = math.log(max(noise.t0, 1e-9)), math.log(s.hwa_max_time_s)
            t = math.exp(lo + (hi - lo) * float(torch.rand((), generator=gen)))
            prog = _Programmed(y_t, y_p, nu, w_max, None)
            if s.drift_compensation:
                prog.ref_sums = self._array_sums(self._conductances(y_p))
            w_s, alpha = self.effective(t, scale=s.hwa_noise_scale, prog=prog)
            if alpha is not None:  # in training the compensation is folded into the weights
                w_s = w_s * alpha.unsqueeze(1)
        w = self._tiles(self.weight)[..., : self.out_features]
        return w + (w_s - w).detach(), None

    def _weights(self) -> tuple[Tensor, Tensor | None]:
        if self.training:
            return self._sample()
        if self._w_eff is None:
            self.program(self.seed)
        assert self._w_eff is not None
        return self._w_eff, self._alpha

    def _periphery(self, y: Tensor, tile_dim: int, alpha: Tensor | None) -> Tensor:
        """Output noise, ADC, compensation and the digital sum over row blocks of ``y``, whose
        dimension ``tile_dim`` indexes the row blocks."""
        lo, hi = self.adc_range
        if self._calib is not None:
            p = self._calib
            p["adc"] = max(p["adc"], float(y.detach().abs().max()))
        onoise = self.settings.noise.out_noise if self.settings.out_noise else 0.0
        if onoise > 0 and self.adc_bits > 0 and self._calib is None:
            sd = onoise * (hi - lo)
            bank = _normal_bank(y.device)
            n = y.numel()
            if n < bank.numel():
                o = int(torch.randint(0, bank.numel() - n, (1,), generator=self._gen))
                y = y + sd * bank[o : o + n].view(y.shape)
            else:
                y = y + sd * cpu_randn(y, self._gen)
        if self._calib is None:
            y = _quantize(y, self.adc_bits, lo, hi, ste=self.training)
        if alpha is not None:
            shape = [1] * y.dim()  # row blocks at tile_dim, outputs at dim 2 in both layouts
            shape[tile_dim], shape[2] = alpha.shape
            y = y * alpha.reshape(shape)
        return y.sum(tile_dim)

    def _dac(self, x: Tensor) -> Tensor:
        if self._calib is not None:
            self._calib["lo"] = min(self._calib["lo"], float(x.detach().min()))
            self._calib["hi"] = max(self._calib["hi"], float(x.detach().max()))
            return x
        return _quantize(x, self.dac_bits, *self.dac_range, ste=self.training)

    def matvec(self, x: Tensor) -> Tensor:
        """``x`` (M, in) already through the DAC -> (M, out) before the bias."""
        w, alpha = self._weights() if self._calib is None else (self._digital_tiles(), None)
        m, k = x.shape
        r = self.row_blocks
        if r == 1:
            y = (x @ w[0, :k]).unsqueeze(0)
        else:
            xp = F.pad(x, (0, r * self.rows - k)).view(m, r, self.rows).transpose(0, 1)
            y = torch.bmm(xp, w)
        return self._periphery(y, 0, alpha)

    # ---- inference fast path: integer codes, every scale folded into the weights ------------
    def _fast(self) -> tuple[Tensor, Tensor, Tensor, float, float] | None:
        """(weights in ADC codes per DAC code (R, rows, N), output scale s (R, N), offset
        (R, N), DAC 1/LSB, output noise s.d. in ADC codes) for inference, or None when the
        converters need the general path (a DAC range not starting at 0, an asymmetric ADC
        range). Cached per programming, time and calibration."""
        if self._fast_cache is not None:
            return self._fast_cache
        d_lo, d_hi = self.dac_range
        a_lo, a_hi = self.adc_range
        if (self.dac_bits > 0 and d_lo != 0.0) or (self.adc_bits > 0 and a_lo != -a_hi):
            return None
        if self._w_eff is None:
            self.program(self.seed)
        assert self._w_eff is not None
        s_in = (d_hi - d_lo) / (2**self.dac_bits - 1) if self.dac_bits > 0 else 1.0
        s_out = (a_hi - a_lo) / (2**self.adc_bits - 1) if self.adc_bits > 0 else 1.0
        alpha = (
            self._alpha
            if self._alpha is not None
            else torch.ones(self.row_blocks, self.out_features, device=self._w_eff.device)
        )
        scale = alpha * s_out
        offset = 0.5 * scale if self.adc_bits > 0 else torch.zeros_like(scale)
        if self.bias is not None:  # the bias rides on the first row block's offset
            offset = offset.clone()
            offset[0] += self.bias.detach()
        onoise = self.settings.noise.out_noise if self.settings.out_noise else 0.0
        sd = onoise * (2**self.adc_bits - 1) if self.adc_bits > 0 else 0.0
        self._fast_cache = (self._w_eff * (s_in / s_out), scale, offset, 1.0 / s_in, sd)
        return self._fast_cache

    def _dac_codes(self, x: Tensor, inv_lsb: float) -> Tensor:
        """Inputs as DAC codes 0 .. 2**bits − 1 (ranges [0, hi]) or unchanged (ideal DAC)."""
        if self.dac_bits <= 0:
            return x
        return kernels.dac_codes(x, inv_lsb, self.dac_bits)

    def _accumulate(self, y: Tensor, scale: Tensor, offset: Tensor, sd: float) -> Tensor:
        """Partial sums ``y`` (B, R, P, Q) in ADC LSBs through output noise, the ADC, the
        compensation scale and the digital sum over row blocks -> (B, P, Q). ``scale`` and
        ``offset`` broadcast as (R, 1 or P, 1 or Q)."""
        bank = _normal_bank(y.device)
        n = y.numel()
        start = 0
        if sd > 0 and n < bank.numel():
            start = int(torch.randint(0, bank.numel() - n, (1,), generator=self._gen))
        if self.adc_bits > 0 and (sd == 0 or n < bank.numel()):
            return kernels.adc_accumulate(y, self.adc_bits, sd, bank, start, scale, offset)
        if sd > 0:  # beyond the bank, or an ideal ADC: the tensor path
            y = y + sd * cpu_randn(y, self._gen)
        if self.adc_bits > 0:
            half = 2 ** (self.adc_bits - 1)
            y = y.floor().clamp_(-half, half - 1)
        return torch.addcmul(offset, y, scale).sum(1)

    def _digital_tiles(self) -> Tensor:
        return self._tiles(self.weight.detach())[..., : self.out_features]

    def extra_repr(self) -> str:
        s = self.settings
        return (
            f"in={self.in_features}, out={self.out_features}, arrays={self.arrays} "
            f"({self.row_blocks}x{self.col_blocks} blocks of {self.rows}x{self.cols}, pairs), "
            f"chip={s.chip.name}, noise={s.noise.name}, t={self.time_s:g} s"
        )


class AnalogLinear(AnalogMatrix):
    """``nn.Linear`` on the chip: ``y = periphery(DAC(x) @ W_eff) + b`` (batch-first)."""

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        fast = None if (self.training or self._calib is not None) else self._fast()
        if fast is not None:
            return self._forward_fast(x.reshape(-1, self.in_features), fast).reshape(
                *lead, self.out_features
            )
        y = self.matvec(self._dac(x.reshape(-1, self.in_features)))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def _forward_fast(self, x: Tensor, fast: tuple[Tensor, Tensor, Tensor, float, float]) -> Tensor:
        w, scale, offset, inv_lsb, sd = fast
        xq = self._dac_codes(x, inv_lsb)
        m, k = xq.shape
        r = self.row_blocks
        if r == 1:
            y = (xq @ w[0, :k]).unsqueeze(0)
        else:
            xp = F.pad(xq, (0, r * self.rows - k)).view(m, r, self.rows).transpose(0, 1)
            y = torch.bmm(xp, w)
        n = self.out_features
        return self._accumulate(y.unsqueeze(0), scale.view(r, 1, n), offset.view(r, 1, n), sd)[0]


class AnalogConv2d(AnalogMatrix):
    """``nn.Conv2d`` (groups 1, zero padding) on the chip: every output position is one
    matrix-vector product of the unfolded input patch (C·kh·kw values) with the tiles."""

    def __init__(self, conv: nn.Conv2d, settings: AnalogSettings) -> None:
        super().__init__(conv.weight, conv.bias, settings)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)  # type: ignore[arg-type]
        self.dilation = tuple(conv.dilation)

    def _filters(self, w: Tensor) -> Tensor:
        """Effective tiles (R, rows, N) as ``R·N`` conv filters (R·N, C, kh, kw), filter
        ``r·N + n`` zero outside row block ``r``."""
        r, rows, n = w.shape
        k = self.in_features
        block = torch.arange(r * rows, device=w.device) // rows
        mask = (block[None, :] == torch.arange(r, device=w.device)[:, None]).to(w.dtype)
        full = (mask.unsqueeze(-1) * w.reshape(1, r * rows, n))[:, :k]  # (R, K, N)
        return full.permute(0, 2, 1).reshape(r * n, self.in_channels, *self.kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        fast = None if (self.training or self._calib is not None) else self._fast()
        if fast is not None:
            return self._forward_fast(x, fast)
        xq = self._dac(x)
        if self._calib is not None:
            w, alpha = self._digital_tiles(), None
        elif self.training:
            w, alpha = self._sample()
        else:
            if self._w_eff is None:
                self.program(self.seed)
            if self._conv_w is None:
                self._conv_w = self._filters(self._w_eff)  # type: ignore[arg-type]
            w, alpha = self._w_eff, self._alpha
        filt = self._conv_w if not (self.training or self._calib is not None) else self._filters(w)
        y = F.conv2d(xq, filt, None, self.stride, self.padding, self.dilation)
        b, _, ho, wo = y.shape
        y = self._periphery(y.view(b, self.row_blocks, self.out_channels, ho * wo), 1, alpha)
        if self.bias is not None:
            y = y + self.bias.unsqueeze(-1)
        return y.view(b, self.out_channels, ho, wo)

    def _forward_fast(self, x: Tensor, fast: tuple[Tensor, Tensor, Tensor, float, float]) -> Tensor:
        w, scale, offset, inv_lsb, sd = fast
        if self._conv_w is None:
            self._conv_w = self._filters(w)
        xq = self._dac_codes(x, inv_lsb)
        y = F.conv2d(xq, self._conv_w, None, self.stride, self.padding, self.dilation)
        b, _, ho, wo = y.shape
        r, n = self.row_blocks, self.out_channels
        y = self._accumulate(
            y.view(b, r, n, ho * wo), scale.view(r, n, 1), offset.view(r, n, 1), sd
        )
        return y.view(b, n, ho, wo)


def analog_layers(model: nn.Module) -> Iterator[tuple[str, AnalogMatrix]]:
    """(module path, layer) of every analog layer of a deployed model."""
    for name, m in model.named_modules():
        if isinstance(m, AnalogMatrix):
            yield name, m


def program(model: nn.Module, seed: int) -> nn.Module:
    """Program every analog layer of ``model`` afresh (seed ``seed``, layer ``k`` uses
    ``seed * 1009 + k``) and read at t = 0; returns ``model``."""
    for k, (_, m) in enumerate(analog_layers(model)):
        m.program(seed * 1009 + k)
    return model


def set_time(model: nn.Module, t: float) -> nn.Module:
    """Drift every analog layer to ``t`` s after programming (a new draw of the frozen read
    noise) and compensate; returns ``model``."""
    for _, m in analog_layers(model):
        m.set_time(t)
    return model
