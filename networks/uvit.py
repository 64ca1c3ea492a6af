"""U-ViT ε-network (Bao et al. 2023, "All are Worth Words"): seed 000's two U-ViTs (spec §2.3-2.4, Table 2.2).

Layout of the reference ``UViT`` class (module names follow it, so state-dict keys line up): patch
embedding Conv2d(C, d, p, stride p) → tokens [class token?, time token, patches] + learnable positional
embedding → depth/2 in-blocks → mid block → depth/2 out-blocks, each out-block first mapping
[x, skip] (concatenated, 2d) back to d with a linear layer (long skips) → LayerNorm → Linear(d, p²·C) →
drop the extra tokens → unpatchify → 3×3 conv. Blocks are pre-LN: x + MHSA(LN x), x + MLP(LN x) (GELU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.embeddings import timestep_embedding

# Table 2.2 of seed 000 as reconstructed in spec §2.4 (reference UViT, depth 12 = 6 + 1 + 6 blocks).
UVIT_PRESETS: dict[str, dict[str, Any]] = {
    "uvit-small": dict(image_size=256, patch_size=16, embed_dim=512, depth=12, num_heads=8),
    "uvit-large": dict(image_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12),
}
UVIT_TABLE_PARAMS = {"uvit-small": 46.61e6, "uvit-large": 104.51e6}


class PatchEmbed(nn.Module):
    """Conv2d(C, d, p, stride p): one d-dimensional token per p×p patch, (B, C, H, W) → (B, L, d)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv projection, scaled dot-product attention, output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}; pick a divisor.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(QKᵀ/√d_k)V, spec §1.5 Eq. 1.18
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Linear(d, r·d) → GELU → Linear(r·d, d)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block; with ``skip`` it first fuses a long skip: x = Linear([x, skip])."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool) -> None:
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    """U-ViT denoiser; seed 000's models are presets (``UViT.from_preset("uvit-small")``).

    Args:
        image_size: side of the square input (the positional embedding is fixed to it).
        patch_size: side of the square patches (image_size must be a multiple).
        in_channels: image channels read and predicted.
        embed_dim: token width d.
        depth: transformer depth; builds depth//2 in-blocks, one mid block and depth//2 out-blocks
            (the reference code's convention: depth 12 → 13 blocks).
        num_heads: attention heads (d / heads = 64 in the presets).
        mlp_ratio: MLP hidden width / d.
        qkv_bias: bias of the fused qkv projection (reference: off).
        mlp_time_embed: time token = MLP(d → 4d → d) of the sinusoidal embedding, else the embedding itself.
        final_conv: 3×3 conv after unpatchifying (reference ``conv=True``).
        skip: long skips between mirrored in- and out-blocks.
        num_classes: > 0 prepends a class token (embedding table with a null token, index ``num_classes``)
            for classifier-free guidance; labels < 0 mean the null token.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 1,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        mlp_time_embed: bool = True,
        final_conv: bool = True,
        skip: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}; "
                             "choose a patch size that divides the image size.")
        if depth < 2 or depth % 2:
            raise ValueError(f"depth must be even and ≥ 2 (depth/2 in-blocks, a mid block, depth/2 out-blocks), got {depth}.")
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even for the sinusoidal time embedding, got {embed_dim}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0 = unconditional), got {num_classes}.")
        self.image_size, self.patch_size = image_size, patch_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.extras = 2 if num_classes > 0 else 1  # class token (optional) + time token
        num_patches = (image_size // patch_size) ** 2

        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.time_embed = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(), nn.Linear(4 * embed_dim, embed_dim)
        ) if mlp_time_embed else nn.Identity()
        self.label_emb = nn.Embedding(num_classes + 1, embed_dim) if num_classes > 0 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + num_patches, embed_dim))
        self.in_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip=False) for _ in range(depth // 2))
        self.mid_block = Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip=False)
        self.out_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip=skip) for _ in range(depth // 2))
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size**2 * in_channels)
        self.final_layer = nn.Conv2d(in_channels, in_channels, 3, padding=1) if final_conv else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """Reference init: truncated normal (std 0.02) for linears and the positional embedding, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "UViT":
        """Build a named preset of ``UVIT_PRESETS``; ``overrides`` (e.g. image_size=32, patch_size=4) replace its kwargs."""
        if name not in UVIT_PRESETS:
            raise KeyError(f"unknown UViT preset {name!r}; choose one of {sorted(UVIT_PRESETS)}.")
        return cls(**{**UVIT_PRESETS[name], **overrides})

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond: Any) -> Tensor:
        """Predict from x_t (B, C, H, W), steps t (B,) (integers or floats) and labels y (B,) (−1 = null)."""
        unused = [k for k, v in cond.items() if v is not None]
        if unused:
            raise TypeError(f"UViT takes no image conditions, got {unused}.")
        b, c, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"UViT was built for {self.image_size}×{self.image_size} images, got {h}×{w}; set "
                             "the network's image_size to the data's image_size.")
        t = t.expand(b) if t.ndim == 0 else t
        tokens = self.patch_embed(x)  # (B, L, d)
        time_token = self.time_embed(timestep_embedding(t, self.embed_dim).to(tokens.dtype))[:, None]
        extra = [time_token]
        if self.label_emb is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, device=x.device, dtype=torch.long)
            y = torch.where(y < 0, torch.full_like(y, self.num_classes), y)
            extra.insert(0, self.label_emb(y)[:, None].to(tokens.dtype))
        h_tok = torch.cat([*extra, tokens], dim=1) + self.pos_embed
        skips = []
        for block in self.in_blocks:
            h_tok = block(h_tok)
            skips.append(h_tok)
        h_tok = self.mid_block(h_tok)
        for block in self.out_blocks:
            h_tok = block(h_tok, skips.pop())
        patches = self.decoder_pred(self.norm(h_tok))[:, self.extras:]  # (B, L, p·p·C)
        return self.final_layer(self.unpatchify(patches))

    def unpatchify(self, patches: Tensor) -> Tensor:
        """(B, L, p·p·C) with channels last inside a patch (reference layout) → (B, C, H, W)."""
        b, p, c = patches.shape[0], self.patch_size, self.in_channels
        n = int(math.isqrt(patches.shape[1]))
        return patches.reshape(b, n, n, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, n * p, n * p)
