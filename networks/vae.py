"""Convolutional VAE with a spatial latent, after seed 002 §5.2 (Listings 5.14-5.18).

Encoder: conv_in → per level [ResidualBlock × num_res_blocks (+ attention) , Downsample except last]
→ ResBlock-Attention-ResBlock → GroupNorm-SiLU-conv → (μ, log σ²), log σ² clamped to [−30, 20].
Decoder mirrors it and ends in a zero-initialised conv and a sigmoid, so it outputs 0.5 at start.
The latent has ``latent_channels`` × (image_size / 2^(len(channel_multipliers)−1))².
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.unet import group_norm


class ResidualBlock(nn.Module):
    """GN-SiLU-Conv, GN-SiLU-Dropout-Conv, plus a 1×1 (or 3×3) shortcut when widths differ (Listing 5.14)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, dropout: float = 0.0, groups: int = 8) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.norm1, self.conv1 = group_norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch, groups), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention with a zero-initialised output projection (Listing 5.15)."""

    def __init__(self, ch: int, groups: int = 8) -> None:
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, HW, C) each
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √C) v
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Encoder(nn.Module):
    def __init__(
        self, in_channels: int, base_channels: int, channel_multipliers: Sequence[int], num_res_blocks: int,
        attention_levels: Sequence[int], latent_channels: int, dropout: float, groups: int,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_multipliers]
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        blocks, ch = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(ch, width, dropout, groups))
                ch = width
                if level in attention_levels:
                    blocks.append(AttentionBlock(ch, groups))
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.down_blocks = nn.Sequential(*blocks)
        self.mid = nn.Sequential(ResidualBlock(ch, ch, dropout, groups), AttentionBlock(ch, groups),
                                 ResidualBlock(ch, ch, dropout, groups))
        self.norm_out = group_norm(ch, groups)
        self.conv_out = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mid(self.down_blocks(self.conv_in(x)))
        mu, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(
        self, out_channels: int, base_channels: int, channel_multipliers: Sequence[int], num_res_blocks: int,
        attention_levels: Sequence[int], latent_channels: int, dropout: float, groups: int,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_multipliers]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.mid = nn.Sequential(ResidualBlock(ch, ch, dropout, groups), AttentionBlock(ch, groups),
                                 ResidualBlock(ch, ch, dropout, groups))
        blocks = []
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(ch, widths[level], dropout, groups))
                ch = widths[level]
                if level in attention_levels:
                    blocks.append(AttentionBlock(ch, groups))
            if level > 0:
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
        self.up_blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(ch, groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up_blocks(self.mid(self.conv_in(z)))
        return torch.sigmoid(self.conv_out(F.silu(self.norm_out(h))))  # in [0, 1]


class VAE(nn.Module):
    """Spatial-latent VAE. ``forward(x) → (x_rec in [0, 1], μ, log σ²)``.

    Args:
        in_channels: image channels.
        base_channels: width of the first level (seed 002 searched 16, 32, 64).
        channel_multipliers: width multiplier per level; every level but the last halves the resolution.
        num_res_blocks: residual blocks per level.
        attention_levels: levels (0 = full resolution) that get an attention block after each residual block.
        latent_channels: channels of the spatial latent (seed 002 searched 8-64).
        dropout: dropout inside residual blocks (seed 002 searched 0-0.3).
        groups: GroupNorm groups.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_multipliers: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] = (),
        latent_channels: int = 16,
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        args = (base_channels, list(channel_multipliers), num_res_blocks, list(attention_levels), latent_channels,
                dropout, groups)
        self.encoder = Encoder(in_channels, *args)
        self.decoder = Decoder(in_channels, *args)
        self.latent_channels = latent_channels
        self.downsample_factor = 2 ** (len(channel_multipliers) - 1)

    def latent_size(self, image_size: int) -> int:
        """H' = image_size // 2^(len(multipliers) − 1) (Listing 5.20)."""
        return image_size // self.downsample_factor

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % self.downsample_factor:
            raise ValueError(f"image size {x.shape[-1]} must be divisible by {self.downsample_factor}.")
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @staticmethod
    def sample(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterisation z = μ + σ ⊙ ε (seed 002 Eq. 3.10)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar)), mu, logvar


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ (1 + log σ² − μ² − σ²), summed per sample, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).flatten(1).sum(1).mean()


def reconstruction_loss(x_rec: Tensor, x: Tensor, kind: str) -> Tensor:
    """Reconstruction loss per sample (summed over pixels), averaged over the batch: mse, bce or l1."""
    if kind == "mse":
        per = F.mse_loss(x_rec, x, reduction="none")
    elif kind == "bce":
        per = F.binary_cross_entropy(x_rec.clamp(1e-6, 1 - 1e-6), x, reduction="none")
    elif kind == "l1":
        per = F.l1_loss(x_rec, x, reduction="none")
    else:
        raise ValueError(f"Unknown recon_loss {kind!r}: choose mse, bce or l1.")
    return per.flatten(1).sum(1).mean()


__all__ = ["VAE", "ResidualBlock", "AttentionBlock", "kl_divergence", "reconstruction_loss"]
