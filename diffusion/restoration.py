"""Controllable generation without retraining: colourisation by replacement, DDIM inversion, slerp.

* ``Colourise``: the score-SDE colourisation recipe (Song et al. 2021, App. I.2): after every step, map x
  to an orthogonal colour space, replace the luminance coordinate by its forward-noised known value, map
  back. The transform is orthogonal, so isotropic noise stays isotropic and "noise the known part" is the
  same operation as for inpainting.
* ``ddim_invert`` / ``ddim_decode``: deterministic DDIM (η = 0) on any process with a marginal (α, σ):
  x_{t'} = α_{t'} x̂_0 + σ_{t'} ε̂ (Song et al. 2021 (DDIM), Eq. 12 with σ_t = 0), run forward for inversion
  with ε̂ taken at the current point (DDIM §4.3: Eq. 13 is an Euler step of an ODE, so it runs both ways; §5.4).
* ``slerp``: spherical interpolation between two x_T (Shoemake 1985; used by DDIM §5.3 for x_T).
* ``TaskSampler``: a sampler plus per-request hooks / starting noise, for code paths that pass only a sampler.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from diffusion.processes import DiscreteVPProcess, GeneratorLike, NoiseProcess, randn_like
from diffusion.samplers import DenoiseFn, Hook, SampleOutput, Sampler, StepState, spaced_timesteps
from diffusion.sde_samplers import AdaptiveODE

# Rows: luminance (R+G+B)/√3 and two orthonormal chroma axes; M Mᵀ = I.
COLOUR_BASIS = torch.tensor([
    [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
    [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
    [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
])


def to_decorrelated(x: Tensor) -> Tensor:
    """RGB (B, 3, H, W) → (luminance, chroma₁, chroma₂) with the orthonormal ``COLOUR_BASIS``."""
    return torch.einsum("ij,bjhw->bihw", COLOUR_BASIS.to(x), x)


def from_decorrelated(z: Tensor) -> Tensor:
    """Inverse of ``to_decorrelated`` (the transpose, as the basis is orthonormal)."""
    return torch.einsum("ji,bjhw->bihw", COLOUR_BASIS.to(z), z)


def luminance_coordinate(grey: Tensor) -> Tensor:
    """The luminance coordinate of an RGB image whose channel mean is ``grey`` (B, 1, H, W): √3 · grey."""
    return grey * math.sqrt(3)


def fit_to_range(x: Tensor, grey: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Shrink each pixel's chroma just enough that RGB lies in ``value_range``; the channel mean stays ``grey``.

    x = g + s (x − mean x) with the largest s ∈ [0, 1] keeping every channel in range; s = 0 (grey) always
    fits when g does, so the result is in range and its luminance is exactly the input's.
    """
    low, high = value_range
    grey = grey.clamp(low, high)
    chroma = x - x.mean(dim=1, keepdim=True)
    room = torch.where(chroma > 0, (high - grey) / chroma.clamp(min=1e-12), (low - grey) / chroma.clamp(max=-1e-12))
    scale = room.amin(dim=1, keepdim=True).clamp(0, 1)
    return grey + scale * chroma


class Colourise:
    """Hook: replace the luminance coordinate of x by the known one, forward-noised to x's level.

    z = M x; z_lum ← α y + σ ε; x ← Mᵀ z (Song et al. 2021, App. I.2). After the last step (σ = 0) the
    channel mean equals ``grey`` exactly, and ``value_range`` (if given) is enforced by ``fit_to_range``.

    Args:
        grey: known grey image (B, 1, H, W), the channel mean of the wanted colour image, in value range.
        value_range: the model's pixel range, used only for the final projection.
    """

    def __init__(self, grey: Tensor, value_range: Optional[tuple[float, float]] = None) -> None:
        if grey.ndim != 4 or grey.shape[1] != 1:
            raise ValueError(f"Colourise takes grey images (B, 1, H, W), got shape {tuple(grey.shape)}.")
        self.grey, self.value_range = grey, value_range

    def __call__(self, state: StepState) -> Tensor:
        if state.x.shape[1] != 3:
            raise ValueError(f"Colourise needs an RGB model (3 channels), this one has {state.x.shape[1]}.")
        grey = self.grey.to(state.x)
        z = to_decorrelated(state.x)
        known = luminance_coordinate(grey)
        final = not bool((state.sigma_next > 0).any())
        if not final:
            known = state.alpha_next * known + state.sigma_next * randn_like(known, state.generator)
        x = from_decorrelated(torch.cat([known, z[:, 1:]], dim=1))
        if final and self.value_range is not None:
            x = fit_to_range(x, grey, self.value_range)
        return x


def ddim_times(process: NoiseProcess, steps: int, spacing: str = "leading") -> list[Optional[float]]:
    """Descending process times for deterministic DDIM, ending with None (the clean image, α = 1, σ = 0).

    DDPM: the ``DDIMSampler`` steps (same spacing); continuous processes: ``steps`` uniform times t_max … t_min.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if isinstance(process, DiscreteVPProcess):
        return [int(t) for t in spaced_timesteps(process.num_timesteps, steps, spacing)] + [None]  # type: ignore
    t_min, t_max = float(getattr(process, "t_min", 1e-3)), float(getattr(process, "t_max", 1.0))
    return torch.linspace(t_max, t_min, steps, dtype=torch.float64).tolist() + [None]


def _marginal(process: NoiseProcess, t: Optional[float], x: Tensor) -> tuple[Tensor, Tensor]:
    if t is None:
        one = x.new_ones(x.shape[0], *([1] * (x.ndim - 1)))
        return one, torch.zeros_like(one)
    alpha, sigma = process.marginal(_time(t, x), x.ndim)
    return alpha.to(x.dtype), sigma.to(x.dtype)


def _time(t: float, x: Tensor) -> Tensor:
    dtype = torch.long if isinstance(t, int) else torch.float32
    return torch.full((x.shape[0],), t, device=x.device, dtype=dtype)


def _eps(denoise: DenoiseFn, x: Tensor, t: float) -> Tensor:
    """ε̂ of the raw network at (x, t), no x̂_0 clipping (clipping assumes x sits at t, which inversion breaks)."""
    tt = _time(t, x)
    return denoise.process.to_x0_eps(denoise.raw(x, tt), x, tt, denoise.prediction_type)[1]


@torch.no_grad()
def ddim_invert(denoise: DenoiseFn, x0: Tensor, times: Sequence[Optional[float]]) -> Tensor:
    """Run DDIM (η = 0) forward from a clean x0 to x at times[0]; ``times`` as from ``ddim_times``.

    Step t_{k+1} → t_k (t_{k+1} < t_k): ε̂ = ε_θ(x_{t_{k+1}}, t_k), x̂_0 = (x − σ_{k+1} ε̂)/α_{k+1},
    x_{t_k} = α_k x̂_0 + σ_k ε̂ (DDIM Eq. 13 run forward, with the usual ε(x_{t_{k+1}}) ≈ ε(x_{t_k})).
    """
    x = x0
    for k in range(len(times) - 2, -1, -1):
        eps = _eps(denoise, x, times[k])  # type: ignore[arg-type]
        alpha_prev, sigma_prev = _marginal(denoise.process, times[k + 1], x)
        alpha, sigma = _marginal(denoise.process, times[k], x)
        x = alpha * (x - sigma_prev * eps) / alpha_prev + sigma * eps
    return x


@torch.no_grad()
def ddim_decode(denoise: DenoiseFn, x_T: Tensor, times: Sequence[Optional[float]]) -> Tensor:
    """Deterministic DDIM (η = 0) from x_T at times[0] to the clean image: x_{t'} = α' x̂_0 + σ' ε̂ (Eq. 12).

    On DDPM's process this is ``DDIMSampler(eta=0)`` step for step (with the module's x̂_0 clipping).
    """
    x = x_T
    for k in range(len(times) - 1):
        pred = denoise(x, _time(times[k], x))  # type: ignore[arg-type]
        alpha, sigma = _marginal(denoise.process, times[k + 1], x)
        x = alpha * pred.x0 + sigma * pred.eps
    return x


def slerp(a: Tensor, b: Tensor, n: int) -> Tensor:
    """n points on the great circle from a to b, (n, *a.shape), endpoints included.

    x(τ) = sin((1 − τ)θ)/sin θ · a + sin(τθ)/sin θ · b, cos θ = ⟨a, b⟩/(‖a‖‖b‖) (Shoemake 1985); for
    ‖a‖ = ‖b‖ every point has that norm, so Gaussian x_T stay on the typical shell. Parallel a, b fall back
    to linear interpolation.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs a and b of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if n < 2:
        raise ValueError(f"slerp needs n >= 2 points (the two endpoints), got {n}.")
    fa, fb = a.double().flatten(), b.double().flatten()
    cos = torch.dot(fa, fb) / (fa.norm() * fb.norm())
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    tau = torch.linspace(0, 1, n, dtype=torch.float64)
    if float(torch.sin(theta)) < 1e-6:
        wa, wb = 1 - tau, tau
    else:
        wa, wb = torch.sin((1 - tau) * theta) / torch.sin(theta), torch.sin(tau * theta) / torch.sin(theta)
    out = wa[:, None] * fa[None] + wb[:, None] * fb[None]
    out[0], out[-1] = fa, fb
    return out.reshape(n, *a.shape).to(a.dtype)


def check_steerable(sampler: Sampler, name: str) -> None:
    """Replacement needs hooks after every step; AdaptiveODE runs them only after its solve, so refuse it."""
    inner = getattr(sampler, "sampler", sampler)
    if isinstance(inner, AdaptiveODE):
        raise ValueError(f"{name} replaces known values after every step, but AdaptiveODE runs hooks only after its "
                         "solve, so nothing would steer the sample: use HeunODE, DDIMSampler or PredictorCorrector.")


class TaskSampler(Sampler):
    """A sampler plus per-request hooks and/or starting noise, for code paths that pass only a sampler (``predict``):
    a restoration data module installs one for each batch (``datamodules/restoration.py``).

    Args:
        sampler: the sampler that does the work.
        hooks: extra hooks run after each of its steps (e.g. ``Inpaint`` for this batch).
        x_T: starting noise for this batch, replacing the prior draw (e.g. slerp points).
    """

    def __init__(self, sampler: Sampler, hooks: Sequence[Hook] = (), x_T: Optional[Tensor] = None) -> None:
        super().__init__(sampler.steps)
        self.sampler, self.hooks, self.x_T = sampler, tuple(hooks), x_T

    def check(self, process: NoiseProcess) -> None:
        self.sampler.check(process)

    def describe(self) -> dict:
        return self.sampler.describe()

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        start = x_T if self.x_T is None else self.x_T.to(x_T)
        if start.shape != x_T.shape:
            raise ValueError(f"TaskSampler holds starting noise of shape {tuple(start.shape)} for a batch of shape "
                             f"{tuple(x_T.shape)}; build it for this batch.")
        return self.sampler.sample(denoise, start, generator, (*hooks, *self.hooks))


__all__ = ["TaskSampler", "check_steerable", "COLOUR_BASIS", "Colourise", "to_decorrelated", "from_decorrelated",
           "luminance_coordinate", "fit_to_range", "ddim_times", "ddim_invert", "ddim_decode", "slerp"]
