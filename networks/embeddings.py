"""Timestep and class embeddings shared by the denoisers."""

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding, seed 002 Eq. 2.34, laid out as [cos, sin] halves like Listing 5.1.

    ``t`` is cast to float first: the seed's listing breaks on integer timesteps.
    """
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}.")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class TimeClassEmbedding(nn.Module):
    """t ↦ MLP(TE(t)) (Linear-SiLU-Linear, Listing 5.1), plus a learned class embedding for guidance.

    Class index ``num_classes`` is the null token ∅ used for unconditional predictions; labels < 0 are
    mapped to it, so a dropped label can be written as −1.
    """

    def __init__(self, dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.t_proj = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_emb = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.t_proj(timestep_embedding(t, self.dim))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, device=t.device, dtype=torch.long)
            y = torch.where(y < 0, torch.full_like(y, self.num_classes), y)
            emb = emb + self.class_emb(y)
        return emb
