"""Configurable U-Net denoiser ε_θ(x_t, t, y), after seed 002 §3 (Listings 5.2-5.6).

Layout: conv_in → DownBlocks (resnet units + optional MHSA, then a 4×4 stride-2 conv) → MidBlock
(resnet, [MHSA, resnet]) → UpBlocks (transposed conv, concatenated skip, resnet units + MHSA) → GroupNorm
→ SiLU → conv_out. Skips are taken before each DownBlock, at the pre-downsampling resolution (§3.7).
Optional ``cond_channels`` adds seed 002's DiffuseVAE fusion (1×1 convs at input, down path and skips).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.embeddings import TimeClassEmbedding


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResnetUnit(nn.Module):
    """GN-SiLU-Conv, + time embedding, GN-SiLU-Dropout-Conv, + 1×1 residual (seed 002 MidBlock resnet unit).

    ``scale_shift`` conditions by adaptive GroupNorm instead of addition: the embedding gives a per-channel
    scale and shift of the second GroupNorm's output, h = GN(h)·(1 + s) + b (Dhariwal & Nichol 2021, §3, AdaGN),
    so time and class modulate the features multiplicatively at the cost of one wider linear layer.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, groups: int = 8,
                 scale_shift: bool = False) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.conv_first = nn.Sequential(group_norm(in_ch, groups), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.t_emb_layer = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch))
        self.conv_second = nn.Sequential(
            group_norm(out_ch, groups), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.conv_second[-1].weight)  # each unit starts as the identity: faster early training
        nn.init.zeros_(self.conv_second[-1].bias)
        self.residual_input_conv = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv_first(x)
        e = self.t_emb_layer(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            norm, rest = self.conv_second[0], self.conv_second[1:]
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.conv_second(h + e)
        return h + self.residual_input_conv(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W tokens, added residually (Listing 5.2, lines 21-24)."""

    def __init__(self, channels: int, num_heads: int, groups: int = 8) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}.")
        self.norm = group_norm(channels, groups)
        self.attention = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class DownBlock(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, num_layers: int, attention: bool, num_heads: int,
        down_sample: bool, dropout: float, groups: int, scale_shift: bool = False,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetUnit(in_ch if i == 0 else out_ch, out_ch, emb_dim, dropout, groups, scale_shift) for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            SelfAttention(out_ch, num_heads, groups) if attention else nn.Identity() for _ in range(num_layers)
        )
        self.down_sample_conv = nn.Conv2d(out_ch, out_ch, 4, 2, 1) if down_sample else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(x, emb))
        return self.down_sample_conv(x)


class MidBlock(nn.Module):
    """resnet, then num_layers × [MHSA, resnet] (Listing 5.3)."""

    def __init__(self, ch: int, emb_dim: int, num_layers: int, num_heads: int, dropout: float, groups: int,
                 scale_shift: bool = False) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetUnit(ch, ch, emb_dim, dropout, groups, scale_shift) for _ in range(num_layers + 1))
        self.attentions = nn.ModuleList(SelfAttention(ch, num_heads, groups) for _ in range(num_layers))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.resnets[0](x, emb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x), emb)
        return x


class UpBlock(nn.Module):
    """Upsample, concatenate the skip, then resnet units + MHSA (Listing 5.4)."""

    def __init__(
        self, in_ch: int, skip_ch: int, out_ch: int, emb_dim: int, num_layers: int, attention: bool,
        num_heads: int, up_sample: bool, dropout: float, groups: int, scale_shift: bool = False,
    ) -> None:
        super().__init__()
        self.up_sample_conv = nn.ConvTranspose2d(in_ch, in_ch, 4, 2, 1) if up_sample else nn.Identity()
        self.resnets = nn.ModuleList(
            ResnetUnit(in_ch + skip_ch if i == 0 else out_ch, out_ch, emb_dim, dropout, groups, scale_shift)
            for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            SelfAttention(out_ch, num_heads, groups) if attention else nn.Identity() for _ in range(num_layers)
        )

    def forward(self, x: Tensor, skip: Tensor, emb: Tensor) -> Tensor:
        x = torch.cat([self.up_sample_conv(x), skip], dim=1)
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(x, emb))
        return x


class UNet(nn.Module):
    """Configurable U-Net for ε-, x0- or v-prediction.

    Args:
        in_channels: image channels.
        channels: width per level; level i maps channels[i] → channels[i+1], so there are len−1 down blocks.
        down_sample: per down block, whether it halves the resolution (default: all do).
        attention: per down block (mirrored in the up path), whether it has self-attention.
        num_layers: resnet units per down/up block (and MHSA+resnet pairs in the mid block).
        num_heads: heads of every self-attention layer (seed 002 best: 4).
        t_emb_dim: sinusoidal time-embedding width (seed 002 best: 128).
        num_classes: > 0 adds a class embedding with a null token for classifier-free guidance.
        dropout: dropout inside the resnet units.
        groups: GroupNorm groups (seed 002: 8).
        cond_channels: > 0 adds seed 002's DiffuseVAE fusion convs for an image condition.
        scale_shift: condition the resnet units by adaptive GroupNorm (scale and shift from the time/class
            embedding) instead of adding the embedding (``ResnetUnit``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        down_sample: Sequence[bool] | None = None,
        attention: Sequence[bool] | None = None,
        num_layers: int = 2,
        num_heads: int = 4,
        t_emb_dim: int = 128,
        num_classes: int = 0,
        dropout: float = 0.0,
        groups: int = 8,
        cond_channels: int = 0,
        scale_shift: bool = False,
    ) -> None:
        super().__init__()
        channels = list(channels)
        n_down = len(channels) - 1
        if n_down < 1:
            raise ValueError(f"channels needs at least two entries, got {channels}.")
        down_sample = list(down_sample) if down_sample is not None else [True] * n_down
        attention = list(attention) if attention is not None else [False] * (n_down - 1) + [True]
        for name, flags in (("down_sample", down_sample), ("attention", attention)):
            if len(flags) != n_down:
                raise ValueError(f"{name} needs {n_down} entries (one per down block), got {flags}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.cond_channels = cond_channels
        self.downsample_factor = 2 ** sum(down_sample)

        self.embedding = TimeClassEmbedding(t_emb_dim, num_classes)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.downs = nn.ModuleList(
            DownBlock(channels[i], channels[i + 1], t_emb_dim, num_layers, attention[i], num_heads,
                      down_sample[i], dropout, groups, scale_shift)
            for i in range(n_down)
        )
        self.mid = MidBlock(channels[-1], t_emb_dim, num_layers, num_heads, dropout, groups, scale_shift)
        self.ups = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i], t_emb_dim, num_layers, attention[i], num_heads,
                    down_sample[i], dropout, groups, scale_shift)
            for i in reversed(range(n_down))
        )
        self.norm_out = group_norm(channels[0], groups)
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        if cond_channels:
            # Seed 002 Listing 5.5: 1×1 convs over [features, resized condition].
            self.fuse_in = nn.Conv2d(in_channels + cond_channels, in_channels, 1)
            self.fuse_down = nn.ModuleList(nn.Conv2d(c + cond_channels, c, 1) for c in channels[:-1])
            self.fuse_skip = nn.ModuleList(nn.Conv2d(c + cond_channels, c, 1) for c in reversed(channels[:-1]))

    def _fuse(self, conv: nn.Module, h: Tensor, cond: Tensor) -> Tensor:
        cond = F.interpolate(cond, size=h.shape[-2:], mode="bilinear", align_corners=False)
        return conv(torch.cat([h, cond], dim=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """Predict from x_t (B, C, H, W), integer steps t (B,), labels y (B,) (−1 = null) and a condition image."""
        if x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(
                f"image size {tuple(x.shape[-2:])} must be divisible by {self.downsample_factor} "
                f"(2 ** number of downsampling blocks)."
            )
        if cond is not None and not self.cond_channels:
            raise ValueError("got a condition image but the UNet was built with cond_channels=0.")
        emb = self.embedding(t, y)
        if cond is not None:
            x = self._fuse(self.fuse_in, x, cond)
        h = self.conv_in(x)
        skips = []
        for i, down in enumerate(self.downs):
            if cond is not None:
                h = self._fuse(self.fuse_down[i], h, cond)
            skips.append(h)
            h = down(h, emb)
        h = self.mid(h, emb)
        for i, up in enumerate(self.ups):
            skip = skips.pop()
            if cond is not None:
                skip = self._fuse(self.fuse_skip[i], skip, cond)
            h = up(h, skip, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class TinyUNet(UNet):
    """A small preset for CPU runs and tests: two levels, attention only at the lowest resolution.

    Takes every ``UNet`` argument; only these defaults differ.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        num_layers: int = 1,
        num_heads: int = 2,
        t_emb_dim: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(channels=channels, num_layers=num_layers, num_heads=num_heads, t_emb_dim=t_emb_dim, **kwargs)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
