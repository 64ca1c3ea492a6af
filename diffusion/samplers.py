"""Reverse-process samplers behind one small interface (shaped like diffusers' schedulers).

    sampler.set_timesteps(num_steps)          # choose the steps to visit
    for t in sampler.timesteps:               # descending integer steps
        out = net(x, t)
        x = sampler.step(out, t, x, generator).prev_sample

``DDPMSampler`` is ancestral sampling (Ho et al. 2020, Alg. 2) with σ² = β or β̃; with fewer steps than
T it uses the respaced process of Nichol & Dhariwal 2021 (§4). ``DDIMSampler`` is Song et al. 2021,
Eq. 12, with η and step spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

from diffusion.schedules import NoiseSchedule, PredictionType

Spacing = Literal["leading", "trailing", "linspace"]
Variance = Literal["beta", "beta_tilde"]
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


def spaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: Spacing) -> Tensor:
    """Descending timesteps to visit; the three spacings of Lin et al. 2024, Table 2 (as in diffusers)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}.")
    T = num_train_timesteps
    if spacing == "leading":
        steps = torch.arange(num_steps) * (T // num_steps)
    elif spacing == "trailing":
        steps = torch.round(torch.arange(T, 0, -T / num_steps)).long().flip(0) - 1
    elif spacing == "linspace":
        steps = torch.linspace(0, T - 1, num_steps).round().long()
    else:
        raise ValueError(f"Unknown spacing {spacing!r}: choose leading, trailing or linspace.")
    return steps.long().flip(0)


@dataclass
class SamplerOutput:
    prev_sample: Tensor  # x_{t_prev}
    pred_x0: Tensor  # x̂_0 used for the step


class Sampler:
    """Common machinery: step selection, x̂_0/ε̂ from the network output, optional x̂_0 clipping."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction_type: PredictionType = "epsilon",
        spacing: Spacing = "leading",
        clip_range: tuple[float, float] | None = None,
    ) -> None:
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.spacing = spacing
        self.clip_range = clip_range
        self.set_timesteps(schedule.num_timesteps)

    def set_timesteps(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.timesteps = spaced_timesteps(self.schedule.num_timesteps, num_steps, self.spacing)
        # prev of the last step is −1, whose ᾱ is 1: the clean image.
        self._prev = dict(zip(self.timesteps.tolist(), self.timesteps[1:].tolist() + [-1]))

    def prev_timestep(self, t: int) -> int:
        return self._prev[int(t)]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return self.schedule.add_noise(x0, noise, t)

    def _predict(self, model_output: Tensor, t: int, xt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (x̂_0, ε̂, ᾱ_t, ᾱ_prev); ε̂ is recomputed from the clipped x̂_0 so the two stay consistent."""
        tt = torch.full((xt.shape[0],), int(t), device=xt.device, dtype=torch.long)
        x0, eps = self.schedule.to_x0_eps(model_output, xt, tt, self.prediction_type)
        ab_t = self.schedule.alpha_bar(tt, xt.ndim).to(xt.dtype)
        ab_prev = self.schedule.alpha_bar(torch.full_like(tt, self.prev_timestep(t)), xt.ndim).to(xt.dtype)
        if self.clip_range is not None:
            x0 = x0.clamp(*self.clip_range)
            eps = (xt - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        return x0, eps, ab_t, ab_prev

    def step(self, model_output: Tensor, t: int, xt: Tensor, generator: GeneratorLike = None) -> SamplerOutput:
        raise NotImplementedError


class DDPMSampler(Sampler):
    """Ancestral sampling: x_{t−1} ~ N(μ̃_t(x_t, x̂_0), σ_t² I) with σ_t² = β_t or β̃_t (Ho et al. §3.2).

    Takes ``Sampler``'s arguments (prediction_type, spacing, clip_range) plus ``variance``.
    """

    def __init__(self, schedule: NoiseSchedule, variance: Variance = "beta_tilde", **kwargs: Any) -> None:
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f"Unknown variance {variance!r}: choose 'beta' or 'beta_tilde'.")
        self.variance = variance
        super().__init__(schedule, **kwargs)

    def step(self, model_output: Tensor, t: int, xt: Tensor, generator: GeneratorLike = None) -> SamplerOutput:
        x0, _, ab_t, ab_prev = self._predict(model_output, t, xt)
        # Respaced one-step process from t to prev: α' = ᾱ_t / ᾱ_prev (Nichol & Dhariwal §4).
        alpha = ab_t / ab_prev
        beta = 1 - alpha
        mean = (ab_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - ab_prev) * xt) / (1 - ab_t)  # Eq. 7
        if self.prev_timestep(t) < 0:  # z = 0 at the last step (Alg. 2, line 4)
            return SamplerOutput(mean, x0)
        var = beta if self.variance == "beta" else beta * (1 - ab_prev) / (1 - ab_t)
        return SamplerOutput(mean + var.sqrt() * randn_like(xt, generator), x0)


class DDIMSampler(Sampler):
    """Song et al. 2021, Eq. 12. η = 0 is deterministic; η = 1 with every step is DDPM with σ² = β̃.

    Takes ``Sampler``'s arguments (prediction_type, spacing, clip_range) plus ``eta``.
    """

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, **kwargs: Any) -> None:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self.eta = eta
        super().__init__(schedule, **kwargs)

    def step(self, model_output: Tensor, t: int, xt: Tensor, generator: GeneratorLike = None) -> SamplerOutput:
        x0, eps, ab_t, ab_prev = self._predict(model_output, t, xt)
        # σ_t(η), Song et al. Eq. 16.
        sigma = self.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps  # "direction pointing to x_t"
        prev = ab_prev.sqrt() * x0 + direction
        if self.eta > 0 and self.prev_timestep(t) >= 0:
            prev = prev + sigma * randn_like(xt, generator)
        return SamplerOutput(prev, x0)


def make_sampler(
    name: str,
    schedule: NoiseSchedule,
    prediction_type: PredictionType = "epsilon",
    spacing: Spacing = "leading",
    clip_range: tuple[float, float] | None = None,
    eta: float = 0.0,
    variance: Variance = "beta_tilde",
) -> Sampler:
    """Build a sampler by name: ``ddpm`` (ancestral) or ``ddim``."""
    common = dict(prediction_type=prediction_type, spacing=spacing, clip_range=clip_range)
    if name == "ddpm":
        return DDPMSampler(schedule, variance=variance, **common)
    if name == "ddim":
        return DDIMSampler(schedule, eta=eta, **common)
    raise ValueError(f"Unknown sampler {name!r}: choose 'ddpm' or 'ddim'.")


@dataclass
class SamplingConfig:
    """How to draw samples: used by ``predict``, the sample-grid callback and the benchmarks.

    Args:
        sampler: ``ddim`` or ``ddpm`` (ancestral).
        steps: number of denoising steps (≤ T).
        eta: DDIM stochasticity; 0 is deterministic, 1 with every step is DDPM with σ² = β̃.
        spacing: ``leading``, ``trailing`` or ``linspace`` step selection.
        variance: DDPM σ² choice, ``beta`` or ``beta_tilde``.
        guidance_scale: classifier-free guidance weight w (0 = plain conditional model).
        seed: base seed; sample i uses seed + i, independent of batch size and DDP sharding.
        labels: classes to draw for class-conditional models, cycled over the samples (sample i gets
            labels[i % len(labels)]); null uses the data module's labels (i mod num_classes).
        generation_mode: DiffuseVAE only: ``prior`` or ``reconstruction``; null keeps the model's setting
            (a checkpoint's model arguments win over --model.* on the command line, so this is the switch).
    """

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: Spacing = "leading"
    variance: Variance = "beta_tilde"
    guidance_scale: float = 0.0
    seed: int = 0
    labels: Optional[list[int]] = None
    generation_mode: Optional[Literal["prior", "reconstruction"]] = None
