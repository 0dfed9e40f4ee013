"""Training-time image augmentation on flattened, batch-first image tensors."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def augment_images(
    x: Tensor, shape: tuple[int, ...], shift: int, flip: bool, g: torch.Generator
) -> Tensor:
    """Randomly shifted (and mirrored) copies of flattened images.

    ``x`` is (n, features) with ``features = prod(shape)``; ``shape`` is (h, w) for one
    channel or (c, h, w), channel-first. Each image moves by a whole-pixel offset drawn
    uniformly from [−shift, shift]² (pixels), the same for all its channels, with zero fill:
    a random crop of the zero-padded image. Then, if ``flip``, each image is mirrored
    left-right with probability 1/2. Draws from ``g``: the offsets as one (2, n) randint, then
    n uniforms for the flips, so for one channel and no flip this is bit-for-bit the shift the
    training loop has always made. With ``shift`` 0 and no flip, ``x`` itself is returned.
    """
    if len(shape) not in (2, 3) or math.prod(shape) != x.shape[-1] or x.dim() != 2:
        raise ValueError(f"images of shape {tuple(shape)} do not match inputs {tuple(x.shape)}")
    if shift < 0:
        raise ValueError(f"shift must be ≥ 0 pixels, got {shift}")
    if shift == 0 and not flip:
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
    if flip:
        mirror = (torch.rand(n, generator=g, device=g.device) < 0.5).to(dev)
        img = torch.where(mirror[:, None, None, None], img.flip(-1), img)
    return img.reshape(n, c * h * w)
