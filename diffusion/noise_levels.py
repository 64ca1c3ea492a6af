"""Training noise-level distributions: which times t a training batch draws.

Ho et al. draw t uniformly, which on DDPM's linear schedule spends half the batch at σ = √(1/SNR) > 3, where
the network mostly predicts the data mean. EDM (Karras et al. 2022, Table 1) draws ln σ ~ N(P_mean, P_std²)
instead, concentrating training on the middle noise levels that decide what samples look like. A distribution
here maps that choice onto any process's own times, so the network, its time conditioning and every sampler stay
as they are. Pure torch; ``DDPMModule(noise_levels=...)`` takes any subclass by ``class_path``.
"""

from __future__ import annotations

import math

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
