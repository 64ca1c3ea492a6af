"""Continuous-time noise processes: the VP, sub-VP and VE SDEs of Song et al. 2021 ("Score-based generative
modeling through stochastic differential equations", ICLR 2021; §3.4 and App. B).

An ``SDE`` is a ``NoiseProcess`` on continuous t ∈ [t_min, t_max] = [ε, 1] whose forward dynamics are
dx = f(x, t) dt + g(t) dw (Eq. 5) with a Gaussian perturbation kernel x_t = α(t) x_0 + σ(t) ε. On top of
the process contract (``marginal``, ``prior_std``, ``network_time``) it gives the drift f, the diffusion g,
the reverse-time drift (Eq. 6) and probability-flow drift (Eq. 13), and the exact Gaussian transition
between two times, from which the reverse-diffusion and ancestral predictors follow for every SDE alike.
Samplers live in ``diffusion/sde_samplers.py``.

VE convention (as in score_sde's code): σ(t) = σ_min (σ_max/σ_min)^t is the *total* std of x_t around x_0,
so σ(0) = σ_min; the kernel N(x_0, (σ(t)² − σ_min²) I) of the paper differs only by the σ_min² that the
data is taken to carry already (≤ 1e-4 for the defaults). The network is conditioned on σ(t).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion.processes import DiscreteVPProcess, NoiseProcess


def _shape(values: Tensor, ndim: int) -> Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def _float(t: Tensor) -> Tensor:
    return t if t.is_floating_point() else t.to(torch.float32)


class SDE(NoiseProcess):
    """Base class: forward SDE dx = f(x, t) dt + g(t) dw on t ∈ [t_min, t_max] (Song et al. 2021, Eq. 5).

    Subclasses implement ``marginal``, ``drift`` and ``diffusion`` (and ``time_from_network`` when they
    override ``network_time``).

    Args:
        t_min: smallest time samplers visit (ε of score_sde; t = 0 itself is the data).
    """

    discrete = False
    variance_preserving = False  # α² + σ² = 1, which v-prediction assumes
    t_max: float = 1.0

    def __init__(self, t_min: float) -> None:
        super().__init__()
        if not 0 < t_min < self.t_max:
            raise ValueError(f"t_min must be in (0, {self.t_max}), got {t_min}.")
        self.t_min = t_min

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t)."""
        raise NotImplementedError

    def diffusion(self, t: Tensor, ndim: int = 4) -> Tensor:
        """g(t), shaped to broadcast over a tensor of ``ndim`` dims."""
        raise NotImplementedError

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor, probability_flow: bool = False) -> Tensor:
        """f − g² ∇log p_t of the reverse SDE (Eq. 6), or f − ½ g² ∇log p_t of the probability-flow ODE (Eq. 13)."""
        g2 = self.diffusion(t, x.ndim).to(x.dtype) ** 2
        return self.drift(x, t) - (0.5 if probability_flow else 1.0) * g2 * score

    def transition(self, s: Tensor, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        """(a, v) of the exact forward transition x_t = a x_s + √v z for s < t: a = α_t/α_s, v = σ_t² − a² σ_s².

        For VE this is (1, σ_t² − σ_s²) and for VP (√(1 − β), β) with 1 − β = ᾱ_t/ᾱ_s: the discretisation
        f_i = (a − 1) x, G_i = √v of Song et al. 2021, App. E (reverse diffusion samplers).
        """
        alpha_s, sigma_s = self.marginal(s, ndim)
        alpha_t, sigma_t = self.marginal(t, ndim)
        a = alpha_t / alpha_s
        return a, (sigma_t**2 - a**2 * sigma_s**2).clamp(min=0)


class VPSDE(SDE):
    """Variance-preserving SDE dx = −½ β(t) x dt + √β(t) dw, β(t) = β_min + t (β_max − β_min).

    Continuous limit of DDPM (Song et al. 2021, Eq. 11): α(t) = exp(−½ ∫_0^t β), σ(t) = √(1 − α(t)²) (App. B).

    Args:
        beta_min: β(0) (= T·β_1 of an equivalent DDPM).
        beta_max: β(1) (= T·β_T).
        num_timesteps: N of the DDPM whose index the network sees: ``network_time(t) = t (N − 1)``, as
            score_sde labels its VP models.
        t_min: smallest time a sampler visits.
    """

    variance_preserving = True

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, num_timesteps: int = 1000,
                 t_min: float = 1e-3) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"VP-SDE needs 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}.")
        super().__init__(t_min)
        self.beta_min, self.beta_max, self.num_timesteps = beta_min, beta_max, num_timesteps

    @classmethod
    def from_discrete(cls, process: DiscreteVPProcess, t_min: float = 1e-3) -> "VPSDE":
        """The VP-SDE of a DDPM with a linear schedule: β_min = T β_1, β_max = T β_T (Song et al. 2021, App. B)."""
        if not isinstance(process, DiscreteVPProcess):
            raise ValueError(f"VPSDE.from_discrete takes a DiscreteVPProcess, got {type(process).__name__}.")
        if process.schedule != "linear":
            raise ValueError(f"VPSDE.from_discrete needs DDPM's linear β schedule, this model uses "
                             f"{process.schedule!r}: use DiscreteVPSDE(process) (what SDE samplers do by themselves).")
        T = process.num_timesteps
        return cls(process.beta_start * T, process.beta_end * T, num_timesteps=T, t_min=t_min)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + _float(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """∫_0^t β(s) ds = β_min t + ½ (β_max − β_min) t²."""
        t = _float(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        b = self.integrated_beta(t)
        return _shape(torch.exp(-0.5 * b), ndim), _shape(torch.sqrt(-torch.expm1(-b)), ndim)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * _shape(self.beta(t), x.ndim).to(x.dtype) * x

    def diffusion(self, t: Tensor, ndim: int = 4) -> Tensor:
        return _shape(self.beta(t).sqrt(), ndim)

    def network_time(self, t: Tensor) -> Tensor:
        return _float(t) * (self.num_timesteps - 1)

    def time_from_network(self, u: Tensor) -> Tensor:
        return _float(u) / (self.num_timesteps - 1)

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min}, beta_max={self.beta_max}, num_timesteps={self.num_timesteps}, t_min={self.t_min}"


class SubVPSDE(VPSDE):
    """Sub-VP SDE dx = −½ β(t) x dt + √(β(t) (1 − e^{−2∫_0^t β})) dw (Song et al. 2021, Eq. 12).

    Same mean scale as VP, std σ(t) = 1 − e^{−∫_0^t β} (App. B), always below the VP std; prior N(0, I).
    α² + σ² ≠ 1, so v-prediction does not apply. Arguments as ``VPSDE``.
    """

    variance_preserving = False

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        b = self.integrated_beta(t)
        return _shape(torch.exp(-0.5 * b), ndim), _shape(-torch.expm1(-b), ndim)

    def diffusion(self, t: Tensor, ndim: int = 4) -> Tensor:
        return _shape((self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t))).sqrt(), ndim)


class VESDE(SDE):
    """Variance-exploding SDE dx = √(d[σ²(t)]/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t (Song et al. 2021, Eq. 9).

    Continuous limit of SMLD/NCSN. α = 1, σ = σ(t) (see the module note on σ_min), g(t) = σ(t) √(2 log(σ_max/σ_min)),
    prior N(0, σ_max² I). The network is conditioned on σ(t), as NCSN's s_θ(x, σ).

    Args:
        sigma_min: σ(0), the smallest noise level.
        sigma_max: σ(1) = prior std; should be about the largest pairwise distance of the data (Song & Ermon 2020).
        t_min: smallest time a sampler visits.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VE-SDE needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        super().__init__(t_min)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.prior_std = sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(_float(t) * self._log_ratio)

    def t_for_sigma(self, sigma: Tensor | float) -> Tensor:
        """The time t with σ(t) = sigma."""
        return torch.log(torch.as_tensor(sigma, dtype=torch.float32) / self.sigma_min) / self._log_ratio

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        sigma = _shape(self.sigma(t), ndim)
        return torch.ones_like(sigma), sigma

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor, ndim: int = 4) -> Tensor:
        return _shape(self.sigma(t) * math.sqrt(2 * self._log_ratio), ndim)

    def network_time(self, t: Tensor) -> Tensor:
        return self.sigma(t)

    def time_from_network(self, u: Tensor) -> Tensor:
        return self.t_for_sigma(u).to(u.device)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, t_min={self.t_min}"


class DiscreteVPSDE(VPSDE):
    """A DDPM's own schedule (any β_t, e.g. cosine) as a VP-SDE on t ∈ [t_min, 1].

    ᾱ(t) is the DDPM's ᾱ at the fractional index u = t (T − 1), log-linear between steps
    (``DiscreteVPProcess.alpha_bar``), so the marginals are exactly DDPM's at every step. With β(t) = −d log ᾱ/dt
    (piecewise constant: (T − 1) (−log α_{⌊u⌋+1})), f = −½ β x and g = √β generate them (Song et al. 2021, Eq. 11).
    The network sees u, the DDPM index.

    Args:
        process: the DDPM's discrete process.
        t_min: smallest time a sampler visits.
    """

    variance_preserving = True

    def __init__(self, process: DiscreteVPProcess, t_min: float = 1e-3) -> None:
        if not isinstance(process, DiscreteVPProcess):
            raise ValueError(f"DiscreteVPSDE wraps a DiscreteVPProcess, got {type(process).__name__}.")
        SDE.__init__(self, t_min)  # VPSDE's dynamics (drift, diffusion, network time), not its linear β
        self.ddpm, self.num_timesteps = process, process.num_timesteps

    def marginal(self, t: Tensor, ndim: int = 4) -> tuple[Tensor, Tensor]:
        return self.ddpm.marginal(self.network_time(t), ndim)

    def beta(self, t: Tensor) -> Tensor:
        u = self.network_time(t)
        index = (u.floor().long() + 1).clamp(0, self.num_timesteps - 1)
        return -(self.num_timesteps - 1) * self.ddpm.alphas.to(u.device).log()[index].to(u.dtype)

    def extra_repr(self) -> str:
        return f"{self.ddpm.extra_repr()}, t_min={self.t_min}"


def as_sde(process: NoiseProcess) -> SDE:
    """The process as an SDE: SDEs pass through; a DDPM becomes ``VPSDE.from_discrete`` (linear β) or
    ``DiscreteVPSDE`` (any other schedule)."""
    if isinstance(process, SDE):
        return process
    if isinstance(process, DiscreteVPProcess):
        return VPSDE.from_discrete(process) if process.schedule == "linear" else DiscreteVPSDE(process)
    raise ValueError(f"No SDE for a {type(process).__name__}: SDE samplers take VPSDE, SubVPSDE, VESDE or "
                     "DDPM's DiscreteVPProcess.")


__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE", "as_sde"]
