"""Sample grids from fixed noise each validation epoch, drawn on rank 0 with the EMA weights."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from lightning_modules.contract import GenerativeModule, Sampling
from lightning_modules.wandb_utils import get_wandb_logger


def to_unit_range(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    low, high = value_range
    return ((x - low) / (high - low)).clamp(0, 1)


def require_generative(pl_module: LightningModule, who: str) -> GenerativeModule:
    """The callbacks talk to the written contract only; anything else is a configuration error."""
    if not isinstance(pl_module, GenerativeModule):
        raise TypeError(f"{who} needs a genlab GenerativeModule (lightning_modules/contract.py), got "
                        f"{type(pl_module).__name__}; remove {who} from this config.")
    return pl_module


def smoke_test_sampling(sampling: Sampling) -> Sampling:
    """The same settings with at most 2 steps, for fast_dev_run: exercise the path, not the full cost."""
    if sampling.sampler is None:  # a model without a reverse process: nothing to shorten
        return sampling
    quick = copy.copy(sampling)
    quick.sampler = copy.copy(sampling.sampler)
    if getattr(quick.sampler, "steps", None) is None or quick.sampler.steps > 2:
        quick.sampler.steps = 2
    return quick


def image_grid(x: torch.Tensor, value_range: tuple[float, float], nrow: int | None = None) -> torch.Tensor:
    """(B, C, H, W) in value_range → one (C, H', W') grid in [0, 1]; nrow = √B when B is a square."""
    n = x.shape[0]
    if nrow is None:
        root = int(math.isqrt(n))
        nrow = root if root * root == n else min(8, n)
    return make_grid(to_unit_range(x.float().cpu(), value_range), nrow=nrow, padding=2, pad_value=1.0)


class SampleGrid(Callback):
    """Logs a grid of ``num_samples`` images every ``every_n_epochs`` validation epochs.

    The noise is fixed (sample i uses ``seed + i``), so grids of successive epochs are comparable. The
    grid is drawn inside the validation epoch, where EMA weights are swapped in. Class-conditional
    models get labels i mod num_classes (a row per class in a 10-wide grid).

    Args:
        num_samples: images per grid.
        every_n_epochs: draw after epochs n, 2n, ... (counted like ``check_val_every_n_epoch``).
        sampling: sampler (by class_path), guidance weight and seed of the fixed noise.
        save_dir: folder for PNG copies (default: <default_root_dir>/samples).
    """

    def __init__(
        self,
        num_samples: int = 64,
        every_n_epochs: int = 1,
        sampling: Optional[Sampling] = None,
        save_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.sampling = sampling or Sampling(seed=1234)
        self.save_dir = save_dir
        self.last_grid_path: Path | None = None
        self._drawn_at = -1  # global step of the last grid

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.sampling = require_generative(pl_module, "SampleGrid").resolve_sampling(self.sampling)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:  # same counting as check_val_every_n_epoch
            return
        self._draw(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """One grid of the final weights (EMA, when used), unless the last validation just drew one."""
        if self._drawn_at != trainer.global_step and not trainer.fast_dev_run:
            self._draw(trainer, pl_module, name=f"final_step_{trainer.global_step:06d}")

    @rank_zero_only
    def _draw(self, trainer: Trainer, pl_module: GenerativeModule, name: Optional[str] = None) -> None:
        self._drawn_at = trainer.global_step
        sampling, num_samples = self.sampling, self.num_samples
        if trainer.fast_dev_run:
            sampling, num_samples = smoke_test_sampling(sampling), min(num_samples, 4)
        n_classes = pl_module.num_classes
        indices = torch.arange(num_samples)
        labels = sampling.labels_for(indices, n_classes)
        was_training = pl_module.training
        pl_module.eval()
        samples = pl_module.generate(indices.to(pl_module.device), labels, sampling=sampling)
        pl_module.train(was_training)
        nrow = n_classes if n_classes and num_samples % n_classes == 0 else None
        grid = image_grid(samples, pl_module.value_range, nrow)
        out_dir = Path(self.save_dir or Path(trainer.default_root_dir) / "samples")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.last_grid_path = out_dir / f"{name or f'epoch_{trainer.current_epoch:03d}'}.png"
        save_image(grid, self.last_grid_path)
        logger = get_wandb_logger(trainer)
        if logger is not None:
            s = sampling.sampler
            caption = (f"{name or f'epoch {trainer.current_epoch}'}, EMA={_ema_active(trainer)}, {s!r}, "
                       f"w={sampling.guidance_scale} seed={sampling.seed}")
            logger.log_image(key="samples", images=[grid], caption=[caption], step=trainer.global_step)


def _ema_active(trainer: Trainer) -> bool:
    from lightning.pytorch.callbacks import WeightAveraging

    return any(isinstance(cb, WeightAveraging) for cb in trainer.callbacks)
