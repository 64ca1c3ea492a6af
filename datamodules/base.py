"""Shared LightningDataModule for small labelled image data sets held in memory.

Images are resized once, at set-up, and kept as uint8; each batch is converted to float in
``value_range``. Batches are ``(images (B, C, H, W), labels (B,))``; predict batches are
``(sample_index (B,), label (B,))``, the requests that ``DDPMModule.predict_step`` turns into samples.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules.resumable import ResumableLoader


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, which containers and SLURM set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and labels, returned as float images in ``value_range``."""

    def __init__(self, images: Tensor, labels: Tensor, value_range: tuple[float, float]) -> None:
        self.images, self.labels = images, labels
        self.low, self.high = value_range

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.images[i].float() / 255.0
        return self.low + (self.high - self.low) * x, self.labels[i]


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """(N, H, W) or (N, C, H, W) uint8 → (N, C, size, size) uint8, bilinear with antialiasing."""
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class ImageDataModule(LightningDataModule):
    """Base class. Subclasses implement ``load_split(split) -> (uint8 images, labels)`` and set ``name``.

    Args:
        data_dir: where data files are looked for (and downloaded to).
        image_size: side of the square images fed to the model (resized from the source, e.g. 28 → 32).
        value_range: pixel range of the model's input, (0, 1) as in seed 002 or (-1, 1).
        val_fraction: fraction of the training split held out for validation (seeded).
        batch_size: batch size per process (the global batch is batch_size × devices × nodes).
        num_workers: DataLoader worker processes.
        split_seed: seed of the train/validation split, fixed so every run and DDP rank agree.
        num_predict_samples: number of samples ``predict`` generates.
    """

    name = "images"
    channels = 1
    num_classes = 10

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 32,
        value_range: tuple[float, float] = (0.0, 1.0),
        val_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 2,
        split_seed: int = 0,
        num_predict_samples: int = 64,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        if value_range[0] >= value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}.")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.image_size = image_size
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = min(num_workers, available_cores())
        if self.num_workers < num_workers:
            print(f"num_workers {num_workers} is more than the {available_cores()} CPU cores here; using {self.num_workers}.")
        self.split_seed = split_seed
        self.num_predict_samples = num_predict_samples
        self.info: dict = {"dataset": self.name}
        self._splits: dict[str, InMemoryImages] = {}

    # ---- to implement ------------------------------------------------------------------------------

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """Return uint8 images (N, H, W) or (N, C, H, W) and int64 labels (N,) for 'train' or 'test'."""
        raise NotImplementedError

    # ---- LightningDataModule -----------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Loads and splits the data once; ``predict`` needs none (its batches are sample indices), and a mode
        that does (DiffuseVAE reconstructions) loads it through ``dataset()`` when it asks."""
        if self._splits or stage == "predict":
            return
        images, labels = self.load_split("train")
        images = resize_uint8(images, self.image_size)
        n_val = max(1, int(round(len(images) * self.val_fraction)))
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        self._splits["train"] = InMemoryImages(images[train_idx], labels[train_idx], self.value_range)
        self._splits["val"] = InMemoryImages(images[val_idx], labels[val_idx], self.value_range)
        test_images, test_labels = self.load_split("test")
        self._splits["test"] = InMemoryImages(resize_uint8(test_images, self.image_size), test_labels, self.value_range)
        self.info.update({f"{k}_size": len(v) for k, v in self._splits.items()})
        self.info.update(image_size=self.image_size, value_range=list(self.value_range))

    def dataset(self, split: str) -> InMemoryImages:
        """``train``, ``val``, ``test``, or ``all`` (the three together, e.g. seed 000's FID reference set)."""
        self.setup()
        if split == "all" and "all" not in self._splits:
            parts = [self._splits[k] for k in ("train", "val", "test")]
            self._splits["all"] = InMemoryImages(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                                                 self.value_range)
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}: choose train, val, test or all.")
        return self._splits[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Seeded per-epoch shuffle that resumes mid-epoch (``ResumableLoader``); each DDP rank takes its share."""
        trainer = self.trainer
        seed = int(os.environ.get("PL_GLOBAL_SEED", self.split_seed))
        return ResumableLoader(self.dataset("train"), batch_size=self.batch_size, seed=seed,
                               num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0,
                               num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the training batches of this epoch, the position a resumed run continues from."""
        trainer = self.trainer
        if trainer is not None and trainer.training and isinstance(trainer.train_dataloader, ResumableLoader):
            limit = trainer.num_training_batches
            trainer.train_dataloader.mark_trained(int(limit) if limit != float("inf") else None)
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Sample requests: index i (seeds the noise of sample i) and label i mod num_classes."""
        idx = torch.arange(self.num_predict_samples)
        return DataLoader(TensorDataset(idx, idx % max(self.num_classes, 1)), batch_size=self.batch_size)
