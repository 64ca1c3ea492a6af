"""A small synthetic Severstal data set in the exact Kaggle format, for tests, demos and benchmarks.

``make_fixture(out)`` writes ``out/train.csv`` (``ImageId,ClassId,EncodedPixels`` with real 1-based,
column-major RLE) and ``out/train_images/*.jpg``: grey steel strips with rolling streaks, grain and
lighting drift, some with a black margin (to exercise the black-tile filter), and drawn "defects" whose
look depends on the class: dark pits, vertical lines, long scratches, large stains.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from datamodules.severstal.rle import rle_encode
from datamodules.severstal.source import write_jpeg


def steel_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Grey (H, W) float image: horizontal rolling streaks, fine grain and a slow lighting drift."""
    level = rng.uniform(90, 150)
    streaks = cv2.resize(rng.normal(0, 6, (height, 1)).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    drift = np.linspace(rng.uniform(-15, 15), rng.uniform(-15, 15), width, dtype=np.float32)[None, :]
    blotches = cv2.GaussianBlur(rng.normal(0, 25, (height, width)).astype(np.float32), (0, 0), 12)
    grain = rng.normal(0, 4, (height, width)).astype(np.float32)
    return level + streaks + drift + blotches + grain


def draw_defect(rng: np.random.Generator, kind: int, height: int, width: int) -> tuple[np.ndarray, float]:
    """One defect mask (uint8 {0, 1}) of shape ``kind`` (0 pits, 1 lines, 2 scratches, 3 stains) and its grey shift."""
    mask = np.zeros((height, width), dtype=np.uint8)
    s = height / 256
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    if kind == 0:
        axes = (int(rng.integers(6, 20) * s) + 3, int(rng.integers(6, 20) * s) + 3)
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return mask, -rng.uniform(40, 70)
    if kind == 1:
        x0, h = cx, int(rng.integers(40, 160) * s) + 8
        cv2.line(mask, (x0, cy), (x0 + int(rng.integers(-8, 9)), min(height - 1, cy + h)), 1, max(3, int(4 * s)))
        return mask, rng.uniform(40, 70)
    if kind == 2:
        length, angle = rng.uniform(80, 300) * s + 10, rng.uniform(-0.4, 0.4)
        x1, y1 = int(cx + length * np.cos(angle)), int(cy + length * np.sin(angle))
        cv2.line(mask, (cx, cy), (x1, y1), 1, max(3, int(5 * s)))
        return mask, -rng.uniform(30, 60)
    points = (np.stack([rng.normal(cx, 30 * s + 4, 8), rng.normal(cy, 20 * s + 4, 8)], 1)).astype(np.int32)
    cv2.fillPoly(mask, [cv2.convexHull(points)], 1)
    return mask, -rng.uniform(25, 45)


def make_fixture(out: str | Path, images: int = 8, num_classes: int = 4, seed: int = 0, height: int = 256,
                 width: int = 1600, defect_free_fraction: float = 0.3, progress: bool = False) -> Path:
    """Write the fixture into ``out`` and return it. Image i < 2·num_classes holds a defect of class i mod num_classes."""
    out = Path(out)
    (out / "train_images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in tqdm(range(images), desc="fixture", disable=not progress, unit="img"):
        image_id = f"{seed:03d}{i:06d}.jpg"
        grey = steel_background(rng, height, width)
        if i % 4 == 3:  # a dark margin, as where the strip ends in some Severstal photos
            grey[:, : int(rng.integers(width // 10, width // 6))] = rng.uniform(0, 6)
        masks = np.zeros((num_classes, height, width), dtype=np.uint8)
        if i < 2 * num_classes:  # every class in at least two images, so both split halves can hold it
            classes = [i % num_classes]
        elif rng.random() < defect_free_fraction:
            classes = []
        else:
            classes = list(rng.integers(0, num_classes, int(rng.integers(1, 4))))
        for c in classes:
            mask, shift = draw_defect(rng, int(c) % 4, height, width)
            mask &= ~masks.any(0)  # classes do not overlap, as in Severstal
            grey += mask * (shift + rng.normal(0, 6, mask.shape)) * (1 + int(c) // 4 * 0.3)
            masks[c] |= mask
        rgb = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        write_jpeg(out / "train_images" / image_id, rgb, quality=90)
        rows += [(image_id, c + 1, rle_encode(masks[c])) for c in range(num_classes) if masks[c].any()]
    with open(out / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
        writer.writerows(rows)
    return out
