"""Seed 002's paired reconstruction metrics (§9.2, Tables 7.1/7.2), averaged per image over a data set.

Inputs are image pairs in [0, 1]. PSNR is computed per image, then averaged, which is what reproduces
the thesis' numbers (§9.1); identical images would give +∞, so the per-image MSE is floored at 1e-10
(PSNR ≤ 100 dB). SSIM uses torchmetrics with an 11×11 Gaussian window, σ = 1.5. LPIPS needs backbone
weights (see ``lpips_model``); without them it is skipped with a stated reason.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

DIRECTIONS = {  # "lower" or "higher" is better
    "mse": "lower", "psnr": "higher", "ssim": "higher", "lpips": "lower", "mae": "lower",
    "edge_sim": "lower", "hist_sim": "lower",
}
PSNR_MSE_FLOOR = 1e-10

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: Tensor) -> Tensor:
    """√((G_x * x)² + (G_y * x)²) per channel, zero padding."""
    c = x.shape[1]
    kx = _SOBEL_X.to(x).expand(c, 1, 3, 3)
    ky = _SOBEL_X.t().to(x).expand(c, 1, 3, 3)
    gx, gy = F.conv2d(x, kx, padding=1, groups=c), F.conv2d(x, ky, padding=1, groups=c)
    return (gx**2 + gy**2).sqrt()


def edge_similarity(a: Tensor, b: Tensor) -> Tensor:
    """EdgeSim per image: MSE between Sobel magnitudes (lower is better, despite the name)."""
    return (sobel_magnitude(a) - sobel_magnitude(b)).pow(2).flatten(1).mean(1)


def histogram_similarity(a: Tensor, b: Tensor, bins: int = 256, eps: float = 1e-10) -> Tensor:
    """HistSim per image: χ² = Σ (h_a − h_b)² / (h_a + h_b + ε) over normalised 256-bin histograms on [0, 1]."""
    def hist(x: Tensor) -> Tensor:
        idx = (x.flatten(1).clamp(0, 1) * bins).long().clamp(max=bins - 1)
        h = torch.zeros(x.shape[0], bins, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float))
        return h / h.sum(1, keepdim=True)

    ha, hb = hist(a), hist(b)
    return ((ha - hb) ** 2 / (ha + hb + eps)).sum(1)


def lpips_model(backbone_weights: str | None, net: str = "alex"):
    """An ``lpips.LPIPS`` whose backbone comes from a local torchvision state-dict file.

    The ``lpips`` package ships its linear calibration layers, but the AlexNet/VGG backbone is normally
    downloaded by torchvision. Returns (model, None) or (None, reason) when the weights are unavailable.
    """
    if not backbone_weights:
        return None, ("no LPIPS backbone weights: set lpips_weights to a local torchvision "
                      f"{net} state dict (e.g. alexnet-owt-7be5be79.pth)")
    path = Path(backbone_weights).expanduser()
    if not path.is_file():
        return None, f"LPIPS backbone weights file not found: {path}"
    import lpips
    import torchvision

    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    backbone = getattr(torchvision.models, {"alex": "alexnet", "vgg": "vgg16"}[net])()
    backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # lpips slices the torchvision feature stack into stages; copy the loaded weights into them.
    stages = [getattr(model.net, f"slice{i}") for i in range(1, 6)]
    for stage in stages:
        for name, module in stage.named_children():
            module.load_state_dict(backbone.features[int(name)].state_dict())
    return model.eval().requires_grad_(False), None


class ReconstructionMetrics(Metric):
    """Accumulates per-image MSE, PSNR, SSIM, MAE, EdgeSim, HistSim (and LPIPS if a model is given).

    States are sums and a count, reduced by summation across DDP ranks.
    """

    full_state_update = False

    def __init__(self, lpips_net: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.lpips_net = lpips_net
        self.names = [n for n in DIRECTIONS if n != "lpips" or lpips_net is not None]
        for name in self.names:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target = preds.float().clamp(0, 1), target.float().clamp(0, 1)
        mse = (preds - target).pow(2).flatten(1).mean(1)
        values = {
            "mse": mse,
            "psnr": 10 * torch.log10(1.0 / mse.clamp(min=PSNR_MSE_FLOOR)),
            "ssim": structural_similarity_index_measure(preds, target, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                                        data_range=1.0, reduction="none"),
            "mae": (preds - target).abs().flatten(1).mean(1),
            "edge_sim": edge_similarity(preds, target),
            "hist_sim": histogram_similarity(preds, target),
        }
        if self.lpips_net is not None:  # LPIPS wants 3 channels in [−1, 1]
            rgb = lambda x: (x * 2 - 1).expand(-1, 3, -1, -1) if x.shape[1] == 1 else x * 2 - 1  # noqa: E731
            values["lpips"] = self.lpips_net(rgb(preds), rgb(target)).flatten()
        for name in self.names:
            setattr(self, name, getattr(self, name) + values[name].double().sum())
        self.count += preds.shape[0]

    def compute(self) -> dict[str, Tensor]:
        return {name: (getattr(self, name) / self.count.clamp(min=1)).float() for name in self.names}
