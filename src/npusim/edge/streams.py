"""Streams whose distribution shifts away from what a run trained on: pure, seeded, vectorised
functions of image tensors, and :func:`make_stream`, which builds a stream and its held-out
evaluation sets from a dataset.

Images are rows of ``x`` (batch, h·w) in [0, 1] with ``shape = (h, w)``. Every shift is stated
in fractions of the image size, so the same stream means the same thing on 8×8 ``digits`` and on
28×28 MNIST.

* ``rotate``: a tilted, farther sensor: each digit rotated counter-clockwise by an angle in
  ``ROTATE_DEG`` and shrunk by a factor in ``SCALE`` about its centre.
* ``writer``: a new writer, as elastic distortion (Simard et al., ICDAR 2003): a smoothed random
  displacement field. The writer's own field is drawn once per stream (their style); each
  sample adds a weaker field of its own.
* ``classes``: the classes the run did not train on (it trained on a subset, e.g. 0–4; the
  stream brings 5–9).
* ``noise``: a noisy sensor: a fixed-pattern offset per pixel (drawn once per stream) plus
  fresh Gaussian noise per sample, clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from npusim.core.errors import NpusimError
from npusim.data.datasets import Dataset

STREAMS = ("rotate", "writer", "classes", "noise")

# The shifts (chosen so that the trained chip loses a large part of its accuracy, yet a network
# of the same size can learn the shifted data).
ROTATE_DEG = (25.0, 45.0)  # rotation angle range (degrees, counter-clockwise)
SCALE = (0.75, 0.9)  # rescaling factor range (the digit shrinks)
WRITER_SIGMA = 0.15  # smoothing of the displacement fields (Gaussian s.d., fraction of width)
WRITER_RMS = 0.10  # RMS displacement of the writer's own field (fraction of the image width)
SAMPLE_RMS = 0.03  # RMS displacement of each sample's own field (fraction of the image width)
NOISE_STD = 0.25  # Gaussian sensor noise per pixel and sample (fraction of full scale)
PATTERN_STD = 0.25  # fixed-pattern offset per pixel (fraction of full scale)


class StreamError(NpusimError, ValueError):
    """A stream cannot be made as asked (unknown name, no class left to bring, ...)."""


def _images(x: Tensor, shape: tuple[int, int]) -> Tensor:
    h, w = shape
    return x.reshape(x.shape[0], 1, h, w)


def rotate_scale(x: Tensor, shape: tuple[int, int], angle_rad: Tensor, scale: Tensor) -> Tensor:
    """Each image rotated by ``angle_rad`` (rad, one per image) and its content scaled by
    ``scale`` (one per image) about the image centre; bilinear, zero outside."""
    n = x.shape[0]
    cos, sin = torch.cos(angle_rad) / scale, torch.sin(angle_rad) / scale
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin  # output -> input coordinates
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    grid = F.affine_grid(theta, [n, 1, *shape], align_corners=False)
    out = F.grid_sample(_images(x, shape), grid, align_corners=False)
    return out.reshape(n, -1).clamp(0.0, 1.0)


def smooth_field(
    n: int, shape: tuple[int, int], sigma: float, rms: float, g: torch.Generator
) -> Tensor:
    """``n`` random displacement fields (n, h, w, 2), in normalised grid units ([-1, 1] spans
    the image): uniform noise smoothed by a Gaussian of s.d. ``sigma`` (fraction of the width),
    scaled so each field's RMS displacement is ``rms`` of the image width."""
    h, w = shape
    u = torch.rand(n, 2, h, w, generator=g) * 2 - 1
    s = max(sigma * w, 1e-3)  # pixels
    r = max(1, math.ceil(3 * s))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = (k / k.sum()).to(u.dtype)
    u = F.conv2d(u.reshape(2 * n, 1, h, w), k.view(1, 1, 1, -1), padding=(0, r))
    u = F.conv2d(u, k.view(1, 1, -1, 1), padding=(r, 0)).reshape(n, 2, h, w)
    norm = u.pow(2).sum(1).mean((1, 2)).sqrt().clamp_min(1e-12)  # RMS length per field
    u = u * (2 * rms / norm).view(n, 1, 1, 1)  # a width is 2 normalised units
    return u.permute(0, 2, 3, 1)


def elastic(x: Tensor, shape: tuple[int, int], displacement: Tensor) -> Tensor:
    """Each image resampled at its pixel positions moved by ``displacement`` (n, h, w, 2) in
    normalised grid units (x, y), e.g. from :func:`smooth_field`; bilinear, zero outside."""
    n = x.shape[0]
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=x.dtype).expand(n, 2, 3)
    grid = F.affine_grid(eye, [n, 1, *shape], align_corners=False) + displacement
    out = F.grid_sample(_images(x, shape), grid, align_corners=False)
    return out.reshape(n, -1).clamp(0.0, 1.0)


def sensor_noise(x: Tensor, pattern: Tensor, std: float, g: torch.Generator) -> Tensor:
    """``x`` + a fixed per-pixel offset ``pattern`` (features,) + Gaussian noise of s.d.
    ``std`` drawn per sample and pixel, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype) * std
    return (x + pattern + noise).clamp(0.0, 1.0)


@dataclass
class Shift:
    """A seeded shift of a stream: its fixed part (the writer's field, the sensor's pattern)
    is drawn once from ``seed``; :meth:`apply` draws each sample's own part from ``g``."""

    name: str
    shape: tuple[int, int]
    seed: int
    fixed: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed * 7919 + 17)
        if self.name == "writer":
            self.fixed = smooth_field(1, self.shape, WRITER_SIGMA, WRITER_RMS, g)
        elif self.name == "noise":
            self.fixed = torch.randn(self.shape[0] * self.shape[1], generator=g) * PATTERN_STD

    def apply(self, x: Tensor, g: torch.Generator) -> Tensor:
        """The shifted images (the ``classes`` stream does not change images)."""
        n = x.shape[0]
        if self.name == "rotate":
            lo, hi = (math.radians(d) for d in ROTATE_DEG)
            angle = lo + (hi - lo) * torch.rand(n, generator=g)
            scale = SCALE[0] + (SCALE[1] - SCALE[0]) * torch.rand(n, generator=g)
            return rotate_scale(x, self.shape, angle, scale)
        if self.name == "writer":
            own = smooth_field(n, self.shape, WRITER_SIGMA, SAMPLE_RMS, g)
            return elastic(x, self.shape, self.fixed + own)
        if self.name == "noise":
            return sensor_noise(x, self.fixed, NOISE_STD, g)
        return x

    def settings(self) -> dict:
        """The shift's parameters, for edge.json."""
        if self.name == "rotate":
            return {"rotation_deg_counter_clockwise": list(ROTATE_DEG), "scale": list(SCALE)}
        if self.name == "writer":
            return {
                "smoothing_sigma_of_width": WRITER_SIGMA,
                "writer_rms_displacement_of_width": WRITER_RMS,
                "sample_rms_displacement_of_width": SAMPLE_RMS,
            }
        if self.name == "noise":
            return {"noise_std": NOISE_STD, "fixed_pattern_std": PATTERN_STD}
        return {}


@dataclass
class Stream:
    """A shifting stream and its held-out evaluation sets.

    ``x``, ``y``: the stream, in order (samples, features) and (samples,). ``new_x``/``new_y``:
    held-out samples of the new distribution; ``old_x``/``old_y``: held-out samples of the
    distribution the run trained on. ``trained_classes``/``new_classes``: label sets.
    ``pool_x``/``pool_y``: the run's own training samples (what a replay buffer stores)."""

    name: str
    x: Tensor
    y: Tensor
    new_x: Tensor
    new_y: Tensor
    old_x: Tensor
    old_y: Tensor
    trained_classes: list[int]
    new_classes: list[int]
    pool_x: Tensor
    pool_y: Tensor
    settings: dict


def _of(x: Tensor, y: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
    mask = torch.isin(y, torch.tensor(classes))
    return x[mask], y[mask]


def make_stream(
    name: str,
    data: Dataset,
    trained_classes: list[int] | None,
    samples: int,
    seed: int,
    eval_split: str = "test",
) -> Stream:
    """Stream ``name`` (one of :data:`STREAMS`) of ``samples`` samples from ``data``'s training
    split, in a seeded order (cycled through when it needs more samples than the split holds),
    with evaluation sets from ``eval_split``. ``trained_classes``: the classes the run trained
    on (None: all). The ``classes`` stream brings the other classes; the others bring the
    trained classes, shifted."""
    if name not in STREAMS:
        raise StreamError(f"unknown stream {name!r}; choose one of {', '.join(STREAMS)}")
    if samples < 1:
        raise StreamError(f"a stream needs at least 1 sample, got {samples}")
    every = list(range(data.num_classes))
    known = sorted(trained_classes) if trained_classes is not None else every
    new_classes = [c for c in every if c not in known] if name == "classes" else known
    if not new_classes:
        raise StreamError(
            "--stream classes brings the classes a run did not train on, but this run trained "
            "on all of them; train the run on a subset (e.g. npusim train --classes 0-4)"
        )
    if len(data.image_shape) != 2:
        raise StreamError(f"the {name} stream shifts one-channel images; {data.name} has colour")
    shift = Shift(name, data.image_shape, seed)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed * 1_000_003 + 11)
    xs, ys = _of(data.x_train, data.y_train, new_classes)
    order = torch.cat(
        [torch.randperm(len(xs), generator=g) for _ in range(math.ceil(samples / len(xs)))]
    )[:samples]
    x, y = shift.apply(xs[order], g), ys[order]
    ex, ey = data.split(eval_split)
    new_x, new_y = _of(ex, ey, new_classes)
    g_eval = torch.Generator().manual_seed(seed * 1_000_003 + 12)
    new_x = shift.apply(new_x, g_eval)
    old_x, old_y = _of(ex, ey, known)
    pool_x, pool_y = _of(data.x_train, data.y_train, known)
    return Stream(
        name, x, y, new_x, new_y, old_x, old_y, known, new_classes, pool_x, pool_y,
        shift.settings(),
    )  # fmt: skip
