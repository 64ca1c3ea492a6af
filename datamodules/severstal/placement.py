"""Placing defect crops on an empty tile without overlap (seed §4.8 ``ObjectDataloader``), as plain functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_COUNTS = (0, 1, 2, 3)
DEFAULT_PROBS = (0.4, 0.475, 0.1, 0.025)


def draw_count(rng: np.random.Generator, counts: Sequence[int] = DEFAULT_COUNTS, probs: Sequence[float] = DEFAULT_PROBS,
               force_non_empty: bool = False) -> int:
    """How many objects to place: ``counts[i]`` with probability ``probs[i]`` (normalised).

    With ``force_non_empty`` only the non-zero counts are eligible, with their probabilities renormalised.
    """
    counts, probs = np.asarray(counts), np.asarray(probs, dtype=np.float64)
    if len(counts) != len(probs) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"counts {list(counts)} and probs {list(probs)} must have the same length and positive mass")
    if force_non_empty:
        keep = counts > 0
        if not (keep & (probs > 0)).any():
            raise ValueError("force_non_empty needs a non-zero count with positive probability")
        counts, probs = counts[keep], probs[keep]
    cumulative = np.cumsum(probs / probs.sum())
    return int(counts[min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(counts) - 1)])


def place_object(canvas: np.ndarray | None, canvas_mask: np.ndarray, avoid: np.ndarray, obj: np.ndarray | None,
                 obj_mask: np.ndarray, rng: np.random.Generator, tries: int = 3) -> bool:
    """Paste one object at a random position where its mask does not touch ``avoid``; return whether it was placed.

    ``canvas`` (H, W, 3) and ``obj`` (h, w, 3) may be None to place masks only (the shape loader). An object larger
    than the tile along a side gets an offset in [−(size − tile), 0] there, i.e. a random crop. Pixels are
    written only where the object mask is set; ``canvas_mask`` and ``avoid`` are updated in place.
    """
    H, W = canvas_mask.shape
    h, w = obj_mask.shape
    on = obj_mask > 0
    if not on.any():
        return False
    for _ in range(tries):
        y = int(rng.integers(0, H - h + 1)) if h <= H else -int(rng.integers(0, h - H + 1))
        x = int(rng.integers(0, W - w + 1)) if w <= W else -int(rng.integers(0, w - W + 1))
        ty0, tx0 = max(y, 0), max(x, 0)
        ty1, tx1 = min(y + h, H), min(x + w, W)
        part = on[ty0 - y:ty1 - y, tx0 - x:tx1 - x]
        if not part.any() or (avoid[ty0:ty1, tx0:tx1] & part).any():
            continue
        if canvas is not None and obj is not None:
            canvas[ty0:ty1, tx0:tx1][part] = obj[ty0 - y:ty1 - y, tx0 - x:tx1 - x][part]
        canvas_mask[ty0:ty1, tx0:tx1] |= part
        avoid[ty0:ty1, tx0:tx1] |= part
        return True
    return False
