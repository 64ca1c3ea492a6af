"""Background cleanliness of dark-background images (MNIST, Fashion-MNIST): salt-and-pepper speckle and haze.

Real MNIST backgrounds are exactly 0, so any light pixel far from the digit is a sampler or model artefact.
Two numbers; compare them with the same numbers on real images of the data set (real MNIST: ~0; Fashion-MNIST's
dark garment parts count as background, so its real haze is above 0):

- ``isolated_rate``: pixels brighter than ``on`` whose 8 neighbours are all darker than ``off``, per 1,000 pixels
  (salt speckle: strokes and garments are never one pixel wide after anti-aliasing);
- ``haze``: the share of background pixels brighter than ``off``, where background means farther than
  ``margin`` pixels from any object pixel (above ``object_level`` with a neighbour above it too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _neighbour_max(x: Tensor) -> Tensor:
    """Maximum over the 8 neighbours of every pixel (the centre excluded); borders see 0."""
    padded = F.pad(x, (1, 1, 1, 1), value=0.0)
    h, w = x.shape[-2:]
    shifts = [padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    return torch.stack(shifts).amax(0)


def speckle_stats(images: Tensor, on: float = 0.25, off: float = 0.1, object_level: float = 0.5,
                  margin: int = 3) -> dict[str, float]:
    """Speckle and haze of images (B, C, H, W) in [0, 1]; channels are averaged first.

    Returns ``isolated_rate`` (isolated bright pixels per 1,000 pixels) and ``haze`` (share of background
    pixels above ``off``; nan when no image has background).
    """
    if images.ndim != 4:
        raise ValueError(f"speckle_stats expects images (B, C, H, W), got shape {tuple(images.shape)}.")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("speckle_stats expects images in [0, 1]; convert with callbacks.sample_grid.to_unit_range.")
    x = images.float().mean(1, keepdim=True)
    neighbours = _neighbour_max(x)
    isolated = (x > on) & (neighbours < off)
    solid = (x > object_level) & (neighbours > object_level)  # object pixels; a lone bright speck is not one
    near_object = F.max_pool2d(solid.float(), 2 * margin + 1, stride=1, padding=margin) > 0
    background = ~near_object
    bright = (x > off) & background
    return {
        "isolated_rate": float(isolated.float().mean() * 1000),
        "haze": float(bright.sum() / background.sum()) if background.any() else float("nan"),
    }
