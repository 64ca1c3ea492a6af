"""Reader for the idx files of MNIST and Fashion-MNIST (LeCun et al. 1998), plain or gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(RuntimeError):
    """Data is missing or unreadable; the message says what was tried and how to fix it."""


def find_idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file: magic (0x0000 08 ndim), ndim big-endian uint32 sizes, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"Cannot read {path}: {err}. The file looks corrupt; delete it and run again.") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not a uint8 idx file (bad magic number). Delete it and run again.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise DataError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes), file has "
            f"{len(data) - offset}. Delete it and run again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Images (N, 28, 28) and labels (N,) of ``split`` from ``directory``, or None if the files are absent."""
    image_stem, label_stem = SPLIT_FILES[split]
    image_path, label_path = find_idx_file(directory, image_stem), find_idx_file(directory, label_stem)
    if image_path is None or label_path is None:
        return None
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{image_path} and {label_path} do not match: shapes {images.shape} and {labels.shape}. "
            "Delete them and run again."
        )
    return images, labels
