"""Batch augmentation in pure torch: a random rotation, scale and shift per image, on whatever device the batch is.

Images move inside a frame whose uncovered border is filled with 0, so callers pass images whose background is
0 (``FeatureClassifierModule`` subtracts the low end of its value range first). A judge of generated digits must
not depend on the exact centring of MNIST's training set; this is the usual remedy (Simard et al. 2003).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def affine(x: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Rotate image i by angle[i] radians (counter-clockwise on screen) and scale it by scale[i] about the centre,
    then move it by shift[i] = (right, down) pixels; bilinear, uncovered pixels 0. ``x`` is (B, C, H, W)."""
    b, _, h, w = x.shape
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output coordinates (x right, y down, in [-1, 1]) to input ones: the inverse transform
    tx, ty = -2 * shift[:, 0] / w, -2 * shift[:, 1] / h
    theta = torch.stack([torch.stack([cos, -sin * h / w, cos * tx - sin * ty * h / w], -1),
                         torch.stack([sin * w / h, cos, sin * tx * w / h + cos * ty], -1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomAffine(nn.Module):
    """A random ``affine`` per image: angle uniform in ±degrees, scale uniform in ``scale``, shift uniform in
    ±translate × side along each axis. Identity in eval mode.

    Args:
        degrees: largest rotation either way, in degrees.
        translate: largest shift, as a fraction of the image side (0.1 of 28 px is 2.8 px).
        scale: (smallest, largest) zoom factor.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1)) -> None:
        super().__init__()
        if degrees < 0 or not 0 <= translate < 0.5 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomAffine needs degrees >= 0, 0 <= translate < 0.5 and 0 < scale[0] <= scale[1]; "
                             f"got degrees={degrees}, translate={translate}, scale={scale}.")
        self.degrees, self.translate, self.scale = float(degrees), float(translate), (float(scale[0]), float(scale[1]))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return x
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]

        def uniform(low: float, high: float, *shape: int) -> Tensor:
            return low + (high - low) * torch.rand(b, *shape, generator=generator, device=x.device)

        angle = uniform(-1.0, 1.0) * math.radians(self.degrees)
        scale = uniform(*self.scale)
        shift = uniform(-self.translate, self.translate, 2) * torch.tensor([w, h], device=x.device, dtype=torch.float32)
        return affine(x, angle, scale, shift)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, translate={self.translate}, scale={self.scale}"
