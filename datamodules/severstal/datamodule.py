"""``SeverstalCOIGANDataModule``: prepares the Severstal data sets once and serves COIGAN sample dicts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules.idx import DataError
from datamodules.severstal.augment import DEFAULT_BASE_AUGMENTATIONS, DEFAULT_OBJECT_AUGMENTATIONS
from datamodules.severstal.dataset import COIGANSamples
from datamodules.severstal.prepare import STEPS, prepare_severstal, resolve_workers


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its dataset the current epoch each time an epoch starts (``iter``).

    The dataset object is copied into the workers when they start, so with non-persistent workers every
    epoch's workers see the new epoch and draw a new stream.
    """

    def __init__(self, dataset: COIGANSamples, epoch_fn: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._epoch_fn = epoch_fn

    def __iter__(self):
        self.dataset.epoch = self._epoch_fn()
        return super().__iter__()


class SeverstalCOIGANDataModule(LightningDataModule):
    """Severstal steel defects for COIGAN (seed 004): base tiles, reference tiles, placed defects, noised masks.

    ``prepare_data`` builds the data sets under ``prepared_dir`` once (see ``datamodules/severstal/prepare.py``;
    ``python -m datamodules.severstal prepare`` does the same). Training batches are dicts of
    ``base``, ``ref``, ``gen_input`` (3 + N channels), ``disc_input`` (3·N), ``orig_gen_input_masks`` (N) and
    ``gen_input_union_mask``; validation and test batches are the same dicts from a fixed seeded stream,
    identical every epoch, for sample grids.

    Args:
        root: Kaggle data: a folder with train.csv and train_images/, or the competition zip.
        prepared_dir: where the prepared data sets live.
        image_size: tile side fed to the model (tiles are cut at this size).
        num_classes: N defect classes (Severstal has 4).
        batch_size: per process.
        num_workers: DataLoader workers for training (−1 = all CPUs).
        prepare_workers: processes for preparation (−1 = all CPUs).
        seed: seeds the sample streams, with the global rank, the worker id and the epoch.
        samples_per_epoch: training samples per epoch and process.
        num_val_samples: samples in the fixed validation / test stream.
        object_counts: possible numbers of objects per class in a sample.
        object_probs: probability of each entry of ``object_counts`` (normalised).
        force_non_empty: every sample holds at least one object.
        placement_tries: random positions tried per object before it is skipped.
        mask_base_img: zero the base under the masks in ``gen_input``.
        different_shapes: generator masks come from other objects than the defects in ``disc_input``.
        use_ref: add the reference tile ``ref`` to samples.
        noise: noise for the mask channels, ``{"class_path": "datamodules.severstal.noise.MultiscaleNoise"`` (or
            ``...GaussianNoise``), ``"init_args": {...}}``; None = the seed's multiscale noise (scales 1, 2, 4,
            mean 0.5, std 0.08, blur 41, normalised). Noise is clamped into [0, 1] so ``gen_input`` stays in ``value_range``.
        object_augmentations: albumentations specs (``[{transform: Affine, args: {scale: [0.7, 1.2]}}, ...]``, see
            ``augment.py``) for defect crops and their masks (None = the seed's preset, without its bugs).
        base_augmentations: albumentations specs for base and reference tiles (None = horizontal + vertical flip).
        split_mode: "fair" (greedy by per-class counts) or "random".
        train_ratio: share of images in the training split (the thesis used 0.5).
        split_seed: seed of the split.
        black_threshold: grey level under which a pixel counts as black.
        black_max_coverage: train tiles with a larger black share are dropped.
        force_prepare: rebuild the prepared data even if it exists.
        rank: global rank to seed with; None = the trainer's global rank (0 without a trainer).
    """

    channels = 3
    value_range = (0.0, 1.0)

    def __init__(
        self,
        root: str = "data/severstal",
        prepared_dir: str = "data/severstal_prepared",
        image_size: int = 256,
        num_classes: int = 4,
        batch_size: int = 8,
        num_workers: int = -1,
        prepare_workers: int = -1,
        seed: int = 42,
        samples_per_epoch: int = 8000,
        num_val_samples: int = 16,
        object_counts: tuple[int, ...] = (0, 1, 2, 3),
        object_probs: tuple[float, ...] = (0.4, 0.475, 0.1, 0.025),
        force_non_empty: bool = False,
        placement_tries: int = 3,
        mask_base_img: bool = False,
        different_shapes: bool = False,
        use_ref: bool = True,
        noise: dict[str, Any] | None = None,
        object_augmentations: list[dict[str, Any]] | None = None,
        base_augmentations: list[dict[str, Any]] | None = None,
        split_mode: str = "fair",
        train_ratio: float = 0.5,
        split_seed: int = 42,
        black_threshold: int = 10,
        black_max_coverage: float = 0.1,
        force_prepare: bool = False,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if image_size < 8 or num_classes < 1 or batch_size < 1 or samples_per_epoch < 1:
            raise ValueError("image_size ≥ 8, num_classes ≥ 1, batch_size ≥ 1 and samples_per_epoch ≥ 1 are required.")
        self.save_hyperparameters(logger=False)
        self.root, self.prepared_dir = root, prepared_dir
        self.image_size, self.num_classes = image_size, num_classes
        self.batch_size, self.num_workers = batch_size, resolve_workers(num_workers) if num_workers != 0 else 0
        self.prepare_workers, self.seed = prepare_workers, seed
        self.samples_per_epoch, self.num_val_samples = samples_per_epoch, num_val_samples
        self.force_prepare, self.rank = force_prepare, rank
        self.sample_args = dict(
            image_size=image_size, num_classes=num_classes, object_counts=tuple(object_counts),
            object_probs=tuple(object_probs), force_non_empty=force_non_empty, placement_tries=placement_tries,
            mask_base_img=mask_base_img, different_shapes=different_shapes, use_ref=use_ref, noise=noise,
            object_augmentations=DEFAULT_OBJECT_AUGMENTATIONS if object_augmentations is None else object_augmentations,
            base_augmentations=DEFAULT_BASE_AUGMENTATIONS if base_augmentations is None else base_augmentations)
        self.prepare_args = dict(tile_size=image_size, num_classes=num_classes, split_mode=split_mode, train_ratio=train_ratio,
                                 split_seed=split_seed, black_threshold=black_threshold,
                                 black_max_coverage=black_max_coverage)
        self.info: dict[str, Any] = {"dataset": "severstal", "image_size": image_size, "num_classes": num_classes}
        self._epochs_started = 0
        self._datasets: dict[str, COIGANSamples] = {}

    # ---- preparation ---------------------------------------------------------------------------------

    def _prepared(self) -> bool:
        return all((Path(self.prepared_dir) / "steps" / f"{s}.json").is_file() for s in STEPS)

    def prepare_data(self) -> None:
        """Build the prepared data sets (local rank 0 only); a no-op when they exist with the same settings."""
        if self._prepared() and not self.force_prepare:
            self._check_settings()
            return
        prepare_severstal(self.root, self.prepared_dir, num_workers=self.prepare_workers, force=self.force_prepare,
                          **self.prepare_args)
        self.force_prepare = False

    def _check_settings(self) -> None:
        marker = json.loads((Path(self.prepared_dir) / "steps" / "report.json").read_text())["settings"]
        wrong = {k: (marker.get(k), v) for k, v in self.prepare_args.items() if marker.get(k) != v}
        if wrong:
            raise DataError(f"{self.prepared_dir} was prepared with other settings (prepared, configured): {wrong}. Set "
                            "data.init_args.force_prepare: true to rebuild it, or point data.init_args.prepared_dir elsewhere.")

    # ---- data sets -----------------------------------------------------------------------------------

    def _global_rank(self) -> int:
        if self.rank is not None:
            return self.rank
        trainer = getattr(self, "_trainer", None) or getattr(self, "trainer", None)
        return int(getattr(trainer, "global_rank", 0) or 0)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.current_epoch)
        self._epochs_started += 1
        return self._epochs_started - 1

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        if not self._prepared():
            raise DataError(f"No prepared Severstal data in {self.prepared_dir!r} (data.init_args.prepared_dir). Run "
                            f"`python -m datamodules.severstal prepare --root {self.root} --out {self.prepared_dir}`, or let "
                            "the Trainer call prepare_data() with data.init_args.root pointing at the Kaggle folder or zip.")
        self._check_settings()
        self._datasets["train"] = COIGANSamples(self.prepared_dir, length=self.samples_per_epoch, seed=self.seed,
                                                rank=self._global_rank(), **self.sample_args)
        # The fixed stream: its own seed, rank 0 and epoch 0 on every process, so grids compare across epochs.
        self._datasets["val"] = COIGANSamples(self.prepared_dir, length=self.num_val_samples, seed=self.seed + 1_000_003,
                                              rank=0, **self.sample_args)
        d = self._datasets["train"]
        self.info.update(base_tiles=len(d.base), reference_tiles=len(d.ref), objects_per_class=[len(o) for o in d.objects],
                         samples_per_epoch=self.samples_per_epoch)

    def dataset(self, split: str) -> COIGANSamples:
        self.setup()
        return self._datasets["train" if split == "train" else "val"]

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        dataset.rank = self._global_rank()
        return EpochDataLoader(dataset, self._current_epoch, batch_size=self.batch_size, num_workers=self.num_workers,
                               drop_last=True, pin_memory=torch.cuda.is_available(),
                               prefetch_factor=4 if self.num_workers > 0 else None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
