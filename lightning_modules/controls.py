"""Controllable generation with any trained diffusion module, without retraining; pure functions on the contract.

    out = inpaint(module, images, masks, Sampling(sampler=DDIMSampler(50)))           # known pixels kept exactly
    out = inpaint(module, images, masks, sampling, jump_length=10, jump_n_sample=10)  # RePaint resampling
    rgb = colourise(rgb_module, grey, sampling)                                       # channel mean kept exactly
    res = ddim_reconstruction(module, x0, steps=100)                                  # x_T and the round-trip error
    strip = interpolate(module, n=8, sampling=sampling)                                # samples along slerp(x_T^a, x_T^b)
    write_strip(strip, "strip.png", module.value_range)

Each works through ``module.generate(indices, labels, sampling=…, hooks=…, x_T=…)``, so sample i is seeded by
``sampling.seed + indices[i]`` as in ``predict``, and guidance, labels and the module's x̂_0 clipping apply.
``diffusion.restoration.TaskSampler`` carries the same hooks / starting noise inside a ``Sampler``, for code
paths (``predict``) that only pass a ``Sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from diffusion.hooks import Inpaint
from diffusion.repaint import with_resampling as _resampling
from diffusion.restoration import Colourise, TaskSampler, check_steerable, ddim_decode, ddim_times, slerp
from diffusion.restoration import ddim_invert as _ddim_invert
from diffusion.samplers import DenoiseFn
from lightning_modules.contract import Sampling
from lightning_modules.ddpm import DDPMModule

__all__ = ["inpaint", "colourise", "ddim_invert", "ddim_reconstruction", "InversionResult", "slerp", "slerp_noise",
           "interpolate", "write_strip", "TaskSampler", "with_resampling", "check_steerable"]


def _need_sampler(module: Any, name: str) -> None:
    if not isinstance(module, DDPMModule):
        raise TypeError(f"{name} needs a diffusion module with denoise_fn() and a process (DDPMModule and its "
                        f"subclasses), got {type(module).__name__}.")


def _labels(module: Any, sampling: Sampling, indices: Tensor, labels: Optional[Tensor]) -> Optional[Tensor]:
    """Explicit labels, else ``sampling.labels`` cycled, else None (the unconditional branch)."""
    if labels is not None or not getattr(module, "num_classes", 0):
        return labels
    return sampling.labels_for(indices, module.num_classes) if sampling.labels else None


def with_resampling(sampling: Sampling, jump_length: int, jump_n_sample: int) -> Sampling:
    """``sampling`` with its sampler wrapped in RePaint when jump_n_sample > 1 (else unchanged)."""
    return replace(sampling, sampler=_resampling(sampling.sampler, jump_length, jump_n_sample))


@torch.no_grad()
def inpaint(module: Any, images: Tensor, masks: Tensor, sampling: Optional[Sampling] = None, jump_length: int = 1,
            jump_n_sample: int = 1, labels: Optional[Tensor] = None, indices: Optional[Tensor] = None) -> Tensor:
    """Fill the unknown pixels of ``images`` (B, C, H, W, in value_range); ``masks`` is 1 where pixels are known.

    Score-SDE replacement (``diffusion.Inpaint``) with any sampler; ``jump_n_sample > 1`` adds RePaint's
    resampling (needs DDPMSampler or DDIMSampler). The known pixels of the output equal the input exactly.
    """
    _need_sampler(module, "inpaint")
    sampling = with_resampling(module.resolve_sampling(sampling or module.sampling, check=False), jump_length,
                               jump_n_sample)
    check_steerable(sampling.sampler, "inpaint")
    device = module.device
    images, masks = images.to(device), masks.to(device)
    if masks.ndim == 3:
        masks = masks[:, None]
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}: give one (B, 1 or C, H, W) "
                         "mask per image, 1 where the pixel is known.")
    indices = torch.arange(images.shape[0], device=device) if indices is None else indices.to(device)
    out = module.generate(indices, _labels(module, sampling, indices, labels), sampling=sampling,
                          hooks=(Inpaint(images, masks.expand_as(images)),))
    return out


@torch.no_grad()
def colourise(module: Any, grey: Tensor, sampling: Optional[Sampling] = None, labels: Optional[Tensor] = None,
              indices: Optional[Tensor] = None) -> Tensor:
    """RGB images whose channel mean is ``grey`` (B, 1, H, W in value_range), from an RGB model.

    Replacement of the luminance coordinate of an orthogonal colour transform (``diffusion.restoration.Colourise``);
    the other two coordinates are generated. The output's channel mean equals ``grey`` to float precision.
    """
    _need_sampler(module, "colourise")
    if module.image_shape[0] != 3:
        raise ValueError(f"colourise needs an RGB model; this one has {module.image_shape[0]} channel(s).")
    sampling = module.resolve_sampling(sampling or module.sampling, check=False)
    check_steerable(sampling.sampler, "colourise")
    grey = grey.to(module.device)
    indices = torch.arange(grey.shape[0], device=module.device) if indices is None else indices.to(module.device)
    return module.generate(indices, _labels(module, sampling, indices, labels), sampling=sampling,
                           hooks=(Colourise(grey, module.value_range),))


@torch.no_grad()
def ddim_invert(module: Any, x0: Tensor, steps: int = 100, labels: Optional[Tensor] = None,
                guidance_scale: float = 0.0) -> Tensor:
    """x_T of real images x0 (value_range) under deterministic DDIM (η = 0) with ``steps`` steps."""
    _need_sampler(module, "ddim_invert")
    denoise = module.denoise_fn(labels, guidance_scale)
    return _ddim_invert(denoise, x0.to(module.device), ddim_times(module.process, steps))


@dataclass
class InversionResult:
    """x_T from ``ddim_invert``, its DDIM decoding, and the reconstruction error against the input."""

    x_T: Tensor
    reconstruction: Tensor
    mse: float
    max_abs_error: float
    nfe: int


@torch.no_grad()
def ddim_reconstruction(module: Any, x0: Tensor, steps: int = 100, labels: Optional[Tensor] = None) -> InversionResult:
    """Invert x0 to x_T and decode it back with the same DDIM grid; reports MSE and max |error| in value_range units."""
    _need_sampler(module, "ddim_reconstruction")
    x0 = x0.to(module.device)
    denoise: DenoiseFn = module.denoise_fn(labels, 0.0)
    times = ddim_times(module.process, steps)
    x_T = _ddim_invert(denoise, x0, times)
    rec = ddim_decode(denoise, x_T, times).clamp(*module.value_range)
    err = rec - x0
    return InversionResult(x_T, rec, float(err.pow(2).mean()), float(err.abs().max()), denoise.nfe)


def slerp_noise(module: Any, n: int, seed_a: int, seed_b: int) -> Tensor:
    """n prior draws (n, C, H, W) on the great circle between the x_T of seeds a and b."""
    shape = (1, *module.image_shape)
    a = module.process.prior_sample(shape, torch.Generator(device=module.device).manual_seed(seed_a), module.device)
    b = module.process.prior_sample(shape, torch.Generator(device=module.device).manual_seed(seed_b), module.device)
    return slerp(a[0], b[0], n)


@torch.no_grad()
def interpolate(module: Any, n: int = 8, sampling: Optional[Sampling] = None, seeds: tuple[int, int] = (0, 1),
                label: Optional[int] = None) -> Tensor:
    """Samples (n, C, H, W) from x_T = slerp(x_T(seed a), x_T(seed b)); a deterministic sampler (DDIM η = 0,
    an ODE) gives a smooth strip."""
    _need_sampler(module, "interpolate")
    sampling = sampling or module.sampling
    x_T = slerp_noise(module, n, *seeds)
    indices = torch.arange(n, device=module.device)
    labels = torch.full((n,), label, device=module.device) if label is not None else None
    return module.generate(indices, _labels(module, sampling, indices, labels), sampling=sampling, x_T=x_T)


def write_strip(images: Tensor, path: str | Path, value_range: tuple[float, float], nrow: Optional[int] = None) -> Path:
    """Save images (N, C, H, W) in value_range as one PNG, ``nrow`` per row (default: all in one row)."""
    low, high = value_range
    grid = make_grid(((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1), nrow=nrow or images.shape[0],
                     padding=2, pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path
