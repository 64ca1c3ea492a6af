"""Predict-only data modules for controllable generation: inpainting from image + mask folders, slerp strips.

    python cli.py predict --config sweeps/ddpm_fashion_mnist_cpu.yaml --ckpt_path runs/.../last.ckpt \
        --data datamodules.restoration.InpaintingDataModule --data.images DIR --data.masks DIR \
        --sampling.sampler DDIMSampler --sampling.sampler.steps 50
    python cli.py predict --config ... --ckpt_path ... --data datamodules.restoration.SlerpDataModule \
        --data.strips 4 --data.points 8 --sampling.sampler DDIMSampler --sampling.sampler.steps 50

Predict batches stay ``(sample_index, label)``, the requests ``DDPMModule.predict_step`` already turns into
samples, and the default ``SampleWriter`` writes them (npz + grid; add ``callbacks.restoration_writer.
RestorationWriter`` for per-image panels and one strip per row). What a request needs beyond its index (the
known image and mask, or its slerp x_T) is handed to the sampler: ``on_after_batch_transfer`` wraps
``module.sampling.sampler`` in a ``TaskSampler`` carrying the batch's ``Inpaint`` hook or starting noise, and
``teardown`` puts the original sampling back. No Lightning module changes are needed (the report of issue 15
describes the explicit ``predict_step`` alternative).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from datamodules.folder import IMAGE_SUFFIXES
from datamodules.idx import DataError
from diffusion.hooks import Inpaint
from diffusion.repaint import with_resampling
from diffusion.restoration import TaskSampler, check_steerable, slerp


def read_images(folder: str | Path, image_size: int, channels: int) -> tuple[list[str], Tensor]:
    """Sorted image files of ``folder`` as float (N, C, S, S) in [0, 1], resized bicubically, and their stems."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}.")
    mode = {1: "L", 3: "RGB"}[channels]
    arrays = []
    for path in files:
        try:
            with Image.open(path) as im:
                arrays.append(np.asarray(im.convert(mode).resize((image_size, image_size), Image.BICUBIC)))
        except OSError as err:
            raise DataError(f"Cannot read image {path}: {err}. Remove or replace the file.") from err
    x = torch.from_numpy(np.stack(arrays).reshape(len(files), image_size, image_size, channels)).permute(0, 3, 1, 2)
    return [p.stem for p in files], x.float() / 255.0


class _TaskDataModule(LightningDataModule):
    """Shared: the facts cli.py links into the model, predict requests and the per-batch sampler wrapper."""

    def __init__(self, image_size: int, channels: int, value_range: tuple[float, float], batch_size: int,
                 label: Optional[int]) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        self.image_size, self.channels, self.batch_size, self.label = image_size, channels, batch_size, label
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self._base_sampling: Any = None

    def __len__(self) -> int:
        raise NotImplementedError

    def predict_dataloader(self) -> DataLoader:
        idx = torch.arange(len(self))
        labels = torch.full_like(idx, -1 if self.label is None else self.label)  # −1: the unconditional branch
        return DataLoader(TensorDataset(idx, labels), batch_size=self.batch_size)

    def task_sampler(self, module: Any, indices: Tensor, base: Any) -> TaskSampler:
        """The sampler of ``base`` (a ``Sampling``) with what the requests ``indices`` need."""
        raise NotImplementedError

    def predict_kwargs(self, module: Any, indices: Tensor, sampling: Any) -> dict[str, Any]:
        """Keyword arguments of ``module.generate`` for the requests ``indices``: the sampling with their TaskSampler."""
        return {"sampling": replace(sampling, sampler=self.task_sampler(module, indices, sampling))}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Until ``predict_step`` asks for ``predict_kwargs`` itself (a module with ``reads_predict_kwargs = True``),
        install this batch's sampling on the module; ``generate`` then uses it."""
        trainer = self.trainer
        if trainer is not None and trainer.predicting:
            module = trainer.lightning_module
            if not getattr(module, "reads_predict_kwargs", False):
                if self._base_sampling is None:
                    self._base_sampling = module.sampling
                module.sampling = self.predict_kwargs(module, batch[0], self._base_sampling)["sampling"]
        return batch

    def teardown(self, stage: str) -> None:
        if self._base_sampling is not None and self.trainer is not None:
            self.trainer.lightning_module.sampling = self._base_sampling
            self._base_sampling = None


class InpaintingDataModule(_TaskDataModule):
    """Inpaint every image of ``images`` with the mask of the same file name in ``masks``.

    Args:
        images: folder of images (grey or RGB, converted to ``channels``), resized to ``image_size``.
        masks: folder of masks with the same file stems; read as grey and thresholded at 0.5.
        known: which mask colour marks the known (kept) pixels: ``white`` (default) or ``black``.
        jump_length, jump_n_sample: RePaint resampling (jump_n_sample = 1: plain replacement, any sampler).
        image_size, channels, value_range: the model's; cli.py links them into the model, so they must agree
            with the checkpoint's config.
        batch_size: requests per predict batch.
        num_workers: accepted so configs of the image data modules carry over; everything is in memory.
        label: class to condition on for class-conditional models (None: unconditional branch).
    """

    def __init__(self, images: str, masks: str, known: Literal["white", "black"] = "white", jump_length: int = 1,
                 jump_n_sample: int = 1, image_size: int = 28, channels: int = 1,
                 value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 16, num_workers: int = 0,
                 label: Optional[int] = None) -> None:
        super().__init__(image_size, channels, value_range, batch_size, label)
        if known not in ("white", "black"):
            raise ValueError(f"known must be 'white' or 'black', got {known!r}.")
        self.images_dir, self.masks_dir, self.known = images, masks, known
        self.jump_length, self.jump_n_sample = jump_length, jump_n_sample
        self.names: list[str] = []
        self.images: Optional[Tensor] = None
        self.masks: Optional[Tensor] = None

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        names, images = read_images(self.images_dir, self.image_size, self.channels)
        mask_names, masks = read_images(self.masks_dir, self.image_size, 1)
        by_name = dict(zip(mask_names, masks))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"No mask in {self.masks_dir} for image(s) {missing[:5]} of {self.images_dir}: give each "
                            "image a mask with the same file name (any image suffix).")
        mask = torch.stack([by_name[n] for n in names]) > 0.5
        low, high = self.value_range
        self.names, self.images = names, low + (high - low) * images
        self.masks = (mask if self.known == "white" else ~mask).float()

    def __len__(self) -> int:
        self.setup()
        return len(self.names)

    def task_sampler(self, module: Any, indices: Tensor, base: Any) -> TaskSampler:
        self.setup()
        i = indices.cpu()
        hook = Inpaint(self.images[i].to(module.device), self.masks[i].expand(-1, self.channels, -1, -1).to(module.device))
        sampler = with_resampling(base.sampler, self.jump_length, self.jump_n_sample)
        check_steerable(sampler, "InpaintingDataModule")
        return TaskSampler(sampler, hooks=(hook,))


class SlerpDataModule(_TaskDataModule):
    """``strips`` rows of ``points`` samples each, from x_T on the great circle between two prior draws.

    Strip s interpolates between the x_T of seeds ``seed + 2s`` and ``seed + 2s + 1``; sample index
    s · points + j. Use a deterministic sampler (DDIM η = 0, HeunODE) for a smooth strip.

    Args:
        strips: number of strips.
        points: samples per strip, endpoints included.
        seed: base seed of the endpoints.
        image_size, channels, value_range: the model's (linked into the model by cli.py).
        batch_size: requests per predict batch.
        num_workers: accepted so configs of the image data modules carry over; everything is in memory.
        label: class to condition on (None: unconditional branch).
    """

    def __init__(self, strips: int = 4, points: int = 8, seed: int = 0, image_size: int = 28, channels: int = 1,
                 value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 16, num_workers: int = 0,
                 label: Optional[int] = None) -> None:
        super().__init__(image_size, channels, value_range, batch_size, label)
        if strips < 1 or points < 2:
            raise ValueError(f"Need strips >= 1 and points >= 2, got strips={strips}, points={points}.")
        self.strips, self.points, self.seed = strips, points, seed
        self._noise: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.strips * self.points

    def strip_noise(self, module: Any, seed: int) -> Tensor:
        """``points`` x_T on the great circle between the prior draws of ``seed`` and ``seed + 1`` (CPU)."""
        ends = [module.process.prior_sample((1, *module.image_shape), torch.Generator().manual_seed(s))[0]
                for s in (seed, seed + 1)]
        return slerp(*ends, self.points)

    def task_sampler(self, module: Any, indices: Tensor, base: Any) -> TaskSampler:
        if self._noise is None:
            self._noise = torch.cat([self.strip_noise(module, self.seed + 2 * s) for s in range(self.strips)])
        return TaskSampler(base.sampler, x_T=self._noise[indices.cpu()].to(module.device))


__all__ = ["InpaintingDataModule", "SlerpDataModule", "read_images"]
