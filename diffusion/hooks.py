"""Per-step sampler hooks: inpainting by replacement and trajectory capture.

A hook is called after every step with a ``StepState`` and may return a new x.
"""

from __future__ import annotations

from torch import Tensor

from diffusion.processes import randn_like
from diffusion.samplers import StepState


class Inpaint:
    """Keeps the known pixels: x ← m ⊙ (α x_known + σ ε) + (1 − m) ⊙ x at the level x sits at.

    The score-SDE replacement recipe (Song et al. 2021, App. I.2): known pixels are put back, noised to
    the current level, after every step; after the last step (α = 1, σ = 0) they are exactly the input.

    Args:
        known: the image whose masked pixels are kept (B, C, H, W), in the model's value range.
        mask: 1 where pixels are known (broadcastable to ``known``).
    """

    def __init__(self, known: Tensor, mask: Tensor) -> None:
        self.known, self.mask = known, mask.bool()

    def __call__(self, state: StepState) -> Tensor:
        known = self.known.to(state.x)
        if bool((state.sigma_next > 0).any()):
            known = state.alpha_next * known + state.sigma_next * randn_like(state.x, state.generator)
        return known.where(self.mask.to(state.x.device), state.x)


class Trajectory:
    """Records x (and x̂_0) after every step, on the CPU."""

    def __init__(self) -> None:
        self.x: list[Tensor] = []
        self.x0: list[Tensor] = []

    def __call__(self, state: StepState) -> None:
        self.x.append(state.x.detach().cpu())
        self.x0.append(state.prediction.x0.detach().cpu())


class Progress:
    """A progress bar over the denoising steps of one batch, with its rate and time left (tqdm)."""

    def __init__(self, description: str = "sampling") -> None:
        self.description = description
        self.bar = None

    def __call__(self, state: StepState) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.num_steps, desc=self.description, unit="step", leave=False, dynamic_ncols=True)
        self.bar.update(1)
        if state.index + 1 >= state.num_steps:
            self.bar.close()
