"""COIGAN inference: ``inpaint(model, image, masks, seed=...)`` and the tensor helpers the module shares.

The generator input is built exactly as in training (``datamodules.severstal.dataset.COIGANSamples.sample``):
base tile in [0, 1] (zeroed under the union mask if ``mask_base_img``) ++ the clean class masks passed through
the training noise generator (``datamodules/severstal/noise.py``, the spec the run was trained with), clamped
into [0, 1]; empty masks stay zero. Sample i's noise is seeded by ``seed + i`` on a CPU generator, so a result
does not depend on the batch size or the device. A checkpoint written with ``callbacks.EMA(submodule="generator")``
holds the EMA generator in its ``state_dict``, so ``load_coigan`` gives the EMA weights when there are any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from datamodules.severstal.dataset import build_noise

__all__ = ["inpaint", "load_coigan", "build_gen_input", "extract_defects", "collate_samples"]


def extract_defects(image: Tensor, masks: Tensor) -> Tensor:
    """Per-class defect pixels on black: (B, 3, S, S) and (B, N, S, S) → (B, 3·N, S, S), class k at channels 3k:3k+3."""
    b, _, h, w = image.shape
    return (image[:, None] * (masks[:, :, None] > 0)).reshape(b, -1, h, w)


def collate_samples(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack a list of sample dicts (``COIGANSamples.sample``) into a batch dict."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def build_gen_input(base: Tensor, masks: Tensor, noise: Optional[dict[str, Any]], seeds: Sequence[int],
                    mask_base_img: bool = False) -> Tensor:
    """Generator input (B, 3 + N, S, S) from base (B, 3, S, S) in [0, 1] and clean masks (B, N, S, S) in {0, 1}."""
    if base.ndim != 4 or masks.ndim != 4 or base.shape[0] != masks.shape[0] or base.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"expected base (B, 3, H, W) and masks (B, N, H, W), got {tuple(base.shape)} and {tuple(masks.shape)}.")
    if len(seeds) != base.shape[0]:
        raise ValueError(f"one seed per sample: {len(seeds)} seeds for {base.shape[0]} samples.")
    generator_fn = build_noise(noise)
    masks_cpu = (masks.detach().float().cpu() > 0).float()
    noised = []
    for m, seed in zip(masks_cpu, seeds):
        g = torch.Generator().manual_seed(int(seed))
        noised.append(generator_fn(m, generator=g).clamp(0, 1) if m.any() else m)
    noised_t = torch.stack(noised).to(base.device)
    base = base.float()
    if mask_base_img:
        base = base * (1 - masks_cpu.amax(1, keepdim=True).to(base.device))
    return torch.cat([base, noised_t], dim=1)


def load_coigan(checkpoint: str | Path, device: str | torch.device = "cpu") -> Any:
    """A ``COIGANModule`` from a Lightning checkpoint, in eval mode (EMA generator if the run kept one)."""
    from lightning_modules.coigan import COIGANModule

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (runs/<config>/checkpoints/last.ckpt after a fit).")
    model = COIGANModule.load_from_checkpoint(str(path), map_location=device, weights_only=True)
    return model.eval().to(device)


def inpaint(model: Any, image: np.ndarray | Tensor, masks: np.ndarray | Tensor, seed: int = 0,
            blend: Optional[Literal["hard", "none"]] = None) -> np.ndarray | Tensor:
    """Paint the defects ``masks`` asks for into ``image`` with a ``COIGANModule``.

    - NumPy: ``image`` uint8 (H, W, 3), ``masks`` (H, W, N) with non-zero = object → uint8 (H, W, 3).
    - Tensors: ``image`` float (B, 3, H, W) in [0, 1], ``masks`` (B, N, H, W) → float (B, 3, H, W) in [0, 1];
      sample i's noise is seeded by ``seed + i``.
    H and W must be divisible by 2**n_downsampling of the generator (8 for the seed). ``blend`` overrides the
    model's: ``hard`` keeps every pixel outside the union mask equal to the input, ``none`` is the raw output.
    """
    was_training = model.training
    model.eval()
    try:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}.")
            masks = np.asarray(masks)
            if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
                raise ValueError(f"masks must be (H, W, N) matching the image, got {masks.shape} for {image.shape}.")
            base = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            m = torch.from_numpy((masks > 0).astype(np.float32)).permute(2, 0, 1)[None]
            out = model.inpaint_tensors(base, m, [seed], blend)[0]
            return (out.permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        seeds = [seed + i for i in range(image.shape[0])]
        return model.inpaint_tensors(image, masks, seeds, blend)
    finally:
        model.train(was_training)
