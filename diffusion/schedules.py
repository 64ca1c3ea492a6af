"""Variance schedules β_t of DDPM's discrete forward process (used by ``diffusion.processes``).

Notation follows Ho et al. 2020 (DDPM): α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s, computed in float64.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ScheduleName = Literal["linear", "cosine"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """β_t linearly spaced from β_1 to β_T (Ho et al. 2020, §4)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule, Nichol & Dhariwal 2021 Eq. 17: ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

    β_t = 1 − ᾱ_t/ᾱ_{t−1} is clipped at ``max_beta`` so that 1/√α_t stays finite near t = T.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64)
    f = torch.cos((steps / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bars = f / f[0]
    return (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=max_beta)
