"""A flat folder of unlabelled scans (PNG/JPEG/TIFF, 8- or 16-bit), e.g. seed 000's Mayo CT slices.

Layout: ``root/*.png`` (a seeded ``test_fraction`` becomes the test split) or ``root/train/*.png`` and
``root/test/*.png``; there are no class folders. Preprocessing follows seed 000 (spec §3.2): resize
(bilinear, antialiased) → per-image min-max to [0, 1] → ``value_range`` (default [−1, 1]). Images are held
in memory at the model resolution, quantised to ``bits`` (8 or 16) per pixel. Albumentations transforms
run on the [0, 1] image of training batches only; validation, test and the FID/KID reference are never
augmented.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from datamodules.base import ImageDataModule
from datamodules.idx import DataError

SCAN_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def list_scans(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name; the first ``limit`` if given)."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES and not p.name.startswith("."))
    return files[:limit] if limit is not None else files


def read_scan(path: Path, channels: int) -> tuple[np.ndarray, float]:
    """(H, W, C) float32 pixels and the format's full-scale value (255; 65535 for 16-bit; 1 for float)."""
    with Image.open(path) as im:
        im.load()
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float grey: keep every level
            arr = np.asarray(im).astype(np.float32)[..., None]
            full_scale = 1.0 if im.mode == "F" else 65535.0
            if channels == 3:
                arr = np.repeat(arr, 3, axis=-1)
        else:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
            arr = arr.reshape(arr.shape[0], arr.shape[1], channels)
            full_scale = 255.0
    return arr, full_scale


def build_augmentations(spec: list[dict[str, Any]] | dict[str, Any] | None) -> A.Compose | None:
    """An albumentations Compose from YAML-friendly dicts.

    ``spec`` is either a list of ``{"class_path": "albumentations.Rotate", "init_args": {...}}`` (``class_path``
    may be a bare albumentations name such as ``Rotate``) or albumentations' own serialisation
    (``A.to_dict(transform)``, a dict with a ``transform`` key).
    """
    if not spec:
        return None
    if isinstance(spec, dict):
        if "transform" not in spec:
            raise ValueError("data.init_args.augmentations as a dict must be albumentations' serialisation "
                             "(A.to_dict(...), with a 'transform' key); otherwise give a list of "
                             "{class_path, init_args} dicts.")
        return A.from_dict(spec)
    transforms = []
    for item in spec:
        path = item.get("class_path") or item.get("name")
        if not path:
            raise ValueError(f"augmentation {item!r} has no class_path; write e.g. "
                             "{class_path: albumentations.Rotate, init_args: {limit: 10, p: 1.0}}.")
        module_name, _, cls_name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name or "albumentations"), cls_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"unknown augmentation {path!r} in data.init_args.augmentations; use an albumentations "
                             "class name such as Rotate or albumentations.HorizontalFlip.") from err
        transforms.append(cls(**(item.get("init_args") or {})))
    return A.Compose(transforms)


class ScanImages(Dataset):
    """Images (N, C, S, S) in [0, 1] quantised to uint8 or uint16, served in ``value_range``.

    ``images`` gives them as uint8 (what the FID/KID reference code reads); ``transform`` (albumentations)
    is applied to the [0, 1] image, which is then clipped back to [0, 1].
    """

    def __init__(self, data: Tensor, value_range: tuple[float, float], transform: A.Compose | None = None) -> None:
        self.data = data
        self.levels = 255.0 if data.dtype == torch.uint8 else 65535.0
        self.labels = torch.zeros(len(data), dtype=torch.long)
        self.low, self.high = value_range
        self.transform = transform
        self._seeded_worker: int | None = None

    @property
    def images(self) -> Tensor:
        if self.data.dtype == torch.uint8:
            return self.data
        return ((self.data.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.data)

    def _seed_worker(self) -> None:
        """Give each DataLoader worker its own augmentation stream (albumentations keeps its own RNG).

        The worker seed is torch's (base seed + worker id), so ``seed_everything`` makes it reproducible.
        """
        info = get_worker_info()
        if info is not None and self._seeded_worker != info.id:
            self.transform.set_random_seed(info.seed % 2**32)
            self._seeded_worker = info.id

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.data[i].float() / self.levels
        if self.transform is not None:
            self._seed_worker()
            c, h, w = x.shape
            out = self.transform(image=x.permute(1, 2, 0).numpy())["image"]
            out = np.asarray(out, dtype=np.float32).reshape(out.shape[0], out.shape[1], -1)
            if out.shape != (h, w, c):
                raise ValueError(f"augmentations changed the image shape from {(h, w, c)} to {out.shape}; "
                                 "use transforms that keep the size (or crop/resize back to image_size).")
            x = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).clamp(0.0, 1.0)
        return self.low + (self.high - self.low) * x, self.labels[i]


class ScanFolderDataModule(ImageDataModule):
    """Unlabelled scans from a flat folder (or ``train/`` + ``test/``); batches are (images, zeros).

    Args:
        root: the folder (config key ``data.init_args.root``).
        channels: 1 (grey) or 3 (RGB); images are converted (grey to RGB by repetition).
        image_size: side of the square images the model sees (seed 000: 512 → 256).
        value_range: pixel range of the model input (seed 000: (−1, 1)).
        scaling: ``min_max``: per image (x − min)/(max − min), as in seed 000; ``full_scale``: divide by the
            format's maximum (255 or 65535; float TIFFs must already be in [0, 1]).
        bits: 8 or 16 bits per stored pixel; 16 keeps the precision of 16-bit scans.
        augmentations: albumentations transforms for training batches only (see ``build_augmentations``),
            e.g. ``[{class_path: albumentations.Rotate, init_args: {limit: 10, p: 1.0}}]``.
        augment_seed: seed of the augmentation randomness in the main process (None: fresh each run);
            DataLoader workers are seeded from torch's worker seeds.
        limit: read only the first ``limit`` files (sorted by name) of each folder, for quick runs.
        test_fraction: share of a flat folder used as the test split (seeded by ``split_seed``).
        kwargs: see ``ImageDataModule`` (val_fraction, batch_size, num_workers, split_seed, ...).
    """

    name = "scan_folder"
    channels = 1
    num_classes = 0

    def __init__(
        self,
        root: Optional[str] = None,
        channels: int = 1,
        image_size: int = 256,
        value_range: tuple[float, float] = (-1.0, 1.0),
        scaling: Literal["min_max", "full_scale"] = "min_max",
        bits: int = 8,
        augmentations: list[dict[str, Any]] | dict[str, Any] | None = None,
        augment_seed: int | None = None,
        limit: int | None = None,
        test_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, value_range=value_range, **kwargs)
        if channels not in (1, 3):
            raise ValueError(f"data.init_args.channels must be 1 or 3, got {channels}.")
        if bits not in (8, 16):
            raise ValueError(f"data.init_args.bits must be 8 or 16, got {bits}.")
        if scaling not in ("min_max", "full_scale"):
            raise ValueError(f"data.init_args.scaling must be 'min_max' or 'full_scale', got {scaling!r}.")
        if limit is not None and limit < 1:
            raise ValueError(f"data.init_args.limit must be a positive number of files or null, got {limit}.")
        if not 0 <= test_fraction < 1:
            raise ValueError(f"data.init_args.test_fraction must be in [0, 1), got {test_fraction}.")
        if root is None:
            raise DataError("data.init_args.root is required: the folder of your scans (root/*.png, or root/train/ and "
                            "root/test/), e.g. --data.init_args.root /path/to/scans.")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"Scan folder {str(self.root)!r} does not exist. Set data.init_args.root to a folder of "
                            "images (root/*.png, or root/train/*.png and root/test/*.png).")
        self.channels, self.scaling, self.bits = channels, scaling, bits
        self.limit, self.test_fraction = limit, test_fraction
        self.augmentations = build_augmentations(augmentations)
        if self.augmentations is not None and augment_seed is not None:
            self.augmentations.set_random_seed(augment_seed)
        self.split_dirs = (self.root / "train").is_dir()
        self.name = f"scan_folder:{self.root.name}"
        self.info = {"dataset": self.name, "root": str(self.root)}
        self.skipped: list[str] = []

    # ---- reading -----------------------------------------------------------------------------------

    def read_folder(self, folder: Path) -> Tensor:
        """Stored images (N, C, S, S) of every readable file in ``folder``; unreadable ones are skipped and reported."""
        files = list_scans(folder, self.limit)
        if not files:
            raise DataError(f"No images ({', '.join(sorted(SCAN_SUFFIXES))}) in {folder}. Put the scans directly in "
                            "it (no class sub-folders) or point data.init_args.root elsewhere.")
        size, levels = self.image_size, (255 if self.bits == 8 else 65535)
        dtype = torch.uint8 if self.bits == 8 else torch.uint16
        images, skipped, constant = [], [], 0
        for path in files:
            try:
                arr, full_scale = read_scan(path, self.channels)
            except (OSError, ValueError, SyntaxError) as err:
                skipped.append(f"{path} ({type(err).__name__}: {err})")
                continue
            x = torch.from_numpy(arr).permute(2, 0, 1)[None]
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if self.scaling == "min_max":  # spec §3.2 step 4: x = (x − x_min)/(x_max − x_min), per image
                low, high = x.amin(), x.amax()
                constant += int(high <= low)
                x = (x - low) / (high - low) if high > low else torch.zeros_like(x)
            else:
                x = x / full_scale
            images.append((x[0].clamp(0, 1) * levels).round().to(torch.int32).to(dtype))
        if skipped:
            self.skipped.extend(skipped)
            warnings.warn(f"Skipped {len(skipped)} unreadable file(s) of {len(files)} in {folder}: "
                          + "; ".join(skipped[:10]) + ("; ..." if len(skipped) > 10 else ""), stacklevel=2)
        if not images:
            raise DataError(f"None of the {len(files)} files in {folder} could be read (first: {skipped[0]}). "
                            "Check the files or point data.init_args.root elsewhere.")
        self.info["skipped_files"] = len(self.skipped)
        self.info["constant_images"] = self.info.get("constant_images", 0) + constant
        return torch.stack(images)

    # ---- LightningDataModule -----------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        if self.split_dirs:
            train = self.read_folder(self.root / "train")
            test = self.read_folder(self.root / "test") if (self.root / "test").is_dir() else None
        else:
            train, test = self.read_folder(self.root), None
        if test is None:
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed + 1))
            n_test = int(round(len(train) * self.test_fraction))
            test, train = train[perm[:n_test]], train[perm[n_test:]]
        n_val = max(1, int(round(len(train) * self.val_fraction)))
        if n_val >= len(train):
            raise DataError(f"{len(train)} training image(s) leave none for training after a validation split of "
                            f"{n_val}; add images or lower data.init_args.val_fraction.")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        self._splits["train"] = ScanImages(train[perm[n_val:]], self.value_range, self.augmentations)
        self._splits["val"] = ScanImages(train[perm[:n_val]], self.value_range)
        self._splits["test"] = ScanImages(test, self.value_range)
        self._splits["all"] = ScanImages(torch.cat([train, test]), self.value_range)
        self.info.update({f"{k}_size": len(v) for k, v in self._splits.items()})
        self.info.update(image_size=self.image_size, value_range=list(self.value_range), bits=self.bits,
                         scaling=self.scaling, augmentations=A.to_dict(self.augmentations) if self.augmentations else None)

    def reference_images(self, splits: tuple[str, ...] = ("all",)) -> Tensor:
        """uint8 images (N, C, S, S) for FID/KID, never augmented; seed 000 uses "all" (train + val + test, 3,634)."""
        self.setup()
        unknown = [s for s in splits if s not in self._splits]
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from {sorted(self._splits)}.")
        return torch.cat([self._splits[s].images for s in splits])
