"""Inference noise models: what happens to a conductance between programming and a read.

Conductances are normalised by the chip's ``g_max``: y = G / g_max (the convention of
:mod:`npusim.devices.pulsed`). A model turns target conductances ``y_T`` into

* programmed conductances ``y_P = program(y_T)`` (programming error, optional
  program-and-verify iterations, stuck devices),
* per-device drift exponents ``nu = drift_nu(y_T)`` and ``y(t) = y_P (t / t0)^(-nu)``
  for ``t > t0`` (:func:`npusim.devices.pulsed.drift`),
* the standard deviation of one read at time ``t``, ``read_std(y(t), y_T, t)``
  (normalised), including the 1/f growth with the observation time.

A device family is one file that subclasses :class:`InferenceNoise` and registers itself
with :func:`register`; :func:`noise_for` picks a chip's family.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from npusim.chip.spec import ChipSpec
from npusim.core.errors import NpusimError
from npusim.devices.pulsed import drift


class DeployError(NpusimError, ValueError):
    """A model cannot be deployed as asked (unsupported layer, too large, bad option)."""


class InferenceNoise(ABC):
    """One device family's inference statistics on a chip (normalised conductances).

    ``out_noise`` and ``wire_ohm`` (periphery constants the ChipSpec does not carry) default to
    each family's cited values and can be overridden.
    ``verify_iterations`` (count): program-and-verify rounds after the first write; a round
    re-programs every device whose error exceeds ``verify_tolerance`` (normalised) with a
    fresh, independent write (Papandreou et al., ISCAS 2011, iterative program-and-verify).
    Stuck devices (``device.stuck_min_fraction`` / ``stuck_max_fraction`` of the chip) sit
    at ``g_min`` / ``g_max`` whatever was programmed.
    """

    name: str = "base"
    #: s.d. of additive noise at an ADC input, as a fraction of its full range (normalised)
    out_noise: float = 0.0
    #: wire resistance of one cell segment of a row or column line (Ω)
    wire_ohm: float = 0.0

    def __init__(
        self,
        chip: ChipSpec,
        verify_iterations: int = 0,
        verify_tolerance: float = 0.01,
        out_noise: float | None = None,
        wire_ohm: float | None = None,
    ) -> None:
        self.chip = chip
        if out_noise is not None:
            self.out_noise = float(out_noise)
        if wire_ohm is not None:
            self.wire_ohm = float(wire_ohm)
        dev = chip.device
        self.y_min = dev.g_min / dev.g_max
        self.y_max = 1.0
        self.t0 = dev.drift_t0
        self.verify_iterations = int(verify_iterations)
        self.verify_tolerance = float(verify_tolerance)
        self.stuck_min = dev.stuck_min_fraction
        self.stuck_max = dev.stuck_max_fraction

    # ---- a family implements these ------------------------------------------------------
    @abstractmethod
    def program_std(self, y_target: Tensor) -> Tensor:
        """Standard deviation (normalised) of one write aimed at ``y_target``."""

    @abstractmethod
    def drift_nu(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        """Per-device drift exponents (dimensionless), same shape as ``y_target``."""

    @abstractmethod
    def read_std(self, y_t: Tensor, y_target: Tensor, t: float) -> Tensor:
        """Standard deviation (normalised) of one read at ``t`` s after programming."""

    # ---- shared machinery ----------------------------------------------------------------
    def write(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        """One open-loop write: ``y_T + N(0, program_std(y_T))``, kept >= 0."""
        noise = cpu_randn(y_target, gen)
        return (y_target + noise * self.program_std(y_target)).clamp_(min=0.0)

    def program(self, y_target: Tensor, gen: torch.Generator) -> Tensor:
        """Programmed conductances: a write, ``verify_iterations`` verify rounds, stuck cells."""
        y = self.write(y_target, gen)
        for _ in range(self.verify_iterations):
            bad = (y - y_target).abs() > self.verify_tolerance
            y = torch.where(bad, self.write(y_target, gen), y)
        return self.apply_stuck(y, self.stuck_mask(y.shape, gen, y.device))

    def program_pair(self, y_target: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Program differential pairs ``y_target`` (2, ...) = (G+, G−) targets; returns the
        programmed conductances and the targets finally aimed at. As :meth:`program`; with
        ``verify_iterations`` > 0 the verify step also reads each pair's difference, and when
        one device of a pair is stuck it re-aims the working partner so that the difference
        meets its target where the partner's range allows (fault-aware pair programming)."""
        y = self.write(y_target, gen)
        for _ in range(self.verify_iterations):
            bad = (y - y_target).abs() > self.verify_tolerance
            y = torch.where(bad, self.write(y_target, gen), y)
        mask = self.stuck_mask(y.shape, gen, y.device)
        y = self.apply_stuck(y, mask)
        aim = y_target
        if not bool((mask > 0).any()):
            return y, aim
        if self.verify_iterations > 0:
            d = y_target[0] - y_target[1]
            sp, sm = mask[0] > 0, mask[1] > 0
            aim_m = torch.where(sp & ~sm, (y[0] - d).clamp(self.y_min, self.y_max), y_target[1])
            aim_p = torch.where(sm & ~sp, (y[1] + d).clamp(self.y_min, self.y_max), y_target[0])
            aim = torch.stack([aim_p, aim_m])
            moved = torch.stack([sm & ~sp, sp & ~sm])
            y = torch.where(moved, self.write(aim, gen), y)
        return y, self.apply_stuck(aim, mask)  # a stuck device drifts and reads as its state

    def stuck_mask(
        self,
        shape: torch.Size | tuple[int, ...],
        gen: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Per device: 0 working, 1 stuck at g_min, 2 stuck at g_max (int8), drawn on the CPU
        (``gen``) and placed on ``device``."""
        u = torch.rand(shape, generator=gen)
        out = torch.zeros(shape, dtype=torch.int8)
        out[u < self.stuck_min] = 1
        out[(u >= self.stuck_min) & (u < self.stuck_min + self.stuck_max)] = 2
        return out.to(device)

    def apply_stuck(self, y: Tensor, mask: Tensor) -> Tensor:
        """``y`` with stuck devices at their bound."""
        y = torch.where(mask == 1, torch.full_like(y, self.y_min), y)
        return torch.where(mask == 2, torch.full_like(y, self.y_max), y)

    def drifted(self, y_prog: Tensor, nu: Tensor, t: float) -> Tensor:
        """``y_P (t / t0)^(-nu)`` for ``t > t0`` (else ``y_P``), on ``y_prog``'s device."""
        if y_prog.device.type == "cpu" or t <= self.t0:
            return drift(y_prog, nu, t, self.t0)
        ratio = torch.tensor(t / self.t0, dtype=y_prog.dtype, device=nu.device)
        return y_prog * torch.pow(ratio, -nu)


def cpu_randn(like: Tensor, gen: torch.Generator) -> Tensor:
    """Standard normals of ``like``'s shape and dtype drawn from the CPU generator ``gen`` and
    placed on ``like``'s device (the same numbers wherever the tensors live)."""
    return torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)


def one_over_f_growth(t: float, t_read: float, t_ref: float) -> float:
    """sqrt(ln((t + t_r) / (2 t_r)) / ln((t_ref + t_r) / (2 t_r))): how the s.d. of 1/f read
    noise integrated from 1/t to the read bandwidth 1/(2 t_r) grows from ``t_ref`` to ``t`` (s)
    (Nandakumar et al., ICECS 2019, eq. for sigma_nG). ``t`` is floored at ``t_ref``."""
    t = max(t, t_ref)
    return math.sqrt(
        math.log((t + t_read) / (2 * t_read)) / math.log((t_ref + t_read) / (2 * t_read))
    )


FAMILIES: dict[str, Callable[..., InferenceNoise]] = {}


def register(name: str) -> Callable[[type[InferenceNoise]], type[InferenceNoise]]:
    """Class decorator: make a family available as ``noise=name``."""

    def deco(cls: type[InferenceNoise]) -> type[InferenceNoise]:
        cls.name = name
        FAMILIES[name] = cls
        return cls

    return deco


def noise_for(chip: ChipSpec, family: str | None = None, **kw: float) -> InferenceNoise:
    """The inference noise model of ``chip``: ``family`` if given, else ``ideal`` for an ideal
    device model, else the chip's ``device.inference_noise`` (``chip``: its own parameters;
    ``pcm``: Nandakumar et al. 2019)."""
    if family is None:
        family = "ideal" if chip.device.model == "ideal" else chip.device.inference_noise
    if family not in FAMILIES:
        raise DeployError(f"unknown noise family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[family](chip, **kw)
