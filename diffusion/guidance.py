"""Guidance: classifier-free (Ho & Salimans 2022) or by a weaker model (autoguidance, Karras et al. 2024),
optionally limited to an interval of noise levels."""

from __future__ import annotations

import torch
from torch import Tensor


def classifier_free_guidance(cond: Tensor, uncond: Tensor, w: float | Tensor) -> Tensor:
    """ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅) (Ho & Salimans 2022, Eq. 6). w = 0 is the conditional model; a tensor
    w broadcasts over the batch (one weight per sample)."""
    if not isinstance(w, Tensor) and w == 0:
        return cond
    return (1 + w) * cond - w * uncond


def autoguidance(good: Tensor, bad: Tensor, w: float | Tensor) -> Tensor:
    """D̃ = (1 + w)·D₁(x, c) − w·D₀(x, c): extrapolate away from a weaker version D₀ of the model (Karras et al. 2024,
    §3; their weight is our 1 + w). The weights sum to 1, so it holds for ε-, x̂_0- and v-outputs alike."""
    return classifier_free_guidance(good, bad, w)


def check_guidance_interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    """``(σ_lo, σ_hi)`` as floats, or a ValueError naming the problem."""
    if interval is None:
        return None
    values = tuple(float(v) for v in interval)
    if len(values) != 2 or not 0.0 <= values[0] < values[1]:
        raise ValueError(f"guidance_interval={list(interval)}: give two noise levels [sigma_lo, sigma_hi] with "
                         "0 <= sigma_lo < sigma_hi, e.g. [0.28, 2.9]; null guides at every step.")
    return values  # type: ignore[return-value]


def interval_weight(w: float, sigma: Tensor, interval: tuple[float, float]) -> Tensor:
    """Per-sample guidance weight: w where the noise level σ lies in (σ_lo, σ_hi], else 0.

    Guidance at high noise narrows the distribution (the sample's class layout is fixed there) and near zero
    noise it does little, so Kynkäänniemi et al. 2024 ("Applying guidance in a limited interval", §3) guide
    only in between. σ is the EDM noise level σ(t)/α(t) of x_t = α(t)·x_0 + σ(t)·ε, so one interval means the
    same on VP and VE processes.
    """
    low, high = interval
    return torch.where((sigma > low) & (sigma <= high), torch.as_tensor(float(w), dtype=sigma.dtype), 0.0)
