"""What COIGAN's ``predict`` inpaints: base tiles with the masks to paint, from files or from the placement sampler.

``COIGANPredictSet`` yields ``{"index", "name", "base" (3, S, S) in [0, 1], "masks" (N, S, S) in {0, 1}}``:

- ``base_dir`` + ``mask_dir``: every image in ``base_dir`` (png/jpg) with the label map ``mask_dir/<stem>.png``
  (0 = background, k = class k, 1-based, as ``callbacks.coigan_writer`` writes them);
- ``base_dir`` alone: those tiles, with masks placed by the training sampler (``datamodules/severstal/placement.py``)
  from the prepared object data sets, sample i seeded by ``seed + i``;
- neither: ``num_samples`` base tiles *and* masks drawn from the prepared data, sample i seeded by ``seed + i``.

``SeverstalCOIGANPredictDataModule`` is ``SeverstalCOIGANDataModule`` plus a ``predict_dataloader`` over that set and
real tiles for FID/KID: ``dataset("test").images`` is a uint8 tensor of the prepared test tiles (``tile_test_set``,
unfiltered, the seed's FID reference), which ``callbacks.GenerationMetricsCallback`` reads. Switch a training config
to it for ``predict`` and ``test`` with ``--data.class_path`` (all other keys stay valid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.idx import DataError
from datamodules.severstal.datamodule import SeverstalCOIGANDataModule
from datamodules.severstal.dataset import COIGANSamples
from datamodules.severstal.jsonl import JsonLineDataset
from datamodules.severstal.source import read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_label_map(path: Path, num_classes: int, size: int) -> np.ndarray:
    """(N, S, S) float32 {0, 1} masks from a PNG label map (k = class k, 1-based); nearest resize to S."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DataError(f"Cannot read mask {path}: a PNG label map (0 background, k = class k) is expected.")
    if labels.ndim == 3:
        labels = labels[..., 0]
    if labels.shape != (size, size):
        labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
    if labels.max() > num_classes:
        raise DataError(f"{path} holds label {int(labels.max())} but there are {num_classes} classes.")
    return np.stack([(labels == k + 1) for k in range(num_classes)]).astype(np.float32)


class COIGANPredictSet(Dataset):
    """Base tiles and masks to inpaint (see the module docstring)."""

    def __init__(self, image_size: int, num_classes: int, base_dir: Optional[str] = None, mask_dir: Optional[str] = None,
                 samples: Optional[COIGANSamples] = None, num_samples: int = 16, seed: int = 0) -> None:
        self.size, self.num_classes, self.seed, self.samples = image_size, num_classes, seed, samples
        self.mask_dir = Path(mask_dir) if mask_dir else None
        self.files: list[Path] = []
        if base_dir:
            folder = Path(base_dir)
            if not folder.is_dir():
                raise DataError(f"predict base folder {folder} not found (data.init_args.predict_base_dir).")
            self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise DataError(f"no png/jpg tiles in {folder} (data.init_args.predict_base_dir).")
        if self.mask_dir is not None:
            if not self.files:
                raise DataError("data.init_args.predict_mask_dir needs data.init_args.predict_base_dir (the tiles).")
            missing = [p.name for p in self.files if not (self.mask_dir / f"{p.stem}.png").is_file()]
            if missing:
                raise DataError(f"no mask {self.mask_dir}/<stem>.png for {missing[:5]} (data.init_args.predict_mask_dir).")
        elif samples is None:
            raise DataError("masks come from data.init_args.predict_mask_dir or, without it, from the placement sampler, "
                            "which needs the prepared data (data.init_args.prepared_dir).")
        self.length = len(self.files) if self.files else num_samples

    def __len__(self) -> int:
        return self.length

    def _base(self, path: Path) -> torch.Tensor:
        image = read_rgb(path)
        if image.shape[:2] != (self.size, self.size):
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.files[i].stem if self.files else f"sample{i:07d}"
        if self.mask_dir is not None:
            base = self._base(self.files[i])
            masks = torch.from_numpy(read_label_map(self.mask_dir / f"{self.files[i].stem}.png", self.num_classes, self.size))
        else:
            state = self.samples.start(worker=self.seed + i)
            if self.files:
                base = self._base(self.files[i])
                masks = torch.from_numpy(self.samples._place(state, with_images=False)[1].astype(np.float32))
            else:
                sample = self.samples.sample(state)
                base, masks = sample["base"], sample["orig_gen_input_masks"]
        return {"index": i, "name": name, "base": base, "masks": masks}


class SeverstalCOIGANPredictDataModule(SeverstalCOIGANDataModule):
    """``SeverstalCOIGANDataModule`` with a ``predict_dataloader`` (see the module docstring).

    Args:
        predict_base_dir: folder of base tiles (null: base tiles from the prepared data).
        predict_mask_dir: folder of PNG label maps ``<stem>.png`` (null: masks from the placement sampler).
        predict_num_samples: how many samples to draw when there is no ``predict_base_dir``.
        predict_seed: sample i's placement is seeded by predict_seed + i.
        reference_tiles: at most this many real test tiles are loaded as ``dataset("test").images``.
        **kwargs: ``SeverstalCOIGANDataModule`` arguments.
    """

    def __init__(self, predict_base_dir: Optional[str] = None, predict_mask_dir: Optional[str] = None,
                 predict_num_samples: int = 16, predict_seed: int = 0, reference_tiles: int = 10000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reference_tiles = reference_tiles
        self.predict_base_dir, self.predict_mask_dir = predict_base_dir, predict_mask_dir
        self.predict_num_samples, self.predict_seed = predict_num_samples, predict_seed

    def _needs_prepared(self) -> bool:
        return not (self.predict_base_dir and self.predict_mask_dir)

    def prepare_data(self) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.state.fn == "predict" and not self._needs_prepared():
            return  # tiles and masks come from files: the Kaggle data is not needed
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and not self._needs_prepared():
            return
        super().setup(stage)

    def dataset(self, split: str) -> Any:
        """As the parent; the ``test`` split also carries ``images``: real test tiles, uint8 (M, 3, S, S)."""
        data = super().dataset(split)
        if split == "test" and not hasattr(data, "images"):
            tiles = JsonLineDataset(Path(self.prepared_dir) / "tile_test_set")
            images = []
            for i in range(min(len(tiles), self.reference_tiles)):
                image = read_rgb(tiles.path(tiles[i]))
                if image.shape[:2] != (self.image_size, self.image_size):
                    image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
                images.append(torch.from_numpy(image).permute(2, 0, 1))
            data.images = torch.stack(images)
        return data

    def predict_dataloader(self) -> DataLoader:
        samples = None
        if self._needs_prepared():
            samples = COIGANSamples(self.prepared_dir, length=1, seed=self.seed, rank=0, **self.sample_args)
        data = COIGANPredictSet(self.image_size, self.num_classes, self.predict_base_dir, self.predict_mask_dir, samples,
                                self.predict_num_samples, self.predict_seed)
        return DataLoader(data, batch_size=self.batch_size, num_workers=0, shuffle=False)
