"""Samplers for continuous processes: reverse SDE, predictor–corrector, probability-flow ODE, Langevin.

Every sampler here accepts VPSDE, SubVPSDE and VESDE, and DDPM's ``DiscreteVPProcess``, which it views as
its VP-SDE (``as_sde``: ``VPSDE.from_discrete`` for the linear schedule, ``DiscreteVPSDE`` for others): the
network then sees t (T − 1), the DDPM index, so any DDPM checkpoint runs under any of them. The time grid
is t_max = t_0 > … > t_{N−1} = t_min, and step i moves x from t_i to t_{i+1} with t_N = 0 (the data).
Hooks run after every step; after the last one they see α = 1, σ = 0. NFE is counted on the caller's
DenoiseFn.

References: Song et al. 2021 (score SDEs: Eqs. 6, 13, Alg. 2–5, App. E–G), Song & Ermon 2019 (NCSN,
annealed Langevin, Alg. 1), Karras et al. 2022 (Heun, Alg. 1).
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from torch import Tensor

from diffusion.processes import GeneratorLike, NoiseProcess, randn_like
from diffusion.samplers import DenoiseFn, Hook, Prediction, SampleOutput, Sampler, StepState
from diffusion.sde import SDE, VESDE, as_sde

Predictor = Literal["reverse_diffusion", "euler_maruyama", "ancestral"]
_ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


class _CountingDenoiseFn(DenoiseFn):
    """The caller's network re-bound to an SDE: each evaluation also counts on the caller's DenoiseFn."""

    def __init__(self, outer: DenoiseFn, sde: SDE) -> None:
        super().__init__(outer.net_fn, sde, outer.prediction_type, outer.clip_range, outer.threshold)
        self.outer = outer

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        self.outer.nfe += 1
        return super().raw(x, t)


def sde_denoiser(denoise: DenoiseFn, sde: SDE) -> DenoiseFn:
    """``denoise`` evaluated at continuous time t of ``sde`` (its ``network_time`` maps t for the network)."""
    return denoise if denoise.process is sde else _CountingDenoiseFn(denoise, sde)


def uniform_like(x: Tensor, low: float, high: float, generator: GeneratorLike = None) -> Tensor:
    """U[low, high] noise shaped like x, one generator per sample when a list is given."""
    if generator is None or isinstance(generator, torch.Generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"Got {len(generator)} generators for a batch of {x.shape[0]}.")
        u = torch.stack([torch.rand(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device)
                         for g in generator])
    return low + (high - low) * u


def _score(sde: SDE, pred: Prediction, t: Tensor) -> Tensor:
    """∇log p_t = −ε̂/σ(t)."""
    return -pred.eps / sde.marginal(t, pred.eps.ndim)[1].to(pred.eps.dtype)


def _mean_norm(x: Tensor) -> Tensor:
    """Batch mean of the per-sample L2 norms."""
    return x.reshape(x.shape[0], -1).norm(dim=1).mean()


def langevin_correct(x: Tensor, score: Tensor, snr: float, alpha: Tensor, generator: GeneratorLike) -> Tensor:
    """One Langevin corrector step x ← x + ε s + √(2ε) z with ε = 2 α (r ‖z‖ / ‖s‖)² (Song et al. 2021, Alg. 4–5).

    The norms are batch means, as in score_sde: per-sample norms make ε explode where ‖s‖ ≈ 0 (near a mode),
    which low-dimensional data hits often. So a sample's step size depends on its batch.
    """
    z = randn_like(x, generator)
    step = 2 * alpha * (snr * _mean_norm(z) / _mean_norm(score).clamp(min=1e-12)) ** 2
    return x + step * score + (2 * step).sqrt() * z


class SDESampler(Sampler):
    """Base class: a loop on the grid t_0 = t_max > … > t_{N−1} = t_min, then t_N = 0.

    Args:
        steps: N, the number of grid points (and of steps).
    """

    def check(self, process: NoiseProcess) -> None:
        as_sde(process)

    def setup(self, denoise: DenoiseFn) -> tuple[SDE, DenoiseFn]:
        sde = as_sde(denoise.process)
        self.check(sde)
        if denoise.prediction_type == "v_prediction" and not sde.variance_preserving:
            raise ValueError(f"v-prediction assumes α² + σ² = 1, which {type(sde).__name__} does not satisfy: "
                             "train this process with epsilon or sample prediction.")
        return sde, sde_denoiser(denoise, sde)

    def grid(self, sde: SDE) -> list[float]:
        ts = torch.linspace(sde.t_max, sde.t_min, self.steps, dtype=torch.float64).tolist()
        return ts + [0.0]

    @staticmethod
    def hook(hooks: Sequence[Hook], sde: SDE, index: int, num_steps: int, x: Tensor, pred: Prediction, t: Tensor,
             t_next: Tensor, generator: GeneratorLike) -> Tensor:
        """Run hooks with the marginal at ``t_next`` (1 and 0 after the last step)."""
        if not hooks:
            return x
        if index == num_steps - 1:
            alpha = x.new_ones(x.shape[0], *([1] * (x.ndim - 1)))
            sigma = torch.zeros_like(alpha)
        else:
            alpha, sigma = (v.to(x.dtype) for v in sde.marginal(t_next, x.ndim))
        return Sampler.run_hooks(hooks, StepState(index, num_steps, x, pred, t, t_next, alpha, sigma, generator))


def _full(x: Tensor, t: float) -> Tensor:
    """A (B,) time tensor, float32 at least (t in half precision is too coarse near t_min)."""
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))


class EulerMaruyama(SDESampler):
    """Euler–Maruyama on the reverse SDE: x ← x + [f − g² s_θ] Δt + g √|Δt| z, Δt < 0 (Song et al. 2021, Eq. 6).

    N NFE.

    Args:
        steps: grid points N.
        denoise_last: the last step (t_min → 0) returns x̂_0(x, t_min) (Tweedie) instead of an EM step with noise.
    """

    def __init__(self, steps: int = 1000, denoise_last: bool = True) -> None:
        super().__init__(steps)
        self.denoise_last = denoise_last

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        sde, inner = self.setup(denoise)
        nfe0, x, ts = denoise.nfe, x_T, self.grid(sde)
        for i in range(self.steps):
            t, t_next = _full(x, ts[i]), _full(x, ts[i + 1])
            pred = inner(x, t)
            if i == self.steps - 1 and self.denoise_last:
                x = pred.x0
            else:
                dt = ts[i + 1] - ts[i]
                x = x + sde.reverse_drift(x, t, _score(sde, pred, t)) * dt
                x = x + sde.diffusion(t, x.ndim).to(x.dtype) * abs(dt) ** 0.5 * randn_like(x, generator)
            x = self.hook(hooks, sde, i, self.steps, x, pred, t, t_next, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


class PredictorCorrector(SDESampler):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1 / §4.2): M Langevin corrector steps at t_i, then
    one predictor step t_i → t_{i+1}. N (M + 1) NFE.

    Predictors (with (a, v) the exact forward transition t_{i+1} → t_i, ``SDE.transition``):
    ``reverse_diffusion`` x ← (2 − a) x + v s_θ + √v z (App. E); ``euler_maruyama`` as ``EulerMaruyama``;
    ``ancestral`` x ← the Gaussian posterior q(x_{t_{i+1}} | x_{t_i}, x̂_0) (Ho et al. Eq. 7 for any α, σ;
    score_sde's ancestral predictor for VE, DDPM's with β̃ for VP).

    Args:
        steps: grid points N (score_sde: 1000 for VP, 2000 for the 256-px VE models).
        predictor: the predictor step.
        corrector_steps: M Langevin steps per grid point (0: predictor only).
        snr: signal-to-noise ratio r of the corrector (score_sde: 0.16 on CIFAR-10, 0.075–0.15 at 256 px).
        denoise_last: the last predictor step (t_min → 0) returns x̂_0 and adds no noise.
    """

    def __init__(self, steps: int = 1000, predictor: Predictor = "reverse_diffusion", corrector_steps: int = 1,
                 snr: float = 0.16, denoise_last: bool = True) -> None:
        if predictor not in ("reverse_diffusion", "euler_maruyama", "ancestral"):
            raise ValueError(f"Unknown predictor {predictor!r}: choose reverse_diffusion, euler_maruyama or ancestral.")
        if corrector_steps < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}.")
        if snr <= 0:
            raise ValueError(f"snr must be > 0, got {snr}.")
        super().__init__(steps)
        self.predictor, self.corrector_steps, self.snr, self.denoise_last = predictor, corrector_steps, snr, denoise_last

    def predict(self, sde: SDE, x: Tensor, pred: Prediction, t: Tensor, t_next: Tensor, dt: float,
                generator: GeneratorLike) -> Tensor:
        """One predictor step t → t_next (dt = t_next − t < 0)."""
        if self.predictor == "euler_maruyama":
            x = x + sde.reverse_drift(x, t, _score(sde, pred, t)) * dt
            std = sde.diffusion(t, x.ndim).to(x.dtype) * abs(dt) ** 0.5
        elif self.predictor == "reverse_diffusion":
            a, v = (c.to(x.dtype) for c in sde.transition(t_next, t, x.ndim))
            x = (2 - a) * x + v * _score(sde, pred, t)
            std = v.sqrt()
        else:
            alpha_t, sigma_t = (c.to(x.dtype) for c in sde.marginal(t, x.ndim))
            alpha_s, sigma_s = (c.to(x.dtype) for c in sde.marginal(t_next, x.ndim))
            a, v = (c.to(x.dtype) for c in sde.transition(t_next, t, x.ndim))
            x = (a * sigma_s**2 * x + alpha_s * v * pred.x0) / sigma_t**2
            std = (v * sigma_s**2 / sigma_t**2).sqrt()
        return x + std * randn_like(x, generator)

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        sde, inner = self.setup(denoise)
        nfe0, x, ts = denoise.nfe, x_T, self.grid(sde)
        for i in range(self.steps):
            t, t_next = _full(x, ts[i]), _full(x, ts[i + 1])
            alpha_i = sde.transition(t_next, t, x.ndim)[0].to(x.dtype) ** 2  # α_i of Alg. 5 (1 − β_i, VP) and Alg. 4 (1, VE)
            for _ in range(self.corrector_steps):
                x = langevin_correct(x, _score(sde, inner(x, t), t), self.snr, alpha_i, generator)
            pred = inner(x, t)
            if i == self.steps - 1 and self.denoise_last:
                x = pred.x0
            else:
                x = self.predict(sde, x, pred, t, t_next, ts[i + 1] - ts[i], generator)
            x = self.hook(hooks, sde, i, self.steps, x, pred, t, t_next, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


class HeunODE(SDESampler):
    """Probability-flow ODE dx/dt = f − ½ g² s_θ (Song et al. 2021, Eq. 13) with fixed-step Heun (Karras et al.
    2022, Alg. 1): 2 NFE per step; the last step t_min → 0 returns x̂_0(x, t_min), 1 NFE. 2N − 1 NFE.

    Args:
        steps: grid points N.
    """

    def __init__(self, steps: int = 50) -> None:
        super().__init__(steps)

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        sde, inner = self.setup(denoise)
        nfe0, x, ts = denoise.nfe, x_T, self.grid(sde)
        for i in range(self.steps):
            t, t_next = _full(x, ts[i]), _full(x, ts[i + 1])
            pred = inner(x, t)
            if i == self.steps - 1:
                x = pred.x0
            else:
                dt = ts[i + 1] - ts[i]
                d = sde.reverse_drift(x, t, _score(sde, pred, t), probability_flow=True)
                x_euler = x + d * dt
                d_next = sde.reverse_drift(x_euler, t_next, _score(sde, inner(x_euler, t_next), t_next), True)
                x = x + 0.5 * (d + d_next) * dt
            x = self.hook(hooks, sde, i, self.steps, x, pred, t, t_next, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


class AdaptiveODE(SDESampler):
    """Probability-flow ODE (Song et al. 2021, Eq. 13) from t_max to t_min with ``torchdiffeq.odeint``
    (adaptive step), then x̂_0(x, t_min) when ``denoise_last``. The NFE is what the solver used.

    Hooks run after the solve and after the final x̂_0 only.

    Args:
        rtol, atol: solver tolerances (score_sde: 1e-5).
        method: a torchdiffeq method (``dopri5``, ``bosh3``, ``adaptive_heun``, …).
        denoise_last: finish with x̂_0(x, t_min) (1 NFE).
    """

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", denoise_last: bool = True) -> None:
        super().__init__(None)
        self.rtol, self.atol, self.method, self.denoise_last = rtol, atol, method, denoise_last

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        try:
            from torchdiffeq import odeint  # only this sampler needs it
        except ImportError as err:
            raise ImportError("AdaptiveODE needs torchdiffeq: pip install torchdiffeq.") from err
        sde, inner = self.setup(denoise)
        nfe0 = denoise.nfe

        def velocity(t: Tensor, x: Tensor) -> Tensor:
            tt = _full(x, float(t))
            return sde.reverse_drift(x, tt, _score(sde, inner(x, tt), tt), probability_flow=True)

        span = torch.tensor([sde.t_max, sde.t_min], dtype=x_T.dtype, device=x_T.device)
        # Adaptive solvers must not step past t_min (the marginals are undefined below t = 0): make it a grid point.
        options = {"step_t": span[1:]} if self.method in _ADAPTIVE else None
        x = odeint(velocity, x_T, span, rtol=self.rtol, atol=self.atol, method=self.method, options=options)[-1]
        t_max, t_min, zero = _full(x, sde.t_max), _full(x, sde.t_min), _full(x, 0.0)
        if self.denoise_last:
            pred = inner(x, t_min)
            if hooks:
                x = self.hook(hooks, sde, 0, 2, x, pred, t_max, t_min, generator)
                pred = inner(x, t_min)
            x = self.hook(hooks, sde, 1, 2, pred.x0, pred, t_min, zero, generator)
        elif hooks:
            x = self.hook(hooks, sde, 0, 1, x, inner(x, t_min), t_max, zero, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


class _LangevinBase(SDESampler):
    """Shared by the Langevin samplers: VE check, initialisation and one step of Eq. 43."""

    uniform_init: bool
    init_range: tuple[float, float]

    def initial(self, x_T: Tensor, generator: GeneratorLike) -> Tensor:
        return uniform_like(x_T, *self.init_range, generator) if self.uniform_init else x_T

    @staticmethod
    def step(x: Tensor, score: Tensor, step_size: float, generator: GeneratorLike) -> Tensor:
        """x ← x + (ε/2) ∇log p(x) + √ε z (Song & Ermon 2019, Eq. 4; seed Eq. 43)."""
        return x + 0.5 * step_size * score + step_size**0.5 * randn_like(x, generator)

    def check_levels(self, process: NoiseProcess, largest: float, smallest: float) -> VESDE:
        sde = as_sde(process)
        if not isinstance(sde, VESDE):
            raise ValueError(f"{type(self).__name__} anneals over noise levels σ of the VE family (NCSN, VESDE), not "
                             f"{type(sde).__name__}: use PredictorCorrector (Langevin corrector) for VP/DDPM models.")
        lo, hi = sde.sigma_min * (1 - 1e-6), sde.sigma_max * (1 + 1e-6)
        if not lo <= smallest <= largest <= hi:
            raise ValueError(f"{type(self).__name__} needs noise levels in [{sde.sigma_min}, {sde.sigma_max}] "
                             f"(the VESDE's sigma_min, sigma_max), got [{smallest}, {largest}].")
        return sde


class AnnealedLangevin(_LangevinBase):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) on a VE/NCSN model.

    Levels σ_1 > … > σ_L geometric; T steps of Langevin at each level with α_i = ε σ_i² / σ_L²; each level
    starts where the previous one stopped. L T NFE (+1 with ``denoise_last``).

    Args:
        sigma_1: largest noise level σ_1 (seed: 1; the seed's toy: 10).
        sigma_L: smallest noise level σ_L (seed: 0.01; toy: 0.1).
        levels: L.
        steps_per_level: T.
        epsilon: ε of the step size (seed: 2e-5).
        uniform_init: start from U[init_range] instead of x_T (NCSN starts from U[0, 1]).
        init_range: the uniform start's range.
        denoise_last: finish with x̂_0 = x + σ_L² s_θ(x, σ_L) (Song & Ermon 2020; not in Alg. 1).
    """

    def __init__(self, sigma_1: float = 1.0, sigma_L: float = 0.01, levels: int = 10, steps_per_level: int = 100,
                 epsilon: float = 2e-5, uniform_init: bool = False, init_range: tuple[float, float] = (0.0, 1.0),
                 denoise_last: bool = False) -> None:
        if not 0 < sigma_L < sigma_1 or levels < 2:
            raise ValueError(f"Need 0 < sigma_L < sigma_1 and levels >= 2, got sigma_1={sigma_1}, sigma_L={sigma_L}, "
                             f"levels={levels}.")
        if steps_per_level < 1 or epsilon <= 0:
            raise ValueError(f"Need steps_per_level >= 1 and epsilon > 0, got {steps_per_level}, {epsilon}.")
        super().__init__(levels * steps_per_level)
        self.sigma_1, self.sigma_L, self.levels, self.steps_per_level = sigma_1, sigma_L, levels, steps_per_level
        self.epsilon, self.uniform_init, self.init_range = epsilon, uniform_init, tuple(init_range)
        self.denoise_last = denoise_last

    def sigmas(self) -> Tensor:
        """σ_i = σ_1 (σ_L/σ_1)^{(i−1)/(L−1)}, i = 1…L."""
        return torch.logspace(0, 1, self.levels, base=self.sigma_L / self.sigma_1, dtype=torch.float64) * self.sigma_1

    def check(self, process: NoiseProcess) -> None:
        self.check_levels(process, self.sigma_1, self.sigma_L)

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        sde, inner = self.setup(denoise)
        nfe0, x = denoise.nfe, self.initial(x_T, generator)
        n, index = self.steps + int(self.denoise_last), 0
        for sigma in self.sigmas().tolist():
            t = _full(x, float(sde.t_for_sigma(sigma)))
            step_size = self.epsilon * sigma**2 / self.sigma_L**2  # α_i = ε σ_i² / σ_L² (Alg. 1, line 3)
            for _ in range(self.steps_per_level):
                pred = inner(x, t)
                x = self.step(x, _score(sde, pred, t), step_size, generator)
                x = self.hook(hooks, sde, index, n, x, pred, t, t, generator)
                index += 1
        if self.denoise_last:
            pred = inner(x, t)
            x = self.hook(hooks, sde, index, n, pred.x0, pred, t, _full(x, 0.0), generator)
        return SampleOutput(x, denoise.nfe - nfe0)


class Langevin(_LangevinBase):
    """Plain Langevin dynamics at one fixed noise level (seed Eq. 43; Song & Ermon 2019, Eq. 4). ``steps`` NFE.

    Args:
        steps: number of Langevin steps T.
        step_size: ε.
        sigma: the noise level whose score is used; None: the process's smallest, σ(t_min).
        uniform_init: start from U[init_range] instead of x_T.
        init_range: the uniform start's range.
    """

    def __init__(self, steps: int = 1000, step_size: float = 0.1, sigma: Optional[float] = None,
                 uniform_init: bool = False, init_range: tuple[float, float] = (0.0, 1.0)) -> None:
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}.")
        super().__init__(steps)
        self.step_size, self.sigma, self.uniform_init, self.init_range = step_size, sigma, uniform_init, tuple(init_range)

    def check(self, process: NoiseProcess) -> None:
        sde = as_sde(process)
        if self.sigma is not None:
            self.check_levels(sde, self.sigma, self.sigma)

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        sde, inner = self.setup(denoise)
        nfe0, x = denoise.nfe, self.initial(x_T, generator)
        t = _full(x, sde.t_min if self.sigma is None else float(sde.t_for_sigma(self.sigma)))
        for i in range(self.steps):
            pred = inner(x, t)
            x = self.step(x, _score(sde, pred, t), self.step_size, generator)
            x = self.hook(hooks, sde, i, self.steps, x, pred, t, t, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


__all__ = ["EulerMaruyama", "PredictorCorrector", "HeunODE", "AdaptiveODE", "AnnealedLangevin", "Langevin",
           "SDESampler", "langevin_correct", "sde_denoiser", "uniform_like"]
