"""Classifier-free guidance (Ho & Salimans 2022)."""

from torch import Tensor


def classifier_free_guidance(cond: Tensor, uncond: Tensor, w: float) -> Tensor:
    """ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅) (Ho & Salimans 2022, Eq. 6). w = 0 is the conditional model."""
    if w == 0:
        return cond
    return (1 + w) * cond - w * uncond
