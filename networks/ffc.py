"""Fast Fourier Convolution ResNet generator (LaMa), as COIGAN configures it (seed 004 §2.2-2.3).

An FFC splits a feature map into a local part (C·(1−α) channels, ordinary convolutions) and a global
part (C·α channels, a spectral transform whose receptive field is the whole image) and mixes them:
Y_l = conv_l→l(X_l) + conv_g→l(X_g), Y_g = conv_l→g(X_l) + SpectralTransform(X_g) (Chi et al. 2020).
Feature maps travel between FFC layers as a ``(local, global)`` tuple; a missing branch is ``None``.

Where the thesis and the published code differ, this file follows the code (seed 004 §8):
- the spectral transform *sums* x + FU(x) before its last 1×1 conv (thesis Table 2.1: concat + conv);
- the FFC residual block *adds* its input to each branch (thesis: "concatenates");
- the seed's run uses 8 residual blocks (thesis and LaMa: 9), the default here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FFCPair = tuple[Tensor | None, Tensor | None]

_NORMS = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": None}
_OUT_ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}
_PADS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zeros": nn.ZeroPad2d,
         "circular": nn.CircularPad2d}
_UPSAMPLES = ("transposed", "nearest", "bilinear")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind not in _NORMS:
        raise ValueError(f"Unknown norm {kind!r}: choose one of {sorted(_NORMS)}.")
    layer = _NORMS[kind]
    return nn.Identity() if layer is None or channels == 0 else layer(channels)


def _split(x: Tensor | FFCPair) -> FFCPair:
    return x if isinstance(x, tuple) else (x, None)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


class FourierUnit(nn.Module):
    """Global mixing in the frequency domain (seed 004 §2.3, Table 2.1 rows b-f).

    rfftn over (H, W) with ``fft_norm`` ("ortho" in the seed) → real and imaginary parts stacked as 2C
    channels, interleaved (re₀, im₀, re₁, im₁, …) → 1×1 conv (no bias) → norm → ReLU → back to complex
    → irfftn to the input size. With ``norm="none"``, ``activation=False`` and an identity conv it is
    the identity map, which the tests check.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", activation: bool = True,
                 fft_norm: str = "ortho") -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.norm = _norm(norm, 2 * out_channels)
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()
        self.fft_norm = fft_norm

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        spec = torch.fft.rfftn(x.float(), dim=(-2, -1), norm=self.fft_norm)  # (B, C, H, W/2+1) complex
        spec = torch.stack((spec.real, spec.imag), dim=2).reshape(b, -1, h, spec.shape[-1])  # (B, 2C, H, W/2+1)
        spec = self.act(self.norm(self.conv(spec.to(x.dtype))))
        spec = spec.float().reshape(b, -1, 2, h, spec.shape[-1])  # (B, C', 2, H, W/2+1)
        out = torch.fft.irfftn(torch.complex(spec[:, :, 0], spec[:, :, 1]), s=(h, w), dim=(-2, -1),
                               norm=self.fft_norm)
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """Global→global path: 1×1 conv in→out/2 + norm + ReLU, FU, then 1×1 conv out/2→out on x + FU(x) (§2.3).

    ``enable_lfu`` adds LaMa's local Fourier unit (a FU on the 2×2-tiled first quarter of the channels,
    tiled back); the seed turns it off. Stride 2 average-pools first, as in LaMa.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, enable_lfu: bool = False,
                 norm: str = "batch", fft_norm: str = "ortho") -> None:
        super().__init__()
        hidden = out_channels // 2
        self.downsample = nn.AvgPool2d(2, stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), _norm(norm, hidden),
                                   nn.ReLU(inplace=True))
        self.fu = FourierUnit(hidden, hidden, norm=norm, fft_norm=fft_norm)
        self.lfu = FourierUnit(hidden, hidden, norm=norm, fft_norm=fft_norm) if enable_lfu else None
        self.conv2 = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.downsample(x))
        out = x + self.fu(x)  # seed 004 §8.1: summed, not concatenated
        if self.lfu is not None:
            c, h, w = x.shape[1:]
            xs = torch.cat(torch.split(x[:, : c // 4], h // 2, dim=-2), dim=1)  # (B, C/2, H/2, W)
            xs = torch.cat(torch.split(xs, w // 2, dim=-1), dim=1)  # (B, C, H/2, W/2)
            out = out + self.lfu(xs).repeat(1, 1, 2, 2)
        return self.conv2(out)


class FFC(nn.Module):
    """Fast Fourier Convolution with global ratios α_in, α_out; convolutions have no bias (§2.3)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, dilation: int = 1, padding_type: str = "reflect",
                 enable_lfu: bool = False, norm: str = "batch", fft_norm: str = "ortho") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FFC stride must be 1 or 2, got {stride}.")
        self.in_cg = int(in_channels * ratio_gin)
        self.in_cl = in_channels - self.in_cg
        self.out_cg = int(out_channels * ratio_gout)
        self.out_cl = out_channels - self.out_cg

        def conv(cin: int, cout: int) -> nn.Module | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, bias=False, padding_mode=padding_type)

        self.convl2l = conv(self.in_cl, self.out_cl)
        self.convl2g = conv(self.in_cl, self.out_cg)
        self.convg2l = conv(self.in_cg, self.out_cl)
        self.convg2g = (SpectralTransform(self.in_cg, self.out_cg, stride, enable_lfu, norm, fft_norm)
                        if self.in_cg and self.out_cg else None)

    def forward(self, x: Tensor | FFCPair) -> FFCPair:
        x_l, x_g = _split(x)

        def apply(module: nn.Module | None, inp: Tensor | None) -> Tensor | None:
            return None if module is None or inp is None else module(inp)

        out_l = _add(apply(self.convl2l, x_l), apply(self.convg2l, x_g))  # Y_l = l→l + g→l
        out_g = _add(apply(self.convl2g, x_l), apply(self.convg2g, x_g))  # Y_g = l→g + spectral(g)
        return out_l, out_g


class FFCNormAct(nn.Module):
    """FFC followed by a norm and an activation on each branch (LaMa's ``FFC_BN_ACT``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, dilation: int = 1, padding_type: str = "reflect",
                 enable_lfu: bool = False, norm: str = "batch", activation: bool = True,
                 fft_norm: str = "ortho") -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding, dilation,
                       padding_type, enable_lfu, norm, fft_norm)
        self.norm_l, self.norm_g = _norm(norm, self.ffc.out_cl), _norm(norm, self.ffc.out_cg)
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: Tensor | FFCPair) -> FFCPair:
        x_l, x_g = self.ffc(x)
        x_l = None if x_l is None else self.act(self.norm_l(x_l))
        x_g = None if x_g is None else self.act(self.norm_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two 3×3 FFC-norm-ReLU layers; the input is *added* to each branch (seed 004 §8.1, code ≠ thesis)."""

    def __init__(self, dim: int, ratio_g: float, dilation: int = 1, padding_type: str = "reflect",
                 enable_lfu: bool = False, norm: str = "batch", fft_norm: str = "ortho") -> None:
        super().__init__()
        kw = dict(kernel_size=3, ratio_gin=ratio_g, ratio_gout=ratio_g, padding=dilation, dilation=dilation,
                  padding_type=padding_type, enable_lfu=enable_lfu, norm=norm, fft_norm=fft_norm)
        self.conv1 = FFCNormAct(dim, dim, **kw)
        self.conv2 = FFCNormAct(dim, dim, **kw)

    def forward(self, x: Tensor | FFCPair) -> FFCPair:
        id_l, id_g = _split(x)
        x_l, x_g = self.conv2(self.conv1((id_l, id_g)))
        return _add(id_l, x_l), _add(id_g, x_g)


class ConcatTuple(nn.Module):
    """(local, global) → one tensor, local channels first."""

    def forward(self, x: Tensor | FFCPair) -> Tensor:
        parts = [t for t in _split(x) if t is not None]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class FFCResNetGenerator(nn.Module):
    """LaMa's FFC ResNet generator. ``forward(x) → image (B, output_nc, H, W)``, in [0, 1] with sigmoid.

    Layout (seed 004 §2.2, ``ffc_resnet_075.yaml``): reflect-pad 3 → 7×7 FFC (purely local) → norm → ReLU;
    ``n_downsampling`` stride-2 3×3 FFC layers (local, the last one splits its output at ``ratio_g``);
    ``n_blocks`` FFC residual blocks at global ratio ``ratio_g``; concat; ``n_downsampling`` transposed
    convs (3×3, stride 2, output_padding 1) + norm + ReLU; reflect-pad 3 → 7×7 conv → output activation.
    At the seed's settings (input_nc 7, ngf 64, 3 down, 8 blocks, α 0.75) it has 24,399,683 parameters.
    H and W must be divisible by 2**n_downsampling.

    Args:
        input_nc: input channels, 3 + N (base image + one noisy mask per class).
        output_nc: output channels.
        ngf: width of the first layer; doubles at each downsampling, capped at ``max_features``.
        n_downsampling: stride-2 layers (and transposed convs).
        n_blocks: FFC residual blocks at the bottleneck (seed 8, LaMa 9).
        ratio_g: global ratio α of the residual blocks (and of the last downsampling output).
        enable_lfu: add LaMa's local Fourier unit to each spectral transform (seed: off).
        padding_type: padding of the FFC convs and of the 7×7 input/output convs ("reflect", "zeros",
            "replicate", "circular").
        norm: "batch", "instance" or "none" for every norm layer.
        upsample: "transposed" (seed: 3×3 stride-2 transposed convs) or "nearest"/"bilinear" resize + 3×3 conv.
        out_activation: "sigmoid" (seed), "tanh" or "none".
        max_features: channel cap.
        fft_norm: ``torch.fft`` normalisation of the Fourier units ("ortho" in the seed).
    """

    def __init__(
        self,
        input_nc: int = 7,
        output_nc: int = 3,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 8,
        ratio_g: float = 0.75,
        enable_lfu: bool = False,
        padding_type: str = "reflect",
        norm: str = "batch",
        upsample: str = "transposed",
        out_activation: str = "sigmoid",
        max_features: int = 1024,
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        if n_blocks < 0 or n_downsampling < 1:
            raise ValueError(f"need n_blocks >= 0 and n_downsampling >= 1, got {n_blocks} and {n_downsampling}.")
        if out_activation not in _OUT_ACTS:
            raise ValueError(f"Unknown out_activation {out_activation!r}: choose one of {sorted(_OUT_ACTS)}.")
        if padding_type not in _PADS:
            raise ValueError(f"Unknown padding_type {padding_type!r}: choose one of {sorted(_PADS)}.")
        if upsample not in _UPSAMPLES:
            raise ValueError(f"Unknown upsample {upsample!r}: choose one of {_UPSAMPLES}.")
        self.input_nc, self.output_nc, self.n_downsampling = input_nc, output_nc, n_downsampling
        common = dict(padding_type=padding_type, enable_lfu=enable_lfu, norm=norm, fft_norm=fft_norm)

        def width(i: int) -> int:
            return min(max_features, ngf * 2**i)

        layers: list[nn.Module] = [_PADS[padding_type](3), FFCNormAct(input_nc, ngf, 7, 0.0, 0.0, **common)]
        for i in range(n_downsampling):
            ratio_out = ratio_g if i == n_downsampling - 1 else 0.0
            layers.append(FFCNormAct(width(i), width(i + 1), 3, 0.0, ratio_out, stride=2, padding=1, **common))
        bottleneck = width(n_downsampling)
        layers += [FFCResnetBlock(bottleneck, ratio_g, **common) for _ in range(n_blocks)]
        layers.append(ConcatTuple())
        for i in range(n_downsampling, 0, -1):
            cin, cout = width(i), width(i - 1)
            if upsample == "transposed":
                up: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
            else:  # resize-then-convolve, an option against checkerboard artefacts
                up = [nn.Upsample(scale_factor=2, mode=upsample), nn.Conv2d(cin, cout, 3, padding=1)]
            layers += [*up, _norm(norm, cout), nn.ReLU(inplace=True)]
        layers += [_PADS[padding_type](3), nn.Conv2d(width(0), output_nc, 7), _OUT_ACTS[out_activation]()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**self.n_downsampling
        if x.shape[1] != self.input_nc or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"expected (B, {self.input_nc}, H, W) with H, W divisible by {factor}, "
                             f"got {tuple(x.shape)}.")
        return self.model(x)


__all__ = ["FFCResNetGenerator", "FFCResnetBlock", "FFC", "FFCNormAct", "SpectralTransform", "FourierUnit"]
