"""RePaint resampling (Lugmayr et al. 2022): a sampler wrapper that jumps back in time to harmonise inpaintings.

Replacement alone (``diffusion.hooks.Inpaint``) conditions the unknown pixels only through the noised
known ones, which often leaves seams. RePaint goes down ``jump_length`` steps, noises x back up the same
``jump_length`` steps with the forward transition q(x_t | x_{t'}) (t > t'), and repeats this
``jump_n_sample − 1`` times per block before going on (Alg. 1 and the jump schedule of §4.2). The reverse
moves are the wrapped sampler's own step rule (DDPM or DDIM); hooks (the known-pixel replacement) run after
every reverse move, as in Alg. 1, line 8.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from diffusion.processes import GeneratorLike, randn_like
from diffusion.samplers import DenoiseFn, DiscreteSampler, Hook, SampleOutput, Sampler, StepState


def jump_schedule(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """Positions k (0 = x_T, ``num_steps`` = clean) visited by RePaint, starting at 0 (Lugmayr et al. §4.2).

    A move k → k + 1 is a reverse step and k + 1 → k a forward jump; with ``jump_n_sample = 1`` the schedule
    is 0, 1, …, num_steps.
    """
    if jump_length < 1 or jump_n_sample < 1:
        raise ValueError(f"jump_length and jump_n_sample must be >= 1, got {jump_length}, {jump_n_sample}.")
    jumps = {j: jump_n_sample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    t, times = num_steps, []  # t: the step x sits at, num_steps − 1 (x_T) … 0; −1 is the clean image
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    return [num_steps - 1 - t for t in times] + [num_steps]


class RePaint(Sampler):
    """Wraps a ``DiscreteSampler`` (``DDPMSampler``, ``DDIMSampler``) with RePaint's resampling jumps.

    NFE = number of reverse moves: steps + (jump_n_sample − 1) · jump_length per resampled block; ``sample`` reports it.

    Args:
        sampler: the reverse step rule and its steps / spacing.
        jump_length: j, steps per jump (RePaint: 10 on T = 250).
        jump_n_sample: r, how often each block is resampled (RePaint: 10); 1 is plain replacement.
    """

    def __init__(self, sampler: DiscreteSampler, jump_length: int = 10, jump_n_sample: int = 10) -> None:
        if not isinstance(sampler, DiscreteSampler):
            raise ValueError(f"RePaint resamples on DDPM's integer steps and wraps DDPMSampler or DDIMSampler, got "
                             f"{type(sampler).__name__}; use jump_n_sample=1 (plain replacement) with SDE samplers.")
        if jump_length < 1 or jump_n_sample < 1:
            raise ValueError(f"jump_length and jump_n_sample must be >= 1, got {jump_length}, {jump_n_sample}.")
        super().__init__(sampler.steps)
        self.sampler, self.jump_length, self.jump_n_sample = sampler, jump_length, jump_n_sample

    def check(self, process) -> None:
        self.sampler.check(process)

    def describe(self) -> dict:
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "sampler": self.sampler.describe(),
                "jump_length": self.jump_length, "jump_n_sample": self.jump_n_sample}

    def sample(self, denoise: DenoiseFn, x_T: Tensor, generator: GeneratorLike = None,
               hooks: Sequence[Hook] = ()) -> SampleOutput:
        process = denoise.process
        self.sampler.check(process)
        grid = self.sampler.timesteps(process).tolist() + [-1]
        n_steps = len(grid) - 1
        path = jump_schedule(n_steps, self.jump_length, self.jump_n_sample)
        nfe0, x, n = denoise.nfe, x_T, x_T.shape[0]
        moves = sum(1 for a, b in zip(path, path[1:]) if b == a + 1)
        index = 0

        def times(k: int) -> Tensor:
            return torch.full((n,), grid[k], device=x.device, dtype=torch.long)

        for k, k_next in zip(path, path[1:]):
            if k_next == k + 1:
                pred = denoise(x, times(k))
                x = self.sampler.step(process, pred, grid[k], grid[k_next], x, generator)
                if hooks:
                    alpha, sigma = process.marginal(times(k_next), x.ndim)
                    x = self.run_hooks(hooks, StepState(index, moves, x, pred, times(k), times(k_next),
                                                        alpha.to(x.dtype), sigma.to(x.dtype), generator))
                index += 1
            else:
                # Forward jump t' → t: x_t = a x_{t'} + √v z, a = α_t/α_{t'}, v = σ_t² − a² σ_{t'}² (Ho et al. Eq. 4).
                alpha_s, sigma_s = process.marginal(times(k), x.ndim)
                alpha_t, sigma_t = process.marginal(times(k_next), x.ndim)
                a = (alpha_s / alpha_t).to(x.dtype)
                v = (sigma_s**2 - a**2 * sigma_t**2).clamp(min=0).to(x.dtype)
                x = a * x + v.sqrt() * randn_like(x, generator)
        return SampleOutput(x, denoise.nfe - nfe0)


def with_resampling(sampler: Sampler, jump_length: int = 1, jump_n_sample: int = 1) -> Sampler:
    """``sampler`` wrapped in ``RePaint`` when jump_n_sample > 1, else ``sampler`` itself."""
    return sampler if jump_n_sample == 1 else RePaint(sampler, jump_length, jump_n_sample)  # type: ignore[arg-type]


__all__ = ["RePaint", "jump_schedule", "with_resampling"]
