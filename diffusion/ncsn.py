"""NCSN and VE processes whose network sees a well-spread time value.

``VESDE.network_time`` returns σ(t) itself. For σ ∈ [0.01, 1] the sinusoidal embedding of our U-Nets
(frequencies 1 … 1e-4, ``networks/embeddings.py``) barely moves: only its first few (of 32) frequencies
change by more than 0.1 between σ = 0.01 and σ = 1, so the network is close to noise-unconditional. Here the
network sees u = (N − 1) · log(σ/σ_min) / log(σ_max/σ_min) = (N − 1) t, the log-scaled σ on DDPM's index
range [0, 999], which the embedding resolves as it does DDPM's steps.

``LogSigmaVESDE`` is the continuous VE-SDE with that network time (t ~ U[t_min, 1], λ(σ) = σ² through
ε-MSE). ``NCSNProcess`` is NCSN's discrete version (Song & Ermon 2019, §4.2): L geometric levels
σ_1 > … > σ_L, training draws one level uniformly, so the loss is Eq. 33 with λ(σ_i) = σ_i² (the ε-MSE
‖ε − ε_θ‖² equals σ² ‖s_θ + (x̃ − x)/σ²‖², Eq. 32). Both remain VE-SDEs, so annealed Langevin, PC and the
ODE samplers run on them unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion.sde import VESDE, _float


class LogSigmaVESDE(VESDE):
    """VE-SDE whose network time is (N − 1) t = (N − 1) log(σ/σ_min)/log(σ_max/σ_min) instead of σ.

    Args:
        sigma_min: σ(0), the smallest noise level.
        sigma_max: σ(1), the prior std.
        t_min: smallest time a sampler visits (and the lower end of the training times).
        num_timesteps: N; the network sees times in [0, N − 1], the range our U-Nets were sized for.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 1.0, t_min: float = 1e-5,
                 num_timesteps: int = 1000) -> None:
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}.")
        super().__init__(sigma_min, sigma_max, t_min)
        self.num_timesteps = num_timesteps

    def network_time(self, t: Tensor) -> Tensor:
        return _float(t) * (self.num_timesteps - 1)

    def time_from_network(self, u: Tensor) -> Tensor:
        return _float(u) / (self.num_timesteps - 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_timesteps={self.num_timesteps}"


class NCSNProcess(LogSigmaVESDE):
    """NCSN's L geometric noise levels σ_i = σ_max (σ_min/σ_max)^{(i−1)/(L−1)} (Song & Ermon 2019, §4.2).

    Level i sits at VE time t_i = (L − i)/(L − 1), so σ(t_i) = σ_i and t_L = 0 is σ_min; training draws a
    level uniformly (Eq. 33, 1/L Σ_i). Sample it with ``AnnealedLangevin(sigma_1=sigma_max,
    sigma_L=sigma_min, levels=L)``, which visits exactly these levels.

    Args:
        sigma_min: σ_L (seed: 0.01).
        sigma_max: σ_1 (seed: 1).
        levels: L (seed: 10).
        num_timesteps: N of the network time (N − 1) t.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 1.0, levels: int = 10,
                 num_timesteps: int = 1000) -> None:
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}.")
        super().__init__(sigma_min, sigma_max, 1e-5, num_timesteps)
        self.levels = levels

    def level_times(self, device: torch.device | str = "cpu") -> Tensor:
        """t_i of the L levels, from σ_1 (t = 1) down to σ_L (t = 0)."""
        return torch.linspace(1.0, 0.0, self.levels, device=device)

    def sigmas(self) -> Tensor:
        """σ_1 > … > σ_L."""
        return self.sigma(self.level_times())

    def training_times(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """One of the L level times per sample, uniformly (Eq. 33)."""
        index = torch.randint(0, self.levels, (n,), device=device, generator=generator)
        return self.level_times(device)[index]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, levels={self.levels}"


__all__ = ["LogSigmaVESDE", "NCSNProcess"]
