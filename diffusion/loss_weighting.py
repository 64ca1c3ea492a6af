"""Loss weightings: how much each noise level counts in the denoising loss.

Training minimises E_t[w(t) ‖target − net(x_t, t)‖²]. w = 1 is Ho et al.'s L_simple for whichever target the
network predicts. A weighting here is stated once, in x_0 units, and converted to the network's target, so
the same class serves ε-, x_0- and v-prediction: with SNR(t) = α(t)² / σ(t)²,

    ‖ε̂ − ε‖² = SNR · ‖x̂_0 − x_0‖²,    ‖v̂ − v‖² = (SNR + 1) · ‖x̂_0 − x_0‖²  (α² + σ² = 1).

Pure torch; ``DDPMModule(loss_weighting=...)`` takes any subclass by ``class_path``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion.processes import NoiseProcess
from diffusion.schedules import PredictionType


def x0_to_target_factor(snr_t: Tensor, prediction_type: PredictionType) -> Tensor:
    """‖target error‖² / ‖x_0 error‖² for a parameterisation (the identities in the module docstring)."""
    if prediction_type == "epsilon":
        return snr_t
    if prediction_type == "sample":
        return torch.ones_like(snr_t)
    if prediction_type == "v_prediction":
        return snr_t + 1
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")


class LossWeighting:
    """Base class: ``x0_weight(snr)`` is w in x_0 units; calling the object gives the weight on the target."""

    def x0_weight(self, snr_t: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, process: NoiseProcess, t: Tensor, prediction_type: PredictionType) -> Tensor:
        snr_t = process.snr(t).float()
        return self.x0_weight(snr_t) / x0_to_target_factor(snr_t, prediction_type)


class MinSNR(LossWeighting):
    """Min-SNR-γ (Hang et al. 2023): w = min(SNR, γ) in x_0 units.

    For ε-prediction this is min(SNR, γ) / SNR: noisy steps keep weight 1, nearly clean ones (whose ε is
    hard to learn and matters little to samples) are damped, which the paper finds converges 3.4x faster.

    Args:
        gamma: the SNR cap γ (the paper's default 5).
    """

    def __init__(self, gamma: float = 5.0) -> None:
        if gamma <= 0:
            raise ValueError(f"MinSNR.gamma must be > 0 (the paper uses 5), got {gamma}.")
        self.gamma = float(gamma)

    def x0_weight(self, snr_t: Tensor) -> Tensor:
        return snr_t.clamp(max=self.gamma)

    def __repr__(self) -> str:
        return f"MinSNR(gamma={self.gamma})"


class EDMWeighting(LossWeighting):
    """EDM's loss weight λ(σ) = (σ² + σ_data²) / (σ σ_data)² in x_0 units (Karras et al. 2022, Eq. 8 and Table 1).

    With σ² = 1/SNR this is SNR + 1/σ_data²: ε-prediction's own weight (SNR) plus a floor that keeps the noisiest
    levels from vanishing, the weight under which EDM's preconditioned network sees unit-variance targets. It is
    meant to pair with ``diffusion.LogNormalSigma``, EDM's training distribution.

    Args:
        sigma_data: the data's standard deviation σ_data (EDM: 0.5 for images in [−1, 1]).
    """

    def __init__(self, sigma_data: float = 0.5) -> None:
        if sigma_data <= 0:
            raise ValueError(f"EDMWeighting.sigma_data must be > 0 (EDM uses 0.5), got {sigma_data}.")
        self.sigma_data = float(sigma_data)

    def x0_weight(self, snr_t: Tensor) -> Tensor:
        return snr_t + 1.0 / self.sigma_data**2

    def __repr__(self) -> str:
        return f"EDMWeighting(sigma_data={self.sigma_data})"
