"""SWAGAN wavelet discriminator (Gal et al. 2021), pure PyTorch, as COIGAN configures it (seed 004 §2.4-2.5).

The image is moved to the Haar wavelet domain (4·C channels at half resolution). Each level adds a
fromRGB skip (wavelets → IWT → blur-downsample with [1, 3, 3, 1] → DWT → 3×3 conv) to a residual-free
conv path (3×3 conv, then a blurred stride-2 3×3 conv); at 4×4 come a minibatch standard deviation
(group 4, 1 feature), a 3×3 conv and two equalised-learning-rate linear layers that end in one logit.
StyleGAN2's custom CUDA ops (upfirdn2d, fused leaky ReLU) are replaced by plain ``F.conv2d`` and
``F.leaky_relu``; the arithmetic is the same, so no compilation is needed.

COIGAN uses two of them: the defects discriminator on 3·N channels (per-class defects on a black
canvas) and the reference discriminator on 3 channels (whole tiles); size 256, channel multiplier 3.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def haar_dwt(x: Tensor) -> Tensor:
    """Orthonormal 2-D Haar DWT: (B, C, H, W) → (B, 4C, H/2, W/2) as [LL, LH, HL, HH], each C channels.

    For each 2×2 block [a b; c d]: LL = (a+b+c+d)/2, LH = (a+b−c−d)/2, HL = (a−b+c−d)/2,
    HH = (a−b−c+d)/2 (the subbands of rosinality's ``HaarTransform``).
    """
    b, c, h, w = x.shape
    blocks = F.pixel_unshuffle(x, 2).reshape(b, c, 4, h // 2, w // 2)  # [a, b, c, d] per channel
    p, q, r, s = blocks.unbind(2)
    bands = ((p + q + r + s), (p + q - r - s), (p - q + r - s), (p - q - r + s))
    return torch.cat(bands, dim=1) / 2


def haar_iwt(x: Tensor) -> Tensor:
    """Inverse of ``haar_dwt``: (B, 4C, H, W) → (B, C, 2H, 2W). The Haar matrix is its own inverse."""
    ll, lh, hl, hh = x.chunk(4, dim=1)
    a, b_ = (ll + lh + hl + hh), (ll + lh - hl - hh)
    c, d = (ll - lh + hl - hh), (ll - lh - hl + hh)
    blocks = torch.stack((a, b_, c, d), dim=2) / 2  # (B, C, 4, H, W)
    return F.pixel_shuffle(blocks.flatten(1, 2), 2)


class HaarTransform(nn.Module):
    """``haar_dwt`` as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return haar_dwt(x)


class InverseHaarTransform(nn.Module):
    """``haar_iwt`` as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return haar_iwt(x)


def make_blur_kernel(taps: Sequence[float]) -> Tensor:
    """Separable 2-D FIR kernel k kᵀ, normalised to sum 1 ([1, 3, 3, 1] → the StyleGAN2 blur)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


class Blur(nn.Module):
    """Depthwise FIR filter with zero padding (pad₀, pad₁) on each side, optional stride (upfirdn2d, up=1)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], down: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps).flip(0, 1), persistent=False)
        self.pad, self.down = pad, down

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        weight = self.kernel.to(x.dtype).expand(c, 1, *self.kernel.shape)
        return F.conv2d(x, weight, stride=self.down, groups=c)


def blur_downsample(taps: Sequence[float]) -> Blur:
    """Blur then keep every second pixel: H → H/2 (rosinality ``Downsample``)."""
    p = len(taps) - 2
    return Blur(taps, ((p + 1) // 2, p // 2), down=2)


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate: W ~ N(0, 1) stored, scaled by 1/√(fan_in) at run time (Karras 2018)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and ``lr_mul``; ``activate`` adds bias + √2·LeakyReLU(0.2)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale, self.lr_mul, self.activate = lr_mul / math.sqrt(in_features), lr_mul, activate

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.activate else out


class ConvLayer(nn.Module):
    """[blur] → EqualConv2d → bias + √2·LeakyReLU(0.2) (StyleGAN2 ``ConvLayer``; ``downsample`` halves H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), activate: bool = True) -> None:
        super().__init__()
        if downsample:
            p = len(blur_kernel) - 2 + kernel_size - 1
            self.blur: nn.Module = Blur(blur_kernel, ((p + 1) // 2, p // 2))
            stride, padding = 2, 0
        else:
            self.blur, stride, padding = nn.Identity(), 1, kernel_size // 2
        self.conv = EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not activate)
        self.act_bias = nn.Parameter(torch.zeros(out_channels)) if activate else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(self.blur(x))
        if self.act_bias is not None:  # fused leaky ReLU: leaky(x + b) · √2
            out = F.leaky_relu(out + self.act_bias[None, :, None, None], 0.2) * math.sqrt(2)
        return out


class ConvBlock(nn.Module):
    """3×3 conv in→in, then a blurred stride-2 3×3 conv in→out."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class FromRGB(nn.Module):
    """Wavelet skip: [IWT → blur-downsample → DWT] → 3×3 conv (4·C_in → out), added to the main path.

    Returns (wavelets at this level, features) so the next level can downsample the wavelets again.
    """

    def __init__(self, out_channels: int, in_channels: int = 3, downsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.down = blur_downsample(blur_kernel) if downsample else None
        self.conv = ConvLayer(4 * in_channels, out_channels, 3)

    def forward(self, wavelets: Tensor, skip: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.down is not None:
            wavelets = haar_dwt(self.down(haar_iwt(wavelets)))
        out = self.conv(wavelets)
        return wavelets, out if skip is None else out + skip


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1) -> Tensor:
    """Append the std over groups of samples as extra channels (Karras et al. 2018, §3; StyleGAN2 layout).

    Sample i is grouped with i + B/G, i + 2B/G, … (the ``view(G, −1, …)`` of StyleGAN2). The group is
    min(B, group_size), lowered to the largest divisor of B when B is not a multiple of it (StyleGAN2
    would fail there; the result is unchanged whenever B % group_size == 0).
    """
    b, c, h, w = x.shape
    group = min(b, group_size)
    while b % group:
        group -= 1
    y = x.view(group, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (B/G, F, C/F, H, W)
    y = y.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)  # (B/G, F, 1, 1)
    return torch.cat([x, y.repeat(group, 1, h, w)], dim=1)


class SWAGANDiscriminator(nn.Module):
    """SWAGAN discriminator. ``forward(x) → logits (B, 1)``; with ``return_features=True`` also a feature list.

    Channel table (StyleGAN2): channels(r) = low_res_channels for r ≤ 32, else channel_base · multiplier / r
    (not capped), so with multiplier 3: 256 → 192, 64 → 768, ≤ 32 → 512. The first fromRGB sits at size/2
    (after the DWT) with channels(size); each ConvBlock then halves the resolution and takes the width of
    the next table entry down, so at size 256: 192 → 768 (64²) → 512 (32², 16², 8², 4²).
    At the seed's settings (size 256, multiplier 3) it has 32,529,537 parameters for 12 input channels
    (defects D) and 31,554,945 for 3 (reference D); the seed gives no count to compare with.

    Args:
        size: input height = width, a power of two ≥ 16 (seed 256; tests use 64).
        input_channels: 3·N for the defects discriminator, 3 for the reference discriminator.
        channel_multiplier: widens the high-resolution layers (seed 3).
        blur_kernel: FIR taps of the blur used when downsampling.
        stddev_group: minibatch-stddev group size (4).
        stddev_features: minibatch-stddev feature count (1).
        channel_base: numerator of the channel table above 32×32 (StyleGAN2: 16384 = 2^14).
        low_res_channels: channels at 32×32 and below (512).
    """

    def __init__(
        self,
        size: int = 256,
        input_channels: int = 3,
        channel_multiplier: int = 3,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        stddev_group: int = 4,
        stddev_features: int = 1,
        channel_base: int = 16384,
        low_res_channels: int = 512,
    ) -> None:
        super().__init__()
        if size < 16 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 16, got {size}.")

        def channels(r: int) -> int:
            return low_res_channels if r <= 32 else channel_base * channel_multiplier // r

        self.size, self.input_channels = size, input_channels
        self.stddev_group, self.stddev_features = stddev_group, stddev_features
        blur_kernel = tuple(blur_kernel)

        log_size = int(math.log2(size)) - 1  # levels after the initial DWT
        self.from_rgbs, self.convs = nn.ModuleList(), nn.ModuleList()
        in_ch = channels(size)
        for i in range(log_size, 2, -1):
            out_ch = channels(2 ** (i - 1))
            self.from_rgbs.append(FromRGB(in_ch, input_channels, downsample=i != log_size, blur_kernel=blur_kernel))
            self.convs.append(ConvBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.from_rgbs.append(FromRGB(channels(4), input_channels, blur_kernel=blur_kernel))
        self.final_conv = ConvLayer(in_ch + stddev_features, channels(4), 3)
        self.final_linear = nn.Sequential(EqualLinear(channels(4) * 4 * 4, channels(4), activate=True),
                                          EqualLinear(channels(4), 1))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.shape[1:] != (self.input_channels, self.size, self.size):
            raise ValueError(f"expected (B, {self.input_channels}, {self.size}, {self.size}), got {tuple(x.shape)}.")
        wavelets, out, features = haar_dwt(x), None, []
        for from_rgb, conv in zip(self.from_rgbs, self.convs):
            wavelets, out = from_rgb(wavelets, out)
            out = conv(out)
            features.append(out)
        _, out = self.from_rgbs[-1](wavelets, out)
        features.append(out)
        out = self.final_conv(minibatch_stddev(out, self.stddev_group, self.stddev_features))
        features.append(out)
        logits = self.final_linear(out.flatten(1))  # (B, 1), no sigmoid: the losses apply softplus
        return (logits, features) if return_features else logits


__all__ = ["SWAGANDiscriminator", "haar_dwt", "haar_iwt", "HaarTransform", "InverseHaarTransform", "EqualLinear",
           "EqualConv2d", "ConvLayer", "FromRGB", "minibatch_stddev"]
