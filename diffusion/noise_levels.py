"""Training noise-level distributions: which times t a training batch draws.

Ho et al. draw t uniformly, which on DDPM's linear schedule spends half the batch at σ = √(1/SNR) > 3, where
the network mostly predicts the data mean. EDM (Karras et al. 2022, Table 1) draws ln σ ~ N(P_mean, P_std²)
instead, concentrating training on the middle noise levels that decide what samples look like. VDM (Kingma et
al. 2021) keeps the law but stratifies a batch's draws over it, which lowers the variance of the loss
estimate at no cost. A distribution here maps such a choice onto any process's own times, so the network, its
time conditioning and every sampler stay as they are. Pure torch; ``DDPMModule(noise_levels=...)`` takes any
subclass by ``class_path``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from diffusion.processes import NoiseProcess

CONTINUOUS_GRID = 1000  # times a continuous process is discretised to


class NoiseLevelDistribution:
    """Base class: ``probabilities(process)`` over ``support(process)``; calling the object draws n times."""

    def support(self, process: NoiseProcess) -> Tensor:
        """The times a draw can return: every step of a discrete process, or an even grid of a continuous one."""
        if process.discrete:
            return torch.arange(process.num_timesteps)
        return torch.linspace(*process.time_range(), CONTINUOUS_GRID)

    def probabilities(self, process: NoiseProcess) -> Tensor:
        raise NotImplementedError

    def __call__(self, process: NoiseProcess, n: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        times = self.support(process)
        probs = self.probabilities(process).to(device)
        index = torch.multinomial(probs, n, replacement=True, generator=generator)
        return times.to(device)[index]


class LogNormalSigma(NoiseLevelDistribution):
    """EDM's training distribution: ln σ ~ N(P_mean, P_std²) with σ = √(1/SNR(t)) (Karras et al. 2022, Table 1).

    Each time of the support gets the normal's mass between the midpoints of its ln σ and its neighbours', so
    the draws follow the continuous law as closely as the process's steps allow; the tails beyond the process's
    smallest and largest σ fall on its first and last steps.

    Args:
        p_mean: P_mean, the mean of ln σ (EDM: −1.2, for data of standard deviation 0.5).
        p_std: P_std, the standard deviation of ln σ (EDM: 1.2).
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        if not p_std > 0:
            raise ValueError(f"LogNormalSigma.p_std must be > 0 (EDM uses 1.2), got {p_std}.")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def probabilities(self, process: NoiseProcess) -> Tensor:
        log_sigma = -0.5 * process.snr(self.support(process)).double().cpu().log()
        if not bool((log_sigma[1:] > log_sigma[:-1]).all()):
            raise ValueError(f"LogNormalSigma needs σ(t) increasing in t; {type(process).__name__}'s is not.")
        edges = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), (log_sigma[1:] + log_sigma[:-1]) / 2,
                           torch.tensor([math.inf], dtype=torch.float64)])
        cdf = torch.special.ndtr((edges - self.p_mean) / self.p_std)
        return (cdf[1:] - cdf[:-1]).float()

    def __repr__(self) -> str:
        return f"LogNormalSigma(p_mean={self.p_mean}, p_std={self.p_std})"


class Uniform(NoiseLevelDistribution):
    """Every time of the support equally likely: Ho et al.'s uniform t (Alg. 1), as a distribution to stratify."""

    def probabilities(self, process: NoiseProcess) -> Tensor:
        n = len(self.support(process))
        return torch.full((n,), 1.0 / n)

    def __repr__(self) -> str:
        return "Uniform()"


class Stratified(NoiseLevelDistribution):
    """A base law's draws stratified over a batch: VDM's low-discrepancy sampler (Kingma et al. 2021).

    The i-th of n draws takes the base's inverse CDF at u_i = (i + u)/n with one u ~ U[0, 1) per batch, so each
    draw still follows the base law while the batch covers it evenly; the draws are then shuffled, so no batch
    position is tied to a noise level. Only the variance of the batch's loss changes, not what it estimates.

    Args:
        base: the law to stratify; None is the uniform t of Ho et al.
    """

    def __init__(self, base: Optional[NoiseLevelDistribution] = None) -> None:
        if isinstance(base, Stratified):
            raise ValueError("Stratified.base is itself Stratified; give it the law to stratify, e.g. "
                             "diffusion.LogNormalSigma, or None for uniform t.")
        self.base = base if base is not None else Uniform()

    def support(self, process: NoiseProcess) -> Tensor:
        return self.base.support(process)

    def probabilities(self, process: NoiseProcess) -> Tensor:
        return self.base.probabilities(process)

    def __call__(self, process: NoiseProcess, n: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
        times = self.support(process)
        cdf = self.probabilities(process).double().cumsum(0)
        where = generator.device if generator is not None else "cpu"  # a CUDA generator draws on its own device
        offset = torch.rand((), generator=generator, device=where, dtype=torch.float64).cpu()
        order = torch.randperm(n, generator=generator, device=where).cpu()
        u = (torch.arange(n, dtype=torch.float64) + offset) / n
        index = torch.searchsorted(cdf / cdf[-1], u, right=True).clamp_(max=len(times) - 1)
        return times[index[order]].to(device)

    def __repr__(self) -> str:
        return f"Stratified(base={self.base!r})"
