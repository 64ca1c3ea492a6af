"""Run-length encoding of Severstal masks (Kaggle ``EncodedPixels``).

The string holds ``start length`` pairs over the image flattened in **column-major** order (down each
column first) with **1-based** starts, so pixel (y, x) of an H×W mask has 1-based position ``x·H + y + 1``.
"""

from __future__ import annotations

import numpy as np


class RLEError(ValueError):
    """An ``EncodedPixels`` value that cannot be decoded; the message says why."""


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode ``rle`` into a uint8 {0, 1} mask of ``shape`` = (H, W).

    Raises ``RLEError`` for non-integer tokens, an odd token count, starts below 1, lengths below 1 or runs
    that end past the last pixel: a bad row must be reported, never turned into an empty mask.
    """
    h, w = shape
    tokens = rle.split()
    if len(tokens) % 2:
        raise RLEError(f"odd number of values ({len(tokens)}); expected 'start length' pairs")
    try:
        values = np.asarray([int(t) for t in tokens], dtype=np.int64).reshape(-1, 2)
    except ValueError as err:
        raise RLEError(f"non-integer value in RLE ({err})") from None
    flat = np.zeros(h * w, dtype=np.uint8)
    if values.size == 0:
        return flat.reshape(w, h).T.copy()
    starts, lengths = values[:, 0] - 1, values[:, 1]
    if (starts < 0).any():
        raise RLEError("start below 1 (starts are 1-based)")
    if (lengths < 1).any():
        raise RLEError("run length below 1")
    ends = starts + lengths
    if ends.max() > h * w:
        raise RLEError(f"run ends at pixel {int(ends.max())}, past the {h}x{w} mask ({h * w} pixels): mask out of bounds")
    # Mark run starts +1 and run ends -1, then a cumulative sum fills the runs (overlapping runs stay 1).
    delta = np.zeros(h * w + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    flat = (np.cumsum(delta[:-1]) > 0).astype(np.uint8)
    return flat.reshape(w, h).T.copy()


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = on) as a 1-based, column-major RLE string ('' for an empty mask)."""
    flat = (np.asarray(mask).T.reshape(-1) > 0).astype(np.int8)
    padded = np.concatenate([[0], flat, [0]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))
