"""Train/test splits: the seed's greedy "fair" splitter by per-class counts, and a plain random split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _capacities(n: int, ratios: Sequence[float]) -> np.ndarray:
    """Samples per set: int(n · ratio), the remainder going to the last set with a non-zero ratio."""
    caps = np.asarray([int(n * r) for r in ratios], dtype=np.int64)
    last = max(i for i, r in enumerate(ratios) if r > 0)
    caps[last] += n - caps.sum()
    return caps


def fair_split(counts: np.ndarray, ratios: Sequence[float] = (0.5, 0.5), seed: int = 42) -> np.ndarray:
    """Assign each sample to a set so every set gets about ``ratio`` of each class's objects.

    ``counts`` is (samples, classes): objects of each class per sample. Greedy rule of the seed: targets are
    int(class total · ratio); samples are visited in a seeded shuffle; sample s goes to the set i with free
    capacity that maximises Σ(diff_i − s) / capacity_i, where diff_i is the target minus what set i already
    holds. Returns the set number of every sample.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"counts must be (samples, classes), got shape {counts.shape}")
    ratios = np.asarray(ratios, dtype=np.float64)
    if (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0):
        raise ValueError(f"ratios must be non-negative and sum to 1, got {list(ratios)}")
    n = len(counts)
    caps = _capacities(n, ratios)
    diff = np.floor(counts.sum(0)[None, :] * ratios[:, None]).astype(np.int64)  # (sets, classes)
    assigned = np.zeros(len(ratios), dtype=np.int64)
    out = np.full(n, -1, dtype=np.int64)
    for idx in np.random.default_rng(seed).permutation(n):
        s = counts[idx]
        scores = np.where(caps > 0, (diff - s[None, :]).sum(1) / np.maximum(caps, 1), 0.0)
        scores = np.where(assigned < caps, scores, -np.inf)
        best = int(np.argmax(scores))
        out[idx] = best
        assigned[best] += 1
        diff[best] -= s
    return out


def random_split(n: int, ratios: Sequence[float] = (0.5, 0.5), seed: int = 42) -> np.ndarray:
    """Seeded random assignment with the same set sizes as ``fair_split``."""
    caps = _capacities(n, ratios)
    labels = np.repeat(np.arange(len(caps)), caps)
    return labels[np.argsort(np.random.default_rng(seed).permutation(n))]
