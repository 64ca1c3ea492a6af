"""Memorisation check: nearest training images of each generated image in a feature space (seed 001 §5.5).

The seed shows each generated image next to its K = 5 nearest training images (Euclidean distance on
Inception features) and judges by eye. Here the same retrieval is made quantitative: the distribution of
generated→train nearest-neighbour distances is compared with the real test→train one (held-out real images
are what "new but in-distribution" looks like), and the memorisation score is the fraction of generated
images closer to their nearest training image than the ``percentile``-th percentile of test→train distances
(a copied training set scores ≈ 1, independent samples ≈ percentile/100). Pure torch; features come from any
``metrics.FeatureExtractor`` (``ClassifierFeatures``, ``InceptionV3Features``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image


def nearest_neighbours(query: Tensor, reference: Tensor, k: int = 5, chunk: int = 1024,
                       exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """Euclidean k-NN of each query row among ``reference`` rows: distances and indices, both (Q, k), ascending.

    ``exclude_self`` drops the zero-distance match of row i with itself (query = reference).
    """
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"Need (Q, D) queries and (N, D) references of the same D, got {tuple(query.shape)} and "
                         f"{tuple(reference.shape)}.")
    k_eff = k + int(exclude_self)
    if k_eff > len(reference):
        raise ValueError(f"k={k} neighbours requested but the reference set has only {len(reference)} rows.")
    ref = reference.double()
    dists, idx = [], []
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk].double()
        d = torch.cdist(q, ref)
        if exclude_self:
            rows = torch.arange(len(q))
            d[rows, rows + start] = float("inf")
        dist, index = d.topk(k, dim=1, largest=False)
        dists.append(dist)
        idx.append(index)
    return torch.cat(dists), torch.cat(idx)


def _quantiles(x: Tensor) -> dict[str, float]:
    q = torch.quantile(x.double(), torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    return {"mean": float(x.double().mean()), "p05": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p95": float(q[4])}


@dataclass
class MemorisationReport:
    """Distances to the nearest training image and the memorisation score.

    Attributes:
        k: neighbours retrieved per generated image.
        percentile: the test→train percentile used as the "too close" threshold.
        threshold: that distance.
        score: fraction of generated images with nearest-train distance below ``threshold``.
        expected_score: what independent samples from the data distribution give (percentile / 100).
        generated_to_train, test_to_train: quantiles of the nearest-neighbour distances.
        median_ratio: median generated→train over median test→train (≪ 1 suggests copying).
        num_generated, num_test, num_train: set sizes.
    """

    k: int
    percentile: float
    threshold: float
    score: float
    expected_score: float
    generated_to_train: dict[str, float]
    test_to_train: dict[str, float]
    median_ratio: float
    num_generated: int
    num_test: int
    num_train: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memorisation_report(generated: Tensor, train: Tensor, test: Tensor, k: int = 5,
                        percentile: float = 5.0) -> tuple[MemorisationReport, Tensor, Tensor]:
    """Compare generated→train with test→train nearest-neighbour distances on (N, D) features.

    Returns the report, and the (G, k) distances and training indices of each generated image's neighbours
    (for the panel).
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}.")
    gen_d, gen_i = nearest_neighbours(generated, train, k)
    test_d, _ = nearest_neighbours(test, train, 1)
    nn_gen, nn_test = gen_d[:, 0], test_d[:, 0]
    threshold = float(torch.quantile(nn_test, percentile / 100))
    report = MemorisationReport(
        k=k, percentile=percentile, threshold=threshold, score=float((nn_gen < threshold).double().mean()),
        expected_score=percentile / 100, generated_to_train=_quantiles(nn_gen), test_to_train=_quantiles(nn_test),
        median_ratio=float(nn_gen.median() / nn_test.median().clamp(min=1e-12)), num_generated=len(generated),
        num_test=len(test), num_train=len(train))
    return report, gen_d, gen_i


def neighbour_panel(generated: Tensor, train_images: Tensor, indices: Tensor, value_range: tuple[float, float] = (0.0, 1.0),
                    max_rows: int = 16) -> Tensor:
    """A (C, H', W') image in [0, 1]: one row per generated image, followed by its k nearest training images."""
    low, high = value_range
    rows = []
    for g, idx in zip(generated[:max_rows], indices[:max_rows]):
        rows.append(torch.cat([g[None], train_images[idx]]))
    grid = torch.cat(rows).float().cpu()
    return make_grid(((grid - low) / (high - low)).clamp(0, 1), nrow=indices.shape[1] + 1, padding=2, pad_value=1.0)


def write_panel(panel: Tensor, path: str | Path) -> Path:
    """Save a ``neighbour_panel`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(panel, path)
    return path


def write_report(report: MemorisationReport, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save the report (and any provenance in ``extra``) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**(extra or {}), **report.to_dict()}, indent=2))
    return path


def distance_histogram(generated: Tensor, test: Tensor, path: str | Path, bins: int = 40,
                       labels: Sequence[str] = ("generated → train", "test → train")) -> Path:
    """PNG histogram of the two nearest-neighbour distance distributions (matplotlib, imported here only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    hi = float(torch.cat([generated, test]).max())
    for values, label in zip((generated, test), labels):
        ax.hist(values.double().numpy(), bins=bins, range=(0, hi), alpha=0.55, density=True, label=label)
    ax.set_xlabel("distance to nearest training image (features)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["nearest_neighbours", "memorisation_report", "MemorisationReport", "neighbour_panel", "write_panel",
           "write_report", "distance_histogram"]
