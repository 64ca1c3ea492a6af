"""Seeded synthetic images with the constructor of the real datamodules, for tests and CI."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from datamodules.base import ImageDataModule


def make_synthetic_images(n: int, size: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Class k is a bright bar through the centre at angle k·π/num_classes, with a random offset and width.

    Learnable and class-dependent, so loss-drop and guidance tests mean something.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = labels.float() * math.pi / num_classes
    offset = (torch.rand(n, generator=g) - 0.5) * 0.4
    width = 0.15 + 0.1 * torch.rand(n, generator=g)
    dist = (xx[None] * torch.sin(angle)[:, None, None] - yy[None] * torch.cos(angle)[:, None, None]) - offset[:, None, None]
    img = torch.exp(-(dist**2) / (2 * width[:, None, None] ** 2))
    return (img * 255).round().to(torch.uint8), labels


class SyntheticDataModule(ImageDataModule):
    """Drop-in replacement for MNISTDataModule in tests: the same arguments plus these.

    Args:
        num_samples: size of the synthetic training split (the test split has a quarter as many).
        seed: generator seed of the images.
    """

    name = "synthetic"

    def __init__(self, num_samples: int = 256, seed: int = 0, num_workers: int = 0, **kwargs: Any) -> None:
        super().__init__(num_workers=num_workers, **kwargs)
        self.num_samples = num_samples
        self.seed = seed

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        n = self.num_samples if split == "train" else max(self.num_samples // 4, 1)
        self.info["source"] = f"synthetic(seed={self.seed})"
        return make_synthetic_images(n, self.image_size, self.num_classes, self.seed + (split != "train"))
