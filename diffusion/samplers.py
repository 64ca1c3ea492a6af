"""Samplers own the reverse loop over a noise process.

    denoise = DenoiseFn(net_fn, process, prediction_type, clip_range)   # built by the module
    out = sampler.sample(denoise, x_T, generator, hooks)                # out.x, out.nfe

``denoise(x, t)`` returns the consistent pair (x̂_0, ε̂) at process time t; guidance, class labels and
image conditions live inside the closure, so a sampler never sees them. A sampler may call it any
number of times per step (predictor–corrector, Heun), and hooks run after every step (inpainting,
trajectory capture). Samplers are chosen by ``class_path`` with their own arguments; a new one
subclasses ``Sampler`` (or ``DiscreteSampler`` for a step rule on DDPM's integer steps) and needs no
change anywhere else.

``DDPMSampler`` is ancestral sampling (Ho et al. 2020, Alg. 2) with σ² = β or β̃; with fewer steps than
T it uses the respaced process of Nichol & Dhariwal 2021 (§4). ``DDIMSampler`` is Song et al. 2021,
Eq. 12, with η and step spacing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from diffusion.processes import DiscreteVPProcess, GeneratorLike, NoiseProcess, randn_like
from diffusion.schedules import PredictionType

Spacing = Literal["leading", "trailing", "linspace"]
Variance = Literal["beta", "beta_tilde"]


@dataclass
class Prediction:
    """The denoiser's estimate at one time: x̂_0 and ε̂, consistent with x_t = α x̂_0 + σ ε̂."""

    x0: Tensor
    eps: Tensor


class DenoiseFn:
    """(x, t) ↦ Prediction: network call, parameterisation and optional x̂_0 clipping in one closure.

    Args:
        net_fn: (x, network_time) → raw network output; the module puts guidance, labels and
            conditions inside it.
        process: the noise process the network was trained on.
        prediction_type: what the network predicts (``epsilon``, ``sample``, ``v_prediction``).
        clip_range: clip x̂_0 to this range and recompute ε̂ from it (None: no clipping).
        threshold: with ``clip_range``, Imagen's dynamic thresholding at this percentile instead of the static
            clip (``dynamic_threshold``).
    """

    def __init__(
        self,
        net_fn: Callable[[Tensor, Tensor], Tensor],
        process: NoiseProcess,
        prediction_type: PredictionType = "epsilon",
        clip_range: tuple[float, float] | None = None,
        threshold: float | None = None,
    ) -> None:
        self.net_fn, self.process, self.prediction_type, self.clip_range = net_fn, process, prediction_type, clip_range
        self.threshold = threshold
        self.nfe = 0

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        """The network output itself (counted as one function evaluation)."""
        self.nfe += 1
        return self.net_fn(x, self.process.network_time(t))

    def __call__(self, x: Tensor, t: Tensor) -> Prediction:
        x0, eps = self.process.to_x0_eps(self.raw(x, t), x, t, self.prediction_type)
        if self.clip_range is not None:
            alpha, sigma = self.process.marginal(t, x.ndim)
            x0 = (x0.clamp(*self.clip_range) if self.threshold is None
                  else dynamic_threshold(x0, self.clip_range, self.threshold))
            eps = (x - alpha.to(x.dtype) * x0) / sigma.to(x.dtype)
        return Prediction(x0, eps)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """∇_x log p_t(x) = −ε̂ / σ(t) (Song et al. 2021, the ε-network as a score model)."""
        _, sigma = self.process.marginal(t, x.ndim)
        return -self(x, t).eps / sigma


def dynamic_threshold(x0: Tensor, value_range: tuple[float, float], percentile: float) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), for any value range.

    In the range's centred units u = (x̂_0 − c) / h: s = max(quantile_p(|u|), 1) per sample, then
    u ← clamp(u, −s, s) / s. Samples inside the range are untouched; saturated ones are pulled in whole
    instead of flattened at the bounds.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"dynamic threshold percentile must be in (0, 1], got {percentile}.")
    low, high = value_range
    centre, half = (low + high) / 2, (high - low) / 2
    u = (x0 - centre) / half
    s = torch.quantile(u.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0).to(u.dtype)
    s = s.view(-1, *([1] * (u.ndim - 1)))
    return centre + half * torch.maximum(torch.minimum(u, s), -s) / s


@dataclass
class StepState:
    """What a hook sees after step ``index`` (of ``num_steps``): x now sits at time ``t_next``.

    ``alpha_next``/``sigma_next`` are the marginal there (1 and 0 after the last step), so a hook can
    noise known pixels to the current level without knowing the process.
    """

    index: int
    num_steps: int
    x: Tensor
    prediction: Prediction
    t: Tensor
    t_next: Tensor
    alpha_next: Tensor
    sigma_next: Tensor
    generator: GeneratorLike = None


Hook = Callable[[StepState], Optional[Tensor]]


@dataclass
class SampleOutput:
    x: Tensor  # the final sample
    nfe: int  # network function evaluations spent


class Sampler:
    """Base class: a reverse-time loop from x_T to a sample. Subclasses implement ``sample``.

    Args:
        steps: number of steps (how NFE relates to it is the sampler's business; ``sample`` reports it).
    """

    def __init__(self, steps: int = 50) -> None:
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        self.steps = steps

    def check(self, process: NoiseProcess) -> None:
        """Raise a ValueError naming the problem when this sampler cannot run on ``process``."""

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        raise NotImplementedError

    def with_steps(self, steps: int) -> "Sampler":
        """The same sampler with another step count (a new instance; the arguments are re-validated)."""
        args = {k: v for k, v in self.describe().items() if k != "class_path"}
        if "steps" not in args:
            raise ValueError(f"{type(self).__name__} has no `steps` argument; name its own arguments instead "
                             f"(--sampling.sampler {type(self).__name__} --sampling.sampler.<argument> ...).")
        return type(self)(**{**args, "steps": steps})

    def describe(self) -> dict[str, Any]:
        """Class path and arguments, for provenance records."""
        params = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "args", "kwargs")]
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                **{p: getattr(self, p) for p in params if hasattr(self, p)}}

    def __repr__(self) -> str:
        d = self.describe()
        d.pop("class_path")
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in d.items())})"

    @staticmethod
    def run_hooks(hooks: Sequence[Hook], state: StepState) -> Tensor:
        for hook in hooks:
            out = hook(state)
            if out is not None:
                state.x = out
        return state.x


def spaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: Spacing) -> Tensor:
    """Descending timesteps to visit; the three spacings of Lin et al. 2024, Table 2.

    Computed in NumPy float64 and rounded half-to-even, exactly as diffusers does (torch's float64
    ``arange`` accumulates differently and gives e.g. 937 instead of 936 for trailing, T = 1000, n = 48).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}] (T of the model), got {num_steps}.")
    T = num_train_timesteps
    if spacing == "leading":
        steps = torch.arange(num_steps) * (T // num_steps)
    elif spacing == "trailing":
        steps = torch.from_numpy(np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64)).flip(0) - 1
    elif spacing == "linspace":
        steps = torch.from_numpy(np.linspace(0, T - 1, num_steps).round().astype(np.int64))
    else:
        raise ValueError(f"Unknown spacing {spacing!r}: choose leading, trailing or linspace.")
    return steps.long().flip(0)


class DiscreteSampler(Sampler):
    """A loop over a subset of DDPM's integer steps; subclasses define one move t → t_prev.

    Args:
        steps: steps to visit (≤ T); None visits all T.
        spacing: ``leading``, ``trailing`` or ``linspace`` step selection (Lin et al. 2024).
    """

    def __init__(self, steps: Optional[int] = 50, spacing: Spacing = "leading") -> None:
        super().__init__(steps)
        if spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"Unknown spacing {spacing!r}: choose leading, trailing or linspace.")
        self.spacing = spacing

    def check(self, process: NoiseProcess) -> None:
        if not isinstance(process, DiscreteVPProcess):
            raise ValueError(f"{type(self).__name__} runs on DDPM's discrete process, not {type(process).__name__}; "
                             "choose an SDE sampler for this model.")
        if self.steps is not None and not 1 <= self.steps <= process.num_timesteps:
            raise ValueError(f"{type(self).__name__}(steps={self.steps}) but the model has T = {process.num_timesteps} "
                             f"steps: choose steps between 1 and {process.num_timesteps}.")

    def timesteps(self, process: DiscreteVPProcess) -> Tensor:
        return spaced_timesteps(process.num_timesteps, self.steps or process.num_timesteps, self.spacing)

    def step(self, process: DiscreteVPProcess, pred: Prediction, t: int, t_prev: int, x: Tensor,
             generator: GeneratorLike) -> Tensor:
        raise NotImplementedError

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        process = denoise.process
        self.check(process)
        ts = self.timesteps(process).tolist()
        nfe0, x, n = denoise.nfe, x_T, x_T.shape[0]
        for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
            tt = torch.full((n,), t, device=x.device, dtype=torch.long)
            pred = denoise(x, tt)
            x = self.step(process, pred, t, t_prev, x, generator)
            if hooks:
                t_next = torch.full_like(tt, t_prev)
                alpha, sigma = process.marginal(t_next, x.ndim)
                x = self.run_hooks(hooks, StepState(i, len(ts), x, pred, tt, t_next, alpha, sigma, generator))
        return SampleOutput(x, denoise.nfe - nfe0)

    @staticmethod
    def alpha_bars(process: DiscreteVPProcess, t: int, t_prev: int, x: Tensor) -> tuple[Tensor, Tensor]:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return (process.alpha_bar(tt, x.ndim).to(x.dtype),
                process.alpha_bar(torch.full_like(tt, t_prev), x.ndim).to(x.dtype))


class DDPMSampler(DiscreteSampler):
    """Ancestral sampling: x_{t−1} ~ N(μ̃_t(x_t, x̂_0), σ_t² I) with σ_t² = β_t or β̃_t (Ho et al. §3.2).

    Args:
        steps: steps to visit; None (default) visits all T, fewer use the respaced process.
        variance: σ_t² = ``beta`` or ``beta_tilde``.
        spacing: step selection when steps < T.
    """

    def __init__(self, steps: Optional[int] = None, variance: Variance = "beta_tilde", spacing: Spacing = "leading") -> None:
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f"Unknown variance {variance!r}: choose 'beta' or 'beta_tilde'.")
        super().__init__(steps, spacing)
        self.variance = variance

    def step(self, process: DiscreteVPProcess, pred: Prediction, t: int, t_prev: int, x: Tensor,
             generator: GeneratorLike) -> Tensor:
        ab_t, ab_prev = self.alpha_bars(process, t, t_prev, x)
        # Respaced one-step process from t to prev: α' = ᾱ_t / ᾱ_prev (Nichol & Dhariwal §4).
        alpha = ab_t / ab_prev
        beta = 1 - alpha
        mean = (ab_prev.sqrt() * beta * pred.x0 + alpha.sqrt() * (1 - ab_prev) * x) / (1 - ab_t)  # Eq. 7
        if t_prev < 0:  # z = 0 at the last step (Alg. 2, line 4)
            return mean
        var = beta if self.variance == "beta" else beta * (1 - ab_prev) / (1 - ab_t)
        return mean + var.sqrt() * randn_like(x, generator)


class DDIMSampler(DiscreteSampler):
    """Song et al. 2021, Eq. 12. η = 0 is deterministic; η = 1 with every step is DDPM with σ² = β̃.

    Args:
        steps: steps to visit (≤ T).
        eta: η of σ_t(η) (Eq. 16).
        spacing: ``leading``, ``trailing`` or ``linspace``.
    """

    def __init__(self, steps: int = 50, eta: float = 0.0, spacing: Spacing = "leading") -> None:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        super().__init__(steps, spacing)
        self.eta = eta

    def step(self, process: DiscreteVPProcess, pred: Prediction, t: int, t_prev: int, x: Tensor,
             generator: GeneratorLike) -> Tensor:
        ab_t, ab_prev = self.alpha_bars(process, t, t_prev, x)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()  # σ_t(η), Eq. 16
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * pred.eps  # "direction pointing to x_t"
        prev = ab_prev.sqrt() * pred.x0 + direction
        if self.eta > 0 and t_prev >= 0:
            prev = prev + sigma * randn_like(x, generator)
        return prev
