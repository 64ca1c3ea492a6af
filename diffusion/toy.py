"""Toy data with an exact score: Gaussian mixtures, the seed's 2-D mixture, and exact-score denoisers for tests.

A mixture Σ_k w_k N(μ_k, s_k² I) pushed through x_t = α x_0 + σ ε stays a mixture,
Σ_k w_k N(α μ_k, (α² s_k² + σ²) I), so ∇_x log p_t is known in closed form at every noise level. This is the
toy of Song & Ermon 2019 (§3.2.2, Fig. 3) used by the seed (spec §5): 1/5 N((−5,−5), I) + 4/5 N((5,5), I).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from diffusion.processes import NoiseProcess
from diffusion.samplers import DenoiseFn


class GaussianMixture:
    """Σ_k w_k N(μ_k, s_k² I) on R^D; x of any shape (B, …) is flattened to (B, D).

    Args:
        weights: mixture weights w_k (normalised here).
        means: (K, D) component means μ_k.
        stds: (K,) isotropic component stds s_k.
    """

    def __init__(self, weights: Sequence[float], means: Sequence[Sequence[float]] | Tensor,
                 stds: Sequence[float]) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        if self.means.ndim != 2 or not len(self.weights) == len(self.means) == len(self.stds):
            raise ValueError(f"Need K weights, (K, D) means and K stds; got {len(self.weights)} weights, means of "
                             f"shape {tuple(self.means.shape)} and {len(self.stds)} stds.")
        if (self.weights <= 0).any() or (self.stds <= 0).any():
            raise ValueError("Mixture weights and stds must be positive.")
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def gaussian(cls, mean: Sequence[float], std: float) -> "GaussianMixture":
        """A single Gaussian N(mean, std² I)."""
        return cls([1.0], [list(mean)], [std])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples, (n, D) float32."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).float()

    def _components(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Flattened x (B, D), per-sample means α μ_k (B, K, D), variances α² s_k² + σ² (B, K), in float64."""
        flat = x.reshape(x.shape[0], -1).double()
        if flat.shape[1] != self.dim:
            raise ValueError(f"The mixture lives in {self.dim} dims, got samples with {flat.shape[1]}.")
        alpha = torch.as_tensor(alpha, dtype=torch.float64, device=x.device).reshape(-1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)
        means = alpha[:, :, None] * self.means.to(x.device)[None]
        var = alpha**2 * self.stds.to(x.device)[None] ** 2 + sigma**2
        return flat, means, var

    def _log_joint(self, flat: Tensor, means: Tensor, var: Tensor) -> Tensor:
        sq = ((flat[:, None, :] - means) ** 2).sum(-1)
        return self.weights.to(flat.device).log() - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_t(x) of α x_0 + σ ε, x_0 from the mixture; (B,)."""
        return torch.logsumexp(self._log_joint(*self._components(x, alpha, sigma)), dim=1).to(x.dtype)

    def score(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """∇_x log p_t(x) = Σ_k r_k(x) (α μ_k − x) / (α² s_k² + σ²), r_k the posterior responsibilities."""
        flat, means, var = self._components(x, alpha, sigma)
        r = torch.softmax(self._log_joint(flat, means, var), dim=1)
        grad = ((r / var)[:, :, None] * (means - flat[:, None, :])).sum(1)
        return grad.reshape(x.shape).to(x.dtype)

    def mode_weights(self, x: Tensor) -> Tensor:
        """Fraction of samples nearest to each component mean, (K,)."""
        flat = x.reshape(x.shape[0], -1).double()
        nearest = torch.cdist(flat, self.means.to(flat.device)).argmin(1)
        return torch.bincount(nearest, minlength=len(self.weights)).double() / x.shape[0]


def toy_mixture() -> GaussianMixture:
    """The seed's mixture 1/5 N((−5,−5), I) + 4/5 N((5,5), I) (Song & Ermon 2019, §3.2.2)."""
    return GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0])


def exact_net_fn(dist: GaussianMixture, process: NoiseProcess) -> Callable[[Tensor, Tensor], Tensor]:
    """An ε-network with the exact answer: (x, network time) ↦ ε* = −σ(t) ∇log p_t(x) under ``process``."""

    def net_fn(x: Tensor, u: Tensor) -> Tensor:
        alpha, sigma = process.marginal(process.time_from_network(u), 1)
        return -sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * dist.score(x, alpha, sigma)

    return net_fn


def exact_denoiser(dist: GaussianMixture, process: NoiseProcess) -> DenoiseFn:
    """A DenoiseFn whose ε̂ is the exact one for ``dist`` under ``process``."""
    return DenoiseFn(exact_net_fn(dist, process), process, "epsilon")


__all__ = ["GaussianMixture", "toy_mixture", "exact_net_fn", "exact_denoiser"]
