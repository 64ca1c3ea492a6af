"""Square tiles from long strips (256×1600 → 7 tiles at stride 224) and the black-tile filter."""

from __future__ import annotations

import math

import cv2
import numpy as np

BLACK_THRESHOLD = 10
BLACK_MAX_COVERAGE = 0.1


def tile_offsets(length: int, tile: int) -> list[int]:
    """Offsets of ``ceil(length / tile)`` tiles spread evenly so the first starts at 0 and the last ends at ``length``.

    The seed's formula: n = ceil(L / t), stride = floor((L − t) / (n − 1)); offsets i·stride. For 1600 and 256
    that is 0, 224, …, 1344. When the floor leaves a remainder, the last offset is set to L − t so no column
    is lost (the seed would drop up to n − 2 columns there).
    """
    if tile <= 0 or length < tile:
        raise ValueError(f"cannot cut tiles of {tile} px from a side of {length} px")
    n = math.ceil(length / tile)
    if n == 1:
        return [0]
    stride = (length - tile) // (n - 1)
    offsets = [i * stride for i in range(n)]
    offsets[-1] = length - tile
    return offsets


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """(y, x) offsets of every tile of an image, row by row."""
    return [(y, x) for y in tile_offsets(height, tile) for x in tile_offsets(width, tile)]


def black_fraction(image: np.ndarray, threshold: int = BLACK_THRESHOLD) -> float:
    """Fraction of pixels whose grey value is below ``threshold`` (RGB or grey uint8 input)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return float((grey < threshold).mean())


def passes_black_filter(image: np.ndarray, threshold: int = BLACK_THRESHOLD, max_coverage: float = BLACK_MAX_COVERAGE) -> bool:
    """False for tiles whose black area (grey < threshold) covers more than ``max_coverage`` of the tile."""
    return black_fraction(image, threshold) <= max_coverage
