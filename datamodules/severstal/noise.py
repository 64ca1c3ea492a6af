"""Noise for the generator's mask channels (seed §4.8), as plain functions usable in training and inference.

Masks are float tensors (C, H, W) or (B, C, H, W) in {0, 1}; each channel is one class. ``gaussian_noise``
fills the masks with N(mean, std) noise; ``multiscale_noise`` sums noise drawn at several scales, fades it
with a Gaussian-blurred copy of the mask (so it vanishes gradually away from the object, which removed
seam artifacts in the seed) and rescales each channel into [0, 1]. The classes ``GaussianNoise`` and
``MultiscaleNoise`` hold the settings so a YAML config can pick one by ``class_path``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STRATEGIES = ("additive", "multiplicative", "replace")


def _as_4d(masks: Tensor) -> tuple[Tensor, bool]:
    if masks.ndim == 3:
        return masks[None], True
    if masks.ndim != 4:
        raise ValueError(f"masks must be (C, H, W) or (B, C, H, W), got shape {tuple(masks.shape)}")
    return masks, False


def gaussian_kernel1d(kernel_size: int, sigma: float | None = None) -> Tensor:
    """Normalised 1-D Gaussian; sigma defaults to torchvision's 0.3·((k − 1)/2 − 1) + 0.8 (6.5 for k = 41)."""
    if sigma is None:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(masks: Tensor, kernel_size: int, sigma: float | None = None) -> Tensor:
    """Separable Gaussian blur per channel with reflect padding (as ``torchvision.transforms.functional.gaussian_blur``).

    An even kernel size is made odd (+1), as in the seed.
    """
    kernel_size = kernel_size + 1 - kernel_size % 2
    x, squeeze = _as_4d(masks.float())
    b, c, h, w = x.shape
    k = gaussian_kernel1d(kernel_size, sigma).to(x.device)
    pad = kernel_size // 2
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect" if w > pad else "replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect" if h > pad else "replicate"), k.view(1, 1, -1, 1))
    y = y.reshape(b, c, h, w)
    return y[0] if squeeze else y


def _combine(masks: Tensor, noise: Tensor, strategy: str) -> Tensor:
    if strategy == "additive":
        return (masks + noise) * (masks > 0)
    if strategy == "multiplicative":
        return masks * noise
    if strategy == "replace":
        return noise * (masks > 0)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def gaussian_noise(masks: Tensor, mean: float = 0.0, std: float = 1.0, strategy: str = "replace",
                   generator: torch.Generator | None = None) -> Tensor:
    """N(mean, std) noise inside the masks: ``additive`` (m + n)·[m > 0], ``multiplicative`` m·n, ``replace`` n·[m > 0]."""
    noise = torch.randn(masks.shape, generator=generator, device=masks.device) * std + mean
    return _combine(masks.float(), noise, strategy)


def multiscale_noise(masks: Tensor, scales: tuple[int, ...] | list[int] = (1, 2, 4), mean: float = 0.5, std: float = 0.08,
                     strategy: str = "replace", smooth: int = 41, normalize: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    """Seed §4.8 multiscale noise: Σ_s upsample(N(mean, std) at (H/s, W/s)), faded by blur(mask, smooth), then per channel
    (x − min(0, min x)) / (max(1, max x) − min(0, min x)) · blur(mask) when ``normalize``. Empty channels stay zero.

    ``smooth`` = 0 turns the blur off (the raw mask is used); ``strategy`` combines the noise with the blurred mask.
    """
    x, squeeze = _as_4d(masks.float())
    b, c, h, w = x.shape
    noise = torch.zeros_like(x)
    for s in scales:
        small = torch.randn((b, c, max(1, h // s), max(1, w // s)), generator=generator, device=x.device) * std + mean
        noise += F.interpolate(small, size=(h, w), mode="bilinear", align_corners=True) if s != 1 else small
    faded = gaussian_blur(x, smooth) if smooth and smooth > 1 else x
    out = _combine(faded, noise, strategy)
    if normalize:
        low = out.amin(dim=(2, 3), keepdim=True).clamp(max=0)
        high = out.amax(dim=(2, 3), keepdim=True).clamp(min=1)
        out = (out - low) / (high - low) * faded
    out = torch.where(x.amax(dim=(2, 3), keepdim=True) > 0, out, torch.zeros_like(out))
    return out[0] if squeeze else out


class GaussianNoise:
    """Settings for ``gaussian_noise``; call it on masks."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, strategy: str = "replace") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.mean, self.std, self.strategy = mean, std, strategy

    def __call__(self, masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return gaussian_noise(masks, self.mean, self.std, self.strategy, generator)


class MultiscaleNoise:
    """Settings for ``multiscale_noise`` (defaults: the seed's training values); call it on masks."""

    def __init__(self, scales: list[int] = [1, 2, 4], mean: float = 0.5, std: float = 0.08, strategy: str = "replace",  # noqa: B006
                 smooth: int = 41, normalize: bool = True) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"scales must be positive integers, got {scales}")
        self.scales, self.mean, self.std, self.strategy = list(scales), mean, std, strategy
        self.smooth, self.normalize = smooth, normalize

    def __call__(self, masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return multiscale_noise(masks, self.scales, self.mean, self.std, self.strategy, self.smooth, self.normalize, generator)
