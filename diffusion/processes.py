"""Noise processes: the forward corruption x_t = α(t) x_0 + σ(t) ε and its prior.

A process tells a sampler three things: the marginal (α(t), σ(t)), how to draw x_T from the prior, and
what time value the network sees (``network_time``). Samplers (``diffusion/samplers.py``) own the
reverse loop over a process; networks never see a process.

``DiscreteVPProcess`` is DDPM's: β_1…β_T on integer steps, ᾱ_t = ∏(1 − β_s), α = √ᾱ, σ = √(1 − ᾱ)
(Ho et al. 2020; indices are 0-based, so index t is step t+1 of the paper and t = −1 is the clean
image). Everything is computed in float64 and stored as float32 buffers; once committed, a schedule
must not change, because checkpoints depend on it. Continuous processes (VP-, sub-VP-, VE-SDE) subclass
``NoiseProcess`` next to it.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from diffusion.schedules import PredictionType, ScheduleName, cosine_betas, linear_betas

GeneratorLike = Union[torch.Generator, Sequence[torch.Generator], None]


def randn_like(x: Tensor, generator: GeneratorLike = None) -> Tensor:
    """Standard normal noise shaped like ``x``.

    With a list of generators, sample i draws from generator i, so results do not depend on the batch
    size or on how samples are split across DDP ranks.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"Got {len(generator)} generators for a batch of {x.shape[0]}.")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator]
    )


def _broadcast(values: Tensor, ndim: int) -> Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


class NoiseProcess(nn.Module):
    """Base class: x_t = α(t) x_0 + σ(t) ε, prior x_T ~ N(0, prior_std² I).

    Subclasses implement ``marginal``; the rest (noising, parameterisation conversions, prior) follows.
    """

    discrete: bool = False
    prior_std: float = 1.0

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        """(α(t), σ(t)) shaped to broadcast over a tensor of ``ndim`` dims."""
        raise NotImplementedError

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio α(t)² / σ(t)², one value per entry of ``t``."""
        alpha, sigma = self.marginal(t, 1)
        return (alpha / sigma).square()

    def network_time(self, t: Tensor) -> Tensor:
        """The time value the denoiser is conditioned on (identity unless a process says otherwise)."""
        return t

    def time_from_network(self, u: Tensor) -> Tensor:
        """Inverse of ``network_time``: the process time of a value the denoiser was given."""
        return u

    def time_range(self) -> tuple[float, float]:
        """[t_min, t_max], the times training draws from (continuous processes; [0, 1] unless a subclass sets them)."""
        return float(getattr(self, "t_min", 0.0)), float(getattr(self, "t_max", 1.0))

    def training_times(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """t for a training batch: uniform on [t_min, t_max] (continuous processes)."""
        t_min, t_max = self.time_range()
        return t_min + (t_max - t_min) * torch.rand(n, device=device, generator=generator)

    def prior_sample(self, shape: Sequence[int], generator: GeneratorLike = None, device: torch.device | str = "cpu") -> Tensor:
        """x_T ~ N(0, prior_std² I), one generator per sample when a list is given."""
        x = randn_like(torch.empty(*shape, device=device), generator)
        return x if self.prior_std == 1.0 else x * self.prior_std

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(α(t) x_0, σ(t)² I) (Ho et al. Eq. 4 for VP)."""
        alpha, sigma = self.marginal(t, x0.ndim)
        return alpha * x0 + sigma * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = α ε − σ x_0 (Salimans & Ho 2022, §4)."""
        alpha, sigma = self.marginal(t, x0.ndim)
        return alpha * noise - sigma * x0

    def target(self, prediction_type: PredictionType, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The regression target of the denoiser for a given parameterisation."""
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "sample":
            return x0
        if prediction_type == "v_prediction":
            return self.velocity(x0, noise, t)
        raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")

    def to_x0_eps(self, model_output: Tensor, xt: Tensor, t: Tensor, prediction_type: PredictionType) -> tuple[Tensor, Tensor]:
        """Convert a network output to the pair (x̂_0, ε̂) at time t (v-prediction assumes α² + σ² = 1)."""
        alpha, sigma = self.marginal(t, xt.ndim)
        if prediction_type == "epsilon":
            eps = model_output
            x0 = (xt - sigma * eps) / alpha  # Ho et al. Eq. 15
        elif prediction_type == "sample":
            x0 = model_output
            eps = (xt - alpha * x0) / sigma
        elif prediction_type == "v_prediction":
            x0 = alpha * xt - sigma * model_output
            eps = sigma * xt + alpha * model_output
        else:
            raise ValueError(f"Unknown prediction_type {prediction_type!r}: choose epsilon, sample or v_prediction.")
        return x0, eps


class DiscreteVPProcess(NoiseProcess):
    """DDPM's discrete variance-preserving process on integer steps t ∈ {0, …, T−1} (−1 = clean).

    Holds β_t, ᾱ_t and the posterior coefficients as non-persistent buffers: they are a pure function
    of the constructor arguments, which modules save as hyper-parameters.
    """

    discrete = True

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
        self.beta_start, self.beta_end = beta_start, beta_end

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

    @staticmethod
    def _gather(values: Tensor, t: Tensor, ndim: int) -> Tensor:
        """values[t] reshaped to broadcast over a (B, C, H, W)-like tensor of ``ndim`` dims."""
        return _broadcast(values.to(t.device)[t.long()], ndim)

    def alpha_bar(self, t: Tensor, ndim: int = 4) -> Tensor:
        """ᾱ_t for integer t; t = −1 means ᾱ = 1 (the clean image), used by strided samplers.

        Float t between two steps interpolates log ᾱ linearly, so the process has a marginal at any t.
        """
        padded = torch.cat([torch.ones(1, device=self.alpha_bars.device), self.alpha_bars])
        if not t.is_floating_point():
            return self._gather(padded, t + 1, ndim)
        pos = (t.to(padded.device, torch.float64) + 1).clamp(0, self.num_timesteps)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=self.num_timesteps)
        log_ab = padded.double().log()
        frac = pos - lo
        value = torch.exp((1 - frac) * log_ab[lo] + frac * log_ab[hi]).to(torch.float32)
        return _broadcast(value.to(t.device), ndim)

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        ab = self.alpha_bar(t, ndim)
        return ab.sqrt(), (1 - ab).sqrt()

    def training_times(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """Uniform integer steps 0…T−1 (Ho et al. Alg. 1)."""
        return torch.randint(0, self.num_timesteps, (n,), device=device, generator=generator)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t)."""
        ab = self._gather(self.alpha_bars, t, 1)
        return ab / (1 - ab)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean μ̃_t(x_t, x_0) and variance β̃_t of q(x_{t−1} | x_t, x_0) (Ho et al. Eq. 7)."""
        c0 = self._gather(self.posterior_mean_coef_x0, t, xt.ndim)
        ct = self._gather(self.posterior_mean_coef_xt, t, xt.ndim)
        return c0 * x0 + ct * xt, self._gather(self.posterior_variance, t, xt.ndim)

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, num_timesteps={self.num_timesteps}"
