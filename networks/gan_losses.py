"""COIGAN losses and regularisers (seed 004 §3), as plain functions and small ``nn.Module``s.

- Adversarial: non-saturating generator loss and logistic discriminator loss on logits (thesis eq. 4.1-4.7).
- Lazy R1 on real inputs (Mescheder et al. 2018, thesis eq. 2.19) and lazy path-length regularisation with
  respect to the generator *input* (thesis eq. 4.4-4.5). Laziness is driven by a turn counter the caller
  passes in (e.g. the LightningModule's own count of D or G turns), never by a global step.
- Smooth-masked L1 and perceptual losses against the base image, weighted by a box-smoothed map of the
  summed class masks (seed 004 §3.4-3.5).

Where the thesis and the published code differ, the code is followed (seed 004 §8): R1 has no ½ factor
(weight 3 ⇒ effective γ = 6); the path length uses the seed's (2, 1) reduction; the smoothing is a 31×31
box filter with weights 0.1 inside objects and 1.0 on the background.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision ImageNet weights for the lpips backbones (file names as torchvision caches them).
LPIPS_BACKBONE_FILES = {
    "alex": ("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
ADE20K_RESNET50_URL = ("http://sceneparsing.csail.mit.edu/model/pytorch/ade20k-resnet50dilated-ppm_deepsup/"
                       "encoder_epoch_20.pth")


# ---------------------------------------------------------------- adversarial losses


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """L_G = E[−log σ(D(G(x)))] = mean softplus(−D(fake)) (thesis eq. 4.3)."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = E[−log σ(D(x))] + E[−log(1 − σ(D(G(x))))] = mean softplus(−D(real)) + mean softplus(D(fake))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


# ---------------------------------------------------------------- lazy regularisation


def lazy_turn(turn: int, interval: int, weight: float = 1.0) -> bool:
    """True on the turns a lazy regulariser runs: turn % interval == 0, so turns 0, interval, 2·interval, …

    ``turn`` counts the caller's D (or G) turns from 0, exactly like the seed's ``d_reg_steps_count``
    (checked, then incremented every turn). A weight or an interval of 0 disables the term.
    """
    if turn < 0:
        raise ValueError(f"turn must be >= 0, got {turn}.")
    return weight > 0 and interval > 0 and turn % interval == 0


def r1_penalty(real_logits: Tensor, real_input: Tensor) -> Tensor:
    """R1 = E_x ‖∇_x D(x)‖² on real data: per-sample sum of squared input gradients, batch mean (eq. 2.19).

    ``real_input`` must have ``requires_grad=True`` and ``real_logits = D(real_input)``. The graph is kept
    (create_graph) so the penalty can be back-propagated into D. No ½ here (seed 004 §8.6).
    """
    if not real_input.requires_grad:
        raise ValueError("r1_penalty needs real_input.requires_grad_(True) before the discriminator forward.")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_input, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class LazyR1(nn.Module):
    """Lazy R1 for one discriminator: ``applies(d_turn)`` says when, ``forward`` gives the loss to back-propagate.

    ``forward(real_logits, real_input) = weight · interval · R1`` (the seed's 3 · 16 · R1; the interval
    factor keeps the average strength of the penalty when it runs only every ``interval`` D turns).
    The seed runs it as a separate optimizer step right after the logistic step (seed 004 §2.7).

    Args:
        weight: R1 weight (seed 3; effective γ = 2·weight in the γ/2 convention). 0 disables it.
        interval: D turns between penalties (seed 16). 0 disables it.
    """

    def __init__(self, weight: float = 3.0, interval: int = 16) -> None:
        super().__init__()
        self.weight, self.interval = weight, interval

    def applies(self, d_turn: int) -> bool:
        return lazy_turn(d_turn, self.interval, self.weight)

    def forward(self, real_logits: Tensor, real_input: Tensor) -> Tensor:
        return self.weight * self.interval * r1_penalty(real_logits, real_input)


class PathLengthRegularizer(nn.Module):
    """Lazy path-length regularisation w.r.t. the generator input x₀ (thesis eq. 4.4-4.5; seed 004 §3.3).

    With y ~ N(0, I)/√(H·W) and g = ∇_{x₀}(G(x₀)·y) = J_Gᵀ y:
    - ``reduction="seed"``: lengths = √(mean_C Σ_H g²), one per (sample, column) — the StyleGAN latent
      reduction ``sum(2).mean(1)`` that the seed applies to its (B, C, H, W) input (seed 004 §8.7);
    - ``reduction="sample"``: lengths = ‖g‖₂ per sample (the textbook form).
    The running target a (buffer ``mean_path_length``, so it is checkpointed) is updated as
    a ← a + decay·(mean(lengths) − a) and the penalty is mean((lengths − a)²). As in the seed (and
    rosinality's StyleGAN2), the penalty uses the *updated* a before it is detached, so a little
    gradient also flows through the decay·mean(lengths) term.

    ``forward(fake, gen_input, noise=None) → (weight · interval · penalty, lengths.detach())``.
    ``gen_input`` must require grad and ``fake = G(gen_input)``; the EMA is updated on every call.

    Args:
        weight: path-length weight (seed 5). 0 disables it.
        interval: G turns between penalties (seed 4). 0 disables it.
        decay: EMA rate of the target length a (seed 0.01).
        reduction: "seed" or "sample", see above.
    """

    def __init__(self, weight: float = 5.0, interval: int = 4, decay: float = 0.01, reduction: str = "seed") -> None:
        super().__init__()
        if reduction not in ("seed", "sample"):
            raise ValueError(f"Unknown reduction {reduction!r}: choose 'seed' or 'sample'.")
        self.weight, self.interval, self.decay, self.reduction = weight, interval, decay, reduction
        self.register_buffer("mean_path_length", torch.zeros(()))

    def applies(self, g_turn: int) -> bool:
        return lazy_turn(g_turn, self.interval, self.weight)

    def path_lengths(self, fake: Tensor, gen_input: Tensor, noise: Tensor | None = None) -> Tensor:
        """‖J_Gᵀ y‖ via ∇_{x₀}(Σ G(x₀)·y), with the graph kept for the backward pass."""
        if not gen_input.requires_grad:
            raise ValueError("path-length regularisation needs gen_input.requires_grad_(True) before G's forward.")
        if noise is None:
            noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        (grad,) = torch.autograd.grad((fake * noise).sum(), gen_input, create_graph=True)
        if self.reduction == "seed":
            return grad.pow(2).sum(2).mean(1).sqrt()  # (B, W) for a (B, C, H, W) input
        return grad.pow(2).flatten(1).sum(1).sqrt()  # (B,)

    def forward(self, fake: Tensor, gen_input: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lengths = self.path_lengths(fake, gen_input, noise)
        a = self.mean_path_length + self.decay * (lengths.mean() - self.mean_path_length)
        penalty = (lengths - a).pow(2).mean()
        self.mean_path_length.copy_(a.detach())
        return self.weight * self.interval * penalty, lengths.detach()


# ---------------------------------------------------------------- smooth-masked reconstruction losses


def smooth_weight_map(masks: Tensor, kernel_size: int = 31, obj_weight: float = 0.1,
                      bg_weight: float = 1.0) -> Tensor:
    """W = obj_weight·M_s + bg_weight·(1 − M_s), with M_s the k×k box average of Σ_classes masks (§3.4).

    ``masks`` is (B, N, H, W) (one binary channel per class); the result is (B, 1, H, W). The box filter
    uses zero padding k//2; an even k is rounded up to odd, k ≤ 1 means no smoothing (as in the seed).
    Inside an object far from its edge W = obj_weight, far from objects W = bg_weight, and in a band of
    width ~k/2 on both sides of the edge it ramps between them, so changing the edge region costs.
    """
    union = masks.sum(dim=1, keepdim=True)  # the seed's ones(1, N, k, k)/k² kernel sums the classes
    if kernel_size > 1:
        k = kernel_size if kernel_size % 2 else kernel_size + 1
        union = F.avg_pool2d(union, k, stride=1, padding=k // 2, count_include_pad=True)  # box filter, zero pad
    return obj_weight * union + bg_weight * (1 - union)


class SmoothMaskedL1(nn.Module):
    """Σ(|pred − target| ⊙ W) / Σ W with W = ``smooth_weight_map(masks)`` (seed 004 §3.4).

    As in the seed, W has one channel broadcast over the image channels while Σ W counts it once, so
    the value is the W-weighted mean of the L1 distance *summed* over channels.
    ``forward(pred, target, masks) → scalar``; ``target`` is the base image, ``masks`` the clean class masks.

    Args:
        obj_weight: weight inside objects (seed 0.1).
        bg_weight: weight on the background (seed 1.0).
        kernel_size: box-filter size (seed 31).
    """

    def __init__(self, obj_weight: float = 0.1, bg_weight: float = 1.0, kernel_size: int = 31) -> None:
        super().__init__()
        self.obj_weight, self.bg_weight, self.kernel_size = obj_weight, bg_weight, kernel_size

    def forward(self, pred: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        w = smooth_weight_map(masks, self.kernel_size, self.obj_weight, self.bg_weight)
        return ((pred - target).abs() * w).sum() / w.sum()


def _missing_weights_error(what: str, file_hint: str, url: str, weights_path: str | None) -> FileNotFoundError:
    found = "no weights_path was given" if not weights_path else f"{weights_path} does not exist"
    return FileNotFoundError(
        f"{what} needs a local weights file and never downloads one ({found}). Download {url} "
        f"({file_hint}) and pass its path as weights_path (config key "
        f"model.init_args.perceptual_weights_path in a COIGAN run).")


def load_lpips_features(net: str, weights_path: str | None) -> nn.Module:
    """An ``lpips.LPIPS`` (linear layers from the lpips package) whose torchvision backbone is read from
    the local state-dict file ``weights_path``; frozen and in eval mode.

    Same recipe as ``metrics.reconstruction.lpips_model`` (which networks/ cannot import): build with
    ``pnet_rand=True`` so nothing is downloaded, then copy the loaded backbone into lpips' slices.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"Unknown lpips backbone {net!r}: choose one of {sorted(LPIPS_BACKBONE_FILES)}.")
    arch, url = LPIPS_BACKBONE_FILES[net]
    path = Path(weights_path).expanduser() if weights_path else None
    if path is None or not path.is_file():
        raise _missing_weights_error(f"The {net} perceptual loss", f"the torchvision {arch} ImageNet state dict",
                                     url, weights_path)
    import lpips

    with warnings.catch_warnings():  # lpips 0.1.4 still passes torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    backbone = getattr(torchvision.models, arch)(weights=None)
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    for i in range(1, model.net.N_slices + 1):  # lpips names each layer by its index in ``features``
        for name, module in getattr(model.net, f"slice{i}").named_children():
            module.load_state_dict(backbone.features[int(name)].state_dict())
    return model.eval().requires_grad_(False)


class ResNet50DilatedEncoder(nn.Module):
    """MIT ADE20k scene-parsing encoder ``resnet50dilated`` (LaMa's ResNet-PL backbone; seed 004 §3.5).

    A ResNet-50 with a three-conv stem (64, 64, 128) and layers 3 and 4 dilated (2, 4) instead of
    strided, so the output stride is 8. Parameter names match ``encoder_epoch_20.pth``.
    ``forward(x) → [layer1, layer2, layer3, layer4]`` feature maps (256, 512, 1024, 2048 channels).
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.resnet import Bottleneck

        def conv_bn(cin: int, cout: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
            return nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)

        self.conv1, self.bn1 = conv_bn(3, 64, 2)
        self.conv2, self.bn2 = conv_bn(64, 64, 1)
        self.conv3, self.bn3 = conv_bn(64, 128, 1)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 128

        def layer(planes: int, blocks: int, stride: int, first_dilation: int, dilation: int) -> nn.Sequential:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
            mods = [Bottleneck(self.inplanes, planes, stride, down, dilation=first_dilation)]
            self.inplanes = planes * 4
            mods += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(blocks - 1)]
            return nn.Sequential(*mods)

        self.layer1 = layer(64, 3, 1, 1, 1)
        self.layer2 = layer(128, 4, 2, 1, 1)
        self.layer3 = layer(256, 6, 1, 1, 2)  # dilate_scale 8: stride → dilation
        self.layer4 = layer(512, 3, 1, 2, 4)

    def forward(self, x: Tensor) -> list[Tensor]:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def load_resnet_pl_encoder(weights_path: str | None) -> nn.Module:
    """``ResNet50DilatedEncoder`` with the ADE20k weights from the local file ``weights_path`` (strict load)."""
    path = Path(weights_path).expanduser() if weights_path else None
    if path is None or not path.is_file():
        raise _missing_weights_error("The ResNet-PL perceptual loss", "the ADE20k resnet50dilated encoder",
                                     ADE20K_RESNET50_URL, weights_path)
    encoder = ResNet50DilatedEncoder()
    encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return encoder.eval().requires_grad_(False)


class SmoothMaskedPerceptual(nn.Module):
    """Perceptual distance per feature layer, weighted by the smoothed mask map resized to that layer (§3.5).

    For each layer l: D_l = per-pixel distance (B, 1, h_l, w_l); W_l = bilinear resize of
    ``smooth_weight_map`` (align_corners when k > 1, nearest otherwise, as in the seed); the loss is the
    mean over layers of Σ(D_l ⊙ W_l) / Σ W_l.

    Backbones (all frozen, kept in eval mode, loaded from ``weights_path`` only; nothing is downloaded):
    - "alex", "vgg", "squeeze": the ``lpips`` trunks on [−1, 1] inputs (lpips' own ImageNet scaling).
      With ``lpips_calibrated`` D_l is LPIPS' calibrated map lin_l((φ̂_l(x) − φ̂_l(y))²) (unit-normalised
      features, linear layers shipped with lpips); without it D_l = Σ_c (φ_l(x) − φ_l(y))².
    - "resnet50dilated": LaMa's ResNet-PL backbone as the seed uses it (ADE20k encoder, ImageNet
      normalisation, D_l = Σ_c (φ_l(x) − φ_l(y))² over layer1…layer4).
    The seed trains with "resnet50dilated"; the lpips trunks are offered because their weights are
    easier to obtain (torchvision files).

    ``forward(pred, target, masks) → scalar``; images in [0, 1].

    Args:
        net: "alex", "vgg", "squeeze" or "resnet50dilated".
        weights_path: local backbone weights (see ``LPIPS_BACKBONE_FILES`` / ``ADE20K_RESNET50_URL``).
        obj_weight: weight inside objects (seed 0.1).
        bg_weight: weight on the background (seed 1.0).
        kernel_size: box-filter size (seed 31).
        lpips_calibrated: use LPIPS' linear layers (lpips trunks only).
    """

    def __init__(self, net: str = "alex", weights_path: str | None = None, obj_weight: float = 0.1,
                 bg_weight: float = 1.0, kernel_size: int = 31, lpips_calibrated: bool = True) -> None:
        super().__init__()
        self.net_name, self.lpips_calibrated = net, lpips_calibrated
        self.obj_weight, self.bg_weight, self.kernel_size = obj_weight, bg_weight, kernel_size
        if net == "resnet50dilated":
            self.features = load_resnet_pl_encoder(weights_path)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None], persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None], persistent=False)
        else:
            self.features = load_lpips_features(net, weights_path)

    def train(self, mode: bool = True) -> SmoothMaskedPerceptual:
        """The backbone stays in eval mode (frozen BatchNorm statistics, no dropout in the LPIPS layers)."""
        super().train(mode)
        self.features.eval()
        return self

    def layer_distances(self, pred: Tensor, target: Tensor) -> list[Tensor]:
        """Per-layer distance maps D_l, each (B, 1, h_l, w_l)."""
        if self.net_name == "resnet50dilated":
            fp = self.features((pred - self.mean) / self.std)
            ft = self.features((target - self.mean) / self.std)
            return [(a - b).pow(2).sum(1, keepdim=True) for a, b in zip(fp, ft)]
        import lpips

        model = self.features
        fp = model.net(model.scaling_layer(pred * 2 - 1))
        ft = model.net(model.scaling_layer(target * 2 - 1))
        if not self.lpips_calibrated:
            return [(a - b).pow(2).sum(1, keepdim=True) for a, b in zip(fp, ft)]
        return [lin((lpips.normalize_tensor(a) - lpips.normalize_tensor(b)).pow(2))
                for lin, a, b in zip(model.lins, fp, ft)]

    def forward(self, pred: Tensor, target: Tensor, masks: Tensor) -> Tensor:
        w = smooth_weight_map(masks, self.kernel_size, self.obj_weight, self.bg_weight)
        smooth = self.kernel_size > 1
        losses = []
        for d in self.layer_distances(pred, target):
            w_l = F.interpolate(w, size=d.shape[-2:], mode="bilinear" if smooth else "nearest",
                                align_corners=True if smooth else None)
            losses.append((d * w_l).sum() / w_l.sum())
        return torch.stack(losses).mean()


# ---------------------------------------------------------------- weights of the published run


@dataclass
class COIGANLossWeights:
    """Loss weights, intervals and mask-smoothing settings of the published run (seed 004 §3.6).

    L_G = adversarial·L_adv(D) + ref_adversarial·L_adv(D_ref) + l1_smooth·L_L1smooth
          + perceptual_smooth·L_PLsmooth (+ l1·L1, plain, off in the seed), reduced by ``reduction``;
    every ``path_length_interval``-th G turn: + path_length·interval·L_pl.
    L_D = d_logistic·logistic(D); every ``r1_interval``-th D turn: + r1·r1_interval·R1(D). Same for D_ref.
    A weight (or an interval) of 0 disables its term.
    """

    adversarial: float = 20.0
    ref_adversarial: float = 8.0
    l1: float = 0.0
    l1_smooth: float = 5.0
    perceptual_smooth: float = 0.3
    d_logistic: float = 5.0
    ref_d_logistic: float = 5.0
    r1: float = 3.0
    r1_interval: int = 16
    ref_r1: float = 3.0
    ref_r1_interval: int = 16
    path_length: float = 5.0
    path_length_interval: int = 4
    path_length_decay: float = 0.01
    obj_weight: float = 0.1
    bg_weight: float = 1.0
    smooth_kernel_size: int = 31
    reduction: str = "sum"


def combine_losses(terms: Mapping[str, Tensor], weights: Mapping[str, float], reduction: str = "sum") -> Tensor:
    """Σ_k w_k·L_k over the terms whose weight is > 0 (``reduction="mean"`` divides by their count).

    The seed sums the weighted generator terms (seed 004 §2.7); a term whose weight is 0 is skipped,
    so it need not even be computed.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"Unknown reduction {reduction!r}: choose 'sum' or 'mean'.")
    active: Sequence[Tensor] = [weights[k] * v for k, v in terms.items() if weights.get(k, 0) > 0]
    if not active:
        raise ValueError(f"no loss term with a positive weight among {sorted(terms)}.")
    total = torch.stack(active).sum()
    return total / len(active) if reduction == "mean" else total


__all__ = [
    "g_nonsaturating_loss", "d_logistic_loss", "lazy_turn", "r1_penalty", "LazyR1", "PathLengthRegularizer",
    "smooth_weight_map", "SmoothMaskedL1", "SmoothMaskedPerceptual", "ResNet50DilatedEncoder",
    "load_lpips_features", "load_resnet_pl_encoder", "COIGANLossWeights", "combine_losses",
]
