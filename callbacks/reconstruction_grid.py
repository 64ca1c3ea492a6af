"""Originals (top row) over their reconstructions (bottom row), from the first validation batch, rank 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import save_image

from callbacks.sample_grid import image_grid
from lightning_modules.contract import Reconstructs
from lightning_modules.wandb_utils import get_wandb_logger


class ReconstructionGrid(Callback):
    """Logs ``reconstructions`` every ``every_n_epochs`` validation epochs (modules meeting ``Reconstructs``).

    Args:
        num_images: images per row.
        every_n_epochs: draw after epochs n, 2n, ... (counted like ``check_val_every_n_epoch``).
        save_dir: folder for PNG copies (default: <default_root_dir>/reconstructions).
    """

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1, save_dir: str | None = None) -> None:
        super().__init__()
        self.num_images, self.every_n_epochs, self.save_dir = num_images, every_n_epochs, save_dir

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Reconstructs):
            raise TypeError(f"ReconstructionGrid needs a module that reconstructs (the Reconstructs contract in "
                            f"lightning_modules/contract.py), got {type(pl_module).__name__}; remove it from this config.")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx or dataloader_idx or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, batch[0][: self.num_images])

    @rank_zero_only
    @torch.no_grad()
    def _draw(self, trainer: Trainer, pl_module: LightningModule, x: torch.Tensor) -> None:
        if trainer.fast_dev_run:
            x = x[:2]
        x_hat = pl_module.reconstruct(x)
        grid = image_grid(torch.cat([x, x_hat]), pl_module.value_range, nrow=x.shape[0])
        out = Path(self.save_dir or Path(trainer.default_root_dir) / "reconstructions")
        out.mkdir(parents=True, exist_ok=True)
        save_image(grid, out / f"epoch_{trainer.current_epoch:03d}.png")
        logger = get_wandb_logger(trainer)
        if logger is not None:
            logger.log_image(key="reconstructions", images=[grid], caption=[f"epoch {trainer.current_epoch}: top "
                             "originals, bottom reconstructions"], step=trainer.global_step)
