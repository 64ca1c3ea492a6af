"""FID, KID, Inception Score and k-NN precision/recall of generated images against cached real features.

``GenerationMetrics`` is a torchmetrics ``Metric``: each DDP rank adds the features of its own generated
images, and the states are gathered on ``compute()``. The real side is a fixed ``ReferenceFeatures``
(loaded from the on-disk cache on every rank), so it is never double-counted under DDP.

The maths reuses torchmetrics' own pieces (``_compute_fid``, ``poly_kernel``), and the tests check our
values against torchmetrics' ``FrechetInceptionDistance``/``KernelInceptionDistance``/``InceptionScore``
classes, against the closed-form Gaussian FID and against a direct NumPy KID.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_kernel

from metrics.extractors import FeatureExtractor

ALL_METRICS = ("fid", "kid", "is", "precision_recall")


# ---- functional maths ------------------------------------------------------------------------------

def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    f = features.double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) (seed 000 eq. 1.20 with its missing factor 2 restored)."""
    return _compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double())


def kid_unbiased(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> Tensor:
    """Unbiased MMD² with k(a, b) = (γ a·b + coef)^degree, γ = 1/d (seed 000 eq. 1.21 without the stray square).

    Sets may differ in size (m ≠ n); the value can be negative when the sets are close.
    """
    x, y = x.double(), y.double()
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = (poly_kernel(a, b, degree, gamma, coef) for a, b in ((x, x), (y, y), (x, y)))
    return ((k_xx.sum() - k_xx.trace()) / (m * (m - 1)) + (k_yy.sum() - k_yy.trace()) / (n * (n - 1))
            - 2 * k_xy.sum() / (m * n))


def kid_subsets(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 256, degree: int = 3,
                gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> Tensor:
    """KID on ``subsets`` random subsets of ``subset_size`` from each set (seed 000: 100 × 256)."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        r = real[torch.randperm(len(real), generator=g)[:subset_size]]
        f = fake[torch.randperm(len(fake), generator=g)[:subset_size]]
        values.append(kid_unbiased(r, f, degree, gamma, coef))
    return torch.stack(values)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[Tensor, Tensor]:
    """exp(E_x KL(p(y|x) ‖ p(y))), mean and std over ``splits`` consecutive splits (Salimans et al. 2016)."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for chunk in log_p.chunk(splits):
        p = chunk.exp()
        log_py = torch.log(p.mean(dim=0, keepdim=True))
        scores.append((p * (chunk - log_py)).sum(dim=1).mean().exp())
    s = torch.stack(scores)
    return s.mean(), s.std() if len(s) > 1 else torch.zeros((), dtype=s.dtype)


def _kth_neighbour_radii(x: Tensor, k: int, chunk: int) -> Tensor:
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start:start + chunk], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _inside_manifold(points: Tensor, support: Tensor, radii: Tensor, chunk: int) -> Tensor:
    inside = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start:start + chunk], support)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """k-NN manifold precision and recall (Kynkäänniemi et al. 2019): the share of fake samples inside the
    real manifold (union of k-NN balls), and of real samples inside the fake manifold."""
    real, fake = real.float(), fake.float()
    precision = _inside_manifold(fake, real, _kth_neighbour_radii(real, k, chunk), chunk).double().mean()
    recall = _inside_manifold(real, fake, _kth_neighbour_radii(fake, k, chunk), chunk).double().mean()
    return precision, recall


# ---- reference (real) features, cached on disk -----------------------------------------------------

@dataclass
class ReferenceFeatures:
    """Features of the real reference images and what they were made from."""

    features: Tensor
    logits: Tensor | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.features)


def images_sha256(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, batches: Iterable[Tensor], device: torch.device | str = "cpu",
                     progress: Callable[[Iterable], Iterable] | None = None) -> tuple[Tensor, Tensor | None]:
    """Features (and logits) of float [0, 1] image batches, on CPU in float64."""
    feats, logits = [], []
    for x in progress(batches) if progress else batches:
        f, lg = extractor(x.to(device))
        feats.append(f.cpu())
        if lg is not None:
            logits.append(lg.cpu())
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def reference_features(extractor: FeatureExtractor, images_uint8: Tensor, cache_dir: str | os.PathLike | None,
                       description: dict[str, Any], device: torch.device | str = "cpu", batch_size: int = 256,
                       ) -> tuple[ReferenceFeatures, Path | None]:
    """Real features of uint8 images (N, C, H, W), from ``cache_dir`` when already computed.

    The cache key is the images' content hash and the extractor's fingerprint (name, weights hash,
    preprocessing), so a different split, subset, resize or network can never reuse stale features.
    """
    if images_uint8.dim() == 3:
        images_uint8 = images_uint8.unsqueeze(1)
    key = f"{images_sha256(images_uint8)[:16]}_{extractor.fingerprint()}"
    stem = "_".join(str(description.get(k, "")) for k in ("dataset", "split")).strip("_") or "reference"
    path = Path(cache_dir) / f"{stem}_{len(images_uint8)}_{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            info = {**blob["info"], "cache": str(path), "cache_hit": True}
            return ReferenceFeatures(blob["features"], blob.get("logits"), info), path
        except Exception as err:  # a corrupt cache file is recomputed, never trusted
            print(f"Ignoring unreadable feature cache {path} ({type(err).__name__}: {err}); recomputing it.")
    batches = (images_uint8[i:i + batch_size].float() / 255 for i in range(0, len(images_uint8), batch_size))
    features, logits = extract_features(extractor, batches, device)
    info = {**description, "count": len(images_uint8), "images_sha256": images_sha256(images_uint8),
            "extractor": extractor.describe()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"features": features, "logits": logits, "info": info}, tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
    return ReferenceFeatures(features, logits, {**info, "cache": str(path) if path else None, "cache_hit": False}), path


# ---- the metric ------------------------------------------------------------------------------------

class GenerationMetrics(Metric):
    """Accumulates generated images' features (DDP-synced) and scores them against a reference set.

    Args:
        extractor: the feature network.
        reference: real features (the same on every rank).
        metrics: any of ``fid``, ``kid``, ``is``, ``precision_recall``.
        kid_subsets / kid_subset_size / kid_degree: seed 000's protocol, 100 × 256, cubic kernel, γ = 1/d.
            With fewer samples than ``kid_subset_size`` the subset shrinks to the sample count (reported).
        is_splits: Inception Score splits.
        pr_k: k of the k-NN manifolds; the reference is subsampled to the generated count (seeded).
        seed: seed of the KID subsets and of the precision/recall subsample.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, extractor: FeatureExtractor, reference: ReferenceFeatures, metrics: Sequence[str] = ("fid", "kid"),
                 kid_subsets: int = 100, kid_subset_size: int = 256, kid_degree: int = 3, is_splits: int = 10,
                 pr_k: int = 3, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unknown = set(metrics) - set(ALL_METRICS)
        if unknown:
            raise ValueError(f"Unknown metrics {sorted(unknown)}; choose from {list(ALL_METRICS)}.")
        if "is" in metrics and reference.logits is None:
            raise ValueError(f"Inception Score needs class logits, and extractor {extractor.name!r} gives none; drop 'is'.")
        self.extractor, self.reference, self.metrics = extractor, reference, tuple(metrics)
        self.kid_subsets, self.kid_subset_size, self.kid_degree = kid_subsets, kid_subset_size, kid_degree
        self.is_splits, self.pr_k, self.seed = is_splits, pr_k, seed
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.add_state("fake_logits", [], dist_reduce_fx="cat")
        self.add_state("fake_index", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, index: Tensor | None = None) -> None:
        """images: float (B, C, H, W) in [0, 1]; index: the samples' global numbers (order-independent results)."""
        features, logits = self.extractor(images)
        self.update_features(features, logits, index)

    def update_features(self, features: Tensor, logits: Tensor | None = None, index: Tensor | None = None) -> None:
        self.fake_features.append(features.double())
        if logits is not None and "is" in self.metrics:
            self.fake_logits.append(logits.double())
        if index is not None:
            self.fake_index.append(index.to(features.device).long())

    def _gathered(self, state: list[Tensor] | Tensor) -> Tensor:
        return torch.cat(state) if isinstance(state, list) else state

    def compute(self) -> dict[str, float]:
        fake = self._gathered(self.fake_features).cpu()
        logits = self._gathered(self.fake_logits).cpu() if "is" in self.metrics else None
        if len(self.fake_index):  # put samples in index order, so 1 and N ranks give identical KID/IS subsets
            order = self._gathered(self.fake_index).cpu().argsort()
            fake, logits = fake[order], None if logits is None else logits[order]
        real = self.reference.features.double()
        if len(fake) < 2:
            raise RuntimeError(f"Need at least 2 generated samples for FID/KID, got {len(fake)}.")
        out: dict[str, float] = {"num_generated": float(len(fake)), "num_reference": float(len(real))}
        if "fid" in self.metrics:
            out["fid"] = float(frechet_distance(*mean_cov(real), *mean_cov(fake)))
        if "kid" in self.metrics:
            size = min(self.kid_subset_size, len(real), len(fake))
            kid = kid_subsets(real, fake, self.kid_subsets, size, self.kid_degree, seed=self.seed)
            out.update(kid=float(kid.mean()), kid_std=float(kid.std()) if len(kid) > 1 else 0.0, kid_subset_size=float(size))
        if "is" in self.metrics:
            mean, std = inception_score(logits, self.is_splits)
            out.update(inception_score=float(mean), inception_score_std=float(std))
        if "precision_recall" in self.metrics:
            g = torch.Generator().manual_seed(self.seed)
            ref = real[torch.randperm(len(real), generator=g)[:len(fake)]]
            p, r = precision_recall(ref, fake, self.pr_k)
            out.update(precision=float(p), recall=float(r))
        return out
