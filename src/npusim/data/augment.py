"""Training-time image augmentation on flattened, batch-first image tensors."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def augment_images(
    x: Tensor,
    shape: tuple[int, ...],
    shift: int,
    flip: bool,
    g: torch.Generator,
    rotate: float = 0.0,
    zoom: float = 0.0,
) -> Tensor:
    """Randomly shifted (rotated, zoomed and mirrored) copies of flattened images.

    ``x`` is (n, features) with ``features = prod(shape)``; ``shape`` is (h, w) for one
    channel or (c, h, w), channel-first. Each image moves by a whole-pixel offset drawn
    uniformly from [−shift, shift]² (pixels), the same for all its channels, with zero fill:
    a random crop of the zero-padded image. Then, if ``rotate`` (degrees) or ``zoom`` (a
    fraction) is set, each image is turned about its centre by an angle drawn uniformly from
    [−rotate, rotate] and scaled by a factor drawn uniformly from [1 − zoom, 1 + zoom]
    (bilinear resampling, zero fill: :func:`random_affine`). Then, if ``flip``, each image is
    mirrored left-right with probability 1/2. Draws from ``g``: the offsets as one (2, n)
    randint, then n angles and n scales when rotating or zooming, then n uniforms for the
    flips, so for one channel, no flip, no rotation and no zoom this is bit-for-bit the shift
    the training loop has always made. With nothing to do, ``x`` itself is returned.
    """
    if len(shape) not in (2, 3) or math.prod(shape) != x.shape[-1] or x.dim() != 2:
        raise ValueError(f"images of shape {tuple(shape)} do not match inputs {tuple(x.shape)}")
    if shift < 0:
        raise ValueError(f"shift must be ≥ 0 pixels, got {shift}")
    if not (0.0 <= rotate <= 180.0 and 0.0 <= zoom < 1.0):
        raise ValueError(
            f"rotate must be in [0, 180] degrees and zoom in [0, 1), got {rotate}, {zoom}"
        )
    if shift == 0 and not flip and not rotate and not zoom:
        return x
    c, h, w = (1, *shape) if len(shape) == 2 else shape
    n, dev = x.shape[0], x.device
    img = x.reshape(n, c, h, w)
    if shift > 0:
        img = torch.nn.functional.pad(img, (shift, shift, shift, shift))
        dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=g, device=g.device).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        samples = torch.arange(n, device=dev)[:, None, None, None]
        img = img[samples, torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    if rotate or zoom:
        img = random_affine(img, rotate, zoom, g)
    if flip:
        mirror = (torch.rand(n, generator=g, device=g.device) < 0.5).to(dev)
        img = torch.where(mirror[:, None, None, None], img.flip(-1), img)
    return img.reshape(n, c * h * w)


def random_affine(img: Tensor, rotate: float, zoom: float, g: torch.Generator) -> Tensor:
    """``img`` (n, c, h, w), each image rotated about its centre by an angle uniform in
    [−rotate, rotate] degrees and scaled by a factor uniform in [1 − zoom, 1 + zoom]; bilinear
    resampling, zero outside the image. Draws n angles, then n scales, from ``g``."""
    n = img.shape[0]
    angle = (torch.rand(n, generator=g, device=g.device) * 2 - 1) * math.radians(rotate)
    scale = 1 + (torch.rand(n, generator=g, device=g.device) * 2 - 1) * zoom
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)  # output pixel p samples the input at R(angle) p / scale
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], 1).view(n, 2, 3)
    theta = theta.to(img.device, img.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
    return torch.nn.functional.grid_sample(img, grid, align_corners=False)
