"""U-Net laid out like diffusers' ``UNet2DModel``: seed 000's four U-Net denoisers (spec §2.2, Table 2.1).

Layout (module names follow diffusers, so state-dict keys line up with ``UNet2DModel``): sinusoidal time
embedding [cos, sin] of width C0 → MLP C0 → 4·C0 → 4·C0; conv_in; per level ``layers_per_block`` ResNet
blocks (GroupNorm-SiLU-conv, + time projection, GroupNorm-SiLU-dropout-conv, + 1×1 shortcut), optional
self-attention after each (heads = C / attention_head_dim), then a 3×3 stride-2 conv except on the last
level; mid block ResNet → attention → ResNet; per mirrored level ``layers_per_block + 1`` ResNet blocks over
[features, skip] with the same attention flag, then nearest ×2 + 3×3 conv except on the last level;
GroupNorm-SiLU-conv_out. Skips are conv_in's output and every ResNet/attention/downsampler output.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.embeddings import timestep_embedding

# Table 2.1 of seed 000; spec §2.2 gives the diffusers reconstruction that reproduces the counts.
UNET2D_PRESETS: dict[str, dict[str, Any]] = {
    "unet-small": dict(block_out_channels=(64, 128, 192, 256), attention=(False, False, False, False)),
    "unet-small-attn": dict(block_out_channels=(64, 128, 192, 256), attention=(False, False, True, False)),
    "unet-large": dict(block_out_channels=(64, 128, 192, 256, 512), attention=(False, False, False, False, False)),
    "unet-large-attn": dict(block_out_channels=(64, 128, 192, 256, 512), attention=(False, False, False, True, False)),
}
# Parameter counts of Table 2.1 as reconstructed in spec §2.2 (1-channel input).
UNET2D_TABLE_PARAMS = {"unet-small": 20.02e6, "unet-small-attn": 20.76e6, "unet-large": 62.18e6,
                       "unet-large-attn": 63.50e6}


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` (time_embedding_norm="default", output_scale_factor=1)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class SpatialAttention(nn.Module):
    """GroupNorm → multi-head self-attention over the H·W tokens → + residual (diffusers ``Attention``)."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"attention channels {channels} are not divisible by attention_head_dim {head_dim}; "
                             "choose block_out_channels that are multiples of attention_head_dim.")
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(tokens).reshape(b, h * w, self.heads, -1).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        for layer in self.to_out:
            out = layer(out)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample2D(nn.Module):
    """3×3 conv with stride 2 (diffusers ``Downsample2D``, use_conv=True, padding=1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 conv (diffusers ``Upsample2D``, use_conv=True)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """``DownBlock2D`` / ``AttnDownBlock2D``: resnets (+ attention), then an optional downsampler."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, attention: bool,
                 downsample: bool, head_dim: int, groups: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps, dropout)
            for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            SpatialAttention(out_channels, head_dim, groups, eps) for _ in range(num_layers)
        ) if attention else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if downsample else None

    def forward(self, x: Tensor, temb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """``UpBlock2D`` / ``AttnUpBlock2D``: resnets over [x, skip] (+ attention), then an optional upsampler."""

    def __init__(self, in_channels: int, prev_output_channels: int, out_channels: int, temb_channels: int,
                 num_layers: int, attention: bool, upsample: bool, head_dim: int, groups: int, eps: float,
                 dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            self.resnets.append(
                ResnetBlock2D(resnet_in + skip_channels, out_channels, temb_channels, groups, eps, dropout))
        self.attentions = nn.ModuleList(
            SpatialAttention(out_channels, head_dim, groups, eps) for _ in range(num_layers)
        ) if attention else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], temb: Tensor) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """``UNetMidBlock2D``: ResNet → attention → ResNet (the attention can be switched off)."""

    def __init__(self, channels: int, temb_channels: int, attention: bool, head_dim: int, groups: int, eps: float,
                 dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(channels, channels, temb_channels, groups, eps, dropout) for _ in range(2))
        self.attentions = nn.ModuleList([SpatialAttention(channels, head_dim, groups, eps)]) if attention else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class TimestepEmbedding(nn.Module):
    """Linear(C0, 4·C0) → SiLU → Linear(4·C0, 4·C0), applied to the [cos, sin] sinusoidal embedding."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet2D(nn.Module):
    """diffusers-``UNet2DModel``-layout ε-network; seed 000's U-Nets are presets (``UNet2D.from_preset``).

    Args:
        in_channels: image channels read and predicted.
        block_out_channels: width C_i of each level; level i downsamples except the last one.
        layers_per_block: ResNet blocks per down level (up levels have one more, for the extra skip).
        attention: per level, whether its down block and mirrored up block have self-attention
            (default: none).
        mid_block_attention: attention between the two mid-block ResNets (diffusers default: on).
        attention_head_dim: channels per attention head (heads = C / head dim; diffusers default 8).
        norm_num_groups: GroupNorm groups everywhere (32).
        norm_eps: GroupNorm epsilon.
        dropout: dropout inside the ResNet blocks.
        num_classes: > 0 adds a class embedding (plus a null token, index ``num_classes``) added to the
            time embedding, for classifier-free guidance; labels < 0 mean the null token.
    """

    def __init__(
        self,
        in_channels: int = 1,
        block_out_channels: Sequence[int] = (64, 128, 192, 256),
        layers_per_block: int = 2,
        attention: Sequence[bool] | None = None,
        mid_block_attention: bool = True,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in block_out_channels]
        attention = [bool(a) for a in attention] if attention is not None else [False] * len(channels)
        if not channels:
            raise ValueError("block_out_channels needs at least one width, e.g. (64, 128, 192, 256).")
        if len(attention) != len(channels):
            raise ValueError(f"attention needs {len(channels)} flags (one per entry of block_out_channels "
                             f"{tuple(channels)}), got {tuple(attention)}.")
        bad = [c for c in channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={norm_num_groups}; "
                             "use multiples of it or lower norm_num_groups.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0 = unconditional), got {num_classes}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.downsample_factor = 2 ** (len(channels) - 1)
        temb = 4 * channels[0]
        common = dict(head_dim=attention_head_dim, groups=norm_num_groups, eps=norm_eps, dropout=dropout)

        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.class_embedding = nn.Embedding(num_classes + 1, temb) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            DownBlock(channels[max(i - 1, 0)], c, temb, layers_per_block, attention[i], i < last, **common)
            for i, c in enumerate(channels)
        )
        self.mid_block = MidBlock(channels[-1], temb, mid_block_attention, **common)
        rev, rev_attn = channels[::-1], attention[::-1]
        self.up_blocks = nn.ModuleList(
            UpBlock(rev[min(i + 1, last)], rev[max(i - 1, 0)], c, temb, layers_per_block + 1, rev_attn[i], i < last,
                    **common)
            for i, c in enumerate(rev)
        )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "UNet2D":
        """Build a named preset of ``UNET2D_PRESETS`` (e.g. ``unet-large-attn``); ``overrides`` replace its kwargs."""
        if name not in UNET2D_PRESETS:
            raise KeyError(f"unknown UNet2D preset {name!r}; choose one of {sorted(UNET2D_PRESETS)}.")
        return cls(**{**UNET2D_PRESETS[name], **overrides})

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond: Any) -> Tensor:
        """Predict from x_t (B, C, H, W), steps t (B,) (integers or floats) and labels y (B,) (−1 = null)."""
        unused = [k for k, v in cond.items() if v is not None]
        if unused:
            raise TypeError(f"UNet2D takes no image conditions, got {unused}; use networks.UNet with "
                            "cond_channels for DiffuseVAE-style conditioning.")
        if x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {self.downsample_factor} "
                             "(2 ** (number of levels − 1)); resize the data or use fewer block_out_channels.")
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        temb = self.time_embedding(timestep_embedding(t, self.conv_in.out_channels).to(x.dtype))
        if self.class_embedding is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            y = torch.where(y < 0, torch.full_like(y, self.num_classes), y)
            temb = temb + self.class_embedding(y).to(temb.dtype)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb)
            skips.extend(block_skips)
        h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        return self.conv_out(F.silu(self.conv_norm_out(h)))
