"""A small CNN classifier whose penultimate layer is an in-domain feature space for FID/KID (seed 000 §1.8)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    groups = 8 if c_out % 8 == 0 else 1  # GroupNorm, not BatchNorm: identical in train/eval and under DDP
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU(),
    )


class FeatureCNN(nn.Module):
    """Three conv stages (width, 2·width, 4·width; ½ pooling between) → global average → feature_dim → classes.

    ``features(x)`` is the penultimate activation (B, feature_dim) used as the FID/KID embedding;
    ``head(features)`` gives the class logits (used for the Inception Score).
    """

    ARGS = ("in_channels", "num_classes", "image_size", "width", "feature_dim", "dropout")

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 32,
                 feature_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            conv_block(in_channels, width), nn.MaxPool2d(2),
            conv_block(width, 2 * width), nn.MaxPool2d(2),
            conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, feature_dim), nn.SiLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()
