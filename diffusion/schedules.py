"""Variance schedules β_t of the forward process q(x_t | x_0) and the closed forms built on them.

Notation follows Ho et al. 2020 (DDPM): α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s. Indices are 0-based,
t ∈ {0, …, T−1}, so index t here is step t+1 of the paper. Everything is computed in float64 and
stored as float32 buffers. Once committed, a schedule must not change: checkpoints depend on it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

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


class NoiseSchedule(nn.Module):
    """Holds β_t, ᾱ_t and the derived coefficients as non-persistent buffers.

    Non-persistent because they are a pure function of the constructor arguments, which are saved as
    hyper-parameters; they follow ``.to(device)`` like any buffer.
    """

    def __init__(
        self,
        schedule: ScheduleName = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ) -> None:
        super().__init__()
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}.")
        if schedule == "linear":
            if not 0 < beta_start < beta_end < 1:
                raise ValueError(
                    f"linear schedule needs 0 < beta_start < beta_end < 1, got beta_start={beta_start}, "
                    f"beta_end={beta_end}."
                )
            betas = linear_betas(num_timesteps, beta_start, beta_end)
        elif schedule == "cosine":
            betas = cosine_betas(num_timesteps, cosine_s)
        else:
            raise ValueError(f"Unknown schedule {schedule!r}: choose 'linear' or 'cosine'.")
        self.schedule = schedule
        self.num_timesteps = num_timesteps

        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0), Ho et al. Eq. 6-7.
        posterior_variance = betas * (1 - alpha_bars_prev) / (1 - alpha_bars)
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bars": alpha_bars,
            "alpha_bars_prev": alpha_bars_prev,
            "posterior_variance": posterior_variance,
            "posterior_mean_coef_x0": betas * alpha_bars_prev.sqrt() / (1 - alpha_bars),
            "posterior_mean_coef_xt": (1 - alpha_bars_prev) * alphas.sqrt() / (1 - alpha_bars),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    # ---- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _gather(values: Tensor, t: Tensor, ndim: int) -> Tensor:
        """values[t] reshaped to broadcast over a (B, C, H, W)-like tensor of ``ndim`` dims."""
        out = values.to(t.device)[t.long()]
        return out.reshape(-1, *([1] * (ndim - 1)))

    def alpha_bar(self, t: Tensor, ndim: int = 4) -> Tensor:
        """ᾱ_t for integer t; t = −1 means ᾱ = 1 (the clean image), used by strided samplers."""
        padded = torch.cat([torch.ones(1, device=self.alpha_bars.device), self.alpha_bars])
        return self._gather(padded, t + 1, ndim)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t)."""
        ab = self._gather(self.alpha_bars, t, 1)
        return ab / (1 - ab)

    # ---- forward process ---------------------------------------------------------------------------

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. Eq. 4)."""
        ab = self._gather(self.alpha_bars, t, x0.ndim)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean μ̃_t(x_t, x_0) and variance β̃_t of q(x_{t−1} | x_t, x_0) (Ho et al. Eq. 7)."""
        c0 = self._gather(self.posterior_mean_coef_x0, t, xt.ndim)
        ct = self._gather(self.posterior_mean_coef_xt, t, xt.ndim)
        return c0 * x0 + ct * xt, self._gather(self.posterior_variance, t, xt.ndim)

    # ---- parameterisations -------------------------------------------------------------------------

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, §4)."""
        ab = self._gather(self.alpha_bars, t, x0.ndim)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def target(self, prediction_type: PredictionType, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The regression target of the denoiser for a given parameterisation."""
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "sample":
            return x0
        if prediction_type == "v_prediction":
            return self.velocity(x0, noise, t)
        raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")

    def to_x0_eps(
        self, model_output: Tensor, xt: Tensor, t: Tensor, prediction_type: PredictionType
    ) -> tuple[Tensor, Tensor]:
        """Convert a network output to the pair (x̂_0, ε̂) at step t."""
        ab = self._gather(self.alpha_bars, t, xt.ndim)
        if prediction_type == "epsilon":
            eps = model_output
            x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()  # Ho et al. Eq. 15
        elif prediction_type == "sample":
            x0 = model_output
            eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
        elif prediction_type == "v_prediction":
            x0 = ab.sqrt() * xt - (1 - ab).sqrt() * model_output
            eps = (1 - ab).sqrt() * xt + ab.sqrt() * model_output
        else:
            raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")
        return x0, eps

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, num_timesteps={self.num_timesteps}"
