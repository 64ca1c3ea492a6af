"""Images in class sub-folders (``root/<class>/*.png``), e.g. for an in-domain feature network on your data.

Layout: either ``root/train/<class>/…`` and ``root/test/<class>/…``, or just ``root/<class>/…``, in
which case ``test_fraction`` of the images (seeded) becomes the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from datamodules.base import ImageDataModule
from datamodules.idx import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(root: Path, classes: list[str], image_size: int, channels: int) -> tuple[Tensor, Tensor]:
    """uint8 (N, C, S, S) images resized with bicubic filtering, and labels by class order."""
    mode = {1: "L", 3: "RGB"}[channels]
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        for path in files:
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert(mode).resize((image_size, image_size), Image.BICUBIC))
            except OSError as err:
                raise DataError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
            images.append(arr.reshape(image_size, image_size, channels))
            labels.append(label)
    if not images:
        raise DataError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in the class folders of {root}.")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


class ImageFolderDataModule(ImageDataModule):
    """A folder of class sub-folders; labels follow the sorted folder names.

    Args:
        root: the folder (with ``train/`` and ``test/`` inside, or class folders directly).
        channels: 1 (grey) or 3 (RGB); images are converted.
        test_fraction: share of the images used as the test split when there is no ``test/`` folder.
        kwargs: see ``ImageDataModule`` (image_size, value_range, val_fraction, batch_size, ...).
    """

    name = "image_folder"
    num_classes = None  # set from the class folders; not a config fact cli.py can link

    def __init__(self, root: str, channels: int = 3, test_fraction: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.root, self.channels, self.test_fraction = Path(root).expanduser(), channels, test_fraction
        if not self.root.is_dir():
            raise DataError(f"Image folder {str(self.root)!r} does not exist. Set data.init_args.root to a folder of "
                            "class sub-folders (root/<class>/*.png, optionally under root/train and root/test).")
        split_dirs = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        self.classes = [p.name for p in _class_dirs(self.root / "train" if split_dirs else self.root)]
        if not self.classes:
            raise DataError(f"{self.root} has no class sub-folders (expected root/<class>/*.png).")
        self.num_classes = len(self.classes)
        self.split_dirs = split_dirs
        self.name = f"image_folder:{self.root.name}"
        self.info = {"dataset": self.name, "classes": self.classes}

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        if self.split_dirs:
            return read_image_folder(self.root / split, self.classes, self.image_size, self.channels)
        images, labels = read_image_folder(self.root, self.classes, self.image_size, self.channels)
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed + 1))
        n_test = max(1, int(round(len(images) * self.test_fraction)))
        idx = perm[:n_test] if split == "test" else perm[n_test:]
        return images[idx], labels[idx]
