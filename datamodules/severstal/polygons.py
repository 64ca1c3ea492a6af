"""Masks ↔ polygons with OpenCV, with the seed's simplification rules.

Polygons are int32 arrays of OpenCV ``(x, y)`` points. ``mask_to_polygons`` keeps the external contours,
drops those with fewer than ``min_points`` points, keeps every ``step``-th point of contours longer than
``subsample_above`` and drops degenerate results (under 3 points, or all x or all y equal).
``polygons_to_mask`` rasterises them back with ``cv2.fillPoly``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MIN_POINTS = 5
SUBSAMPLE_ABOVE = 25
SUBSAMPLE_STEP = 4


def is_valid_polygon(points: np.ndarray) -> bool:
    """At least 3 points and a non-zero extent along both x and y."""
    return len(points) >= 3 and np.ptp(points[:, 0]) > 0 and np.ptp(points[:, 1]) > 0


def mask_to_polygons(
    mask: np.ndarray,
    min_points: int = MIN_POINTS,
    subsample_above: int = SUBSAMPLE_ABOVE,
    step: int = SUBSAMPLE_STEP,
) -> list[np.ndarray]:
    """External contours of a 2-D mask as (K, 2) int32 (x, y) polygons, simplified by the seed's rules."""
    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if len(points) < min_points:
            continue
        if len(points) > subsample_above:
            points = points[::step]
        if is_valid_polygon(points):
            polygons.append(points.astype(np.int32))
    return polygons


def polygons_to_mask(polygons: Sequence[np.ndarray], shape: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Rasterise (x, y) polygons, shifted by ``offset`` = (dx, dy), into a uint8 {0, 1} mask of ``shape``."""
    mask = np.zeros(shape, dtype=np.uint8)
    pts = [np.asarray(p, dtype=np.int32).reshape(-1, 1, 2) + np.asarray(offset, dtype=np.int32) for p in polygons]
    if pts:
        cv2.fillPoly(mask, pts, 1)
    return mask


def polygon_bbox(points: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive bounding box (x0, y0, x1, y1) of a polygon."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return int(x0), int(y0), int(x1), int(y1)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area in pixels² (``cv2.contourArea``)."""
    return float(cv2.contourArea(np.asarray(points, dtype=np.int32).reshape(-1, 1, 2)))
