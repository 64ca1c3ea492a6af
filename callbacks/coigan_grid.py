"""COIGAN image grid every N training iterations: base, union mask, generated tile, generated defects per class."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchvision.utils import make_grid, save_image

from callbacks.ema import EMA
from lightning_modules.coigan_inference import collate_samples, extract_defects
from lightning_modules.wandb_utils import get_wandb_logger


def ema_generator(trainer: Trainer, pl_module: LightningModule) -> nn.Module:
    """The EMA generator when a ``callbacks.EMA`` averages it (or the whole module), else the live one."""
    for cb in trainer.callbacks:
        if isinstance(cb, EMA) and cb.average_model is not None:
            if cb.submodule == "generator":
                return cb.average_model.module
            if not cb.submodule:
                return cb.average_model.module.generator
    return pl_module.generator


class COIGANSampleGrid(Callback):
    """Every ``every_n_iterations`` iterations (the contract's counter), on rank 0: one column per sample of the
    fixed validation stream, rows = base, union mask, generated tile (EMA generator if present), then the generated
    pixels under each class's mask. Saved as PNG and logged to W&B (key ``coigan/grid``).

    Args:
        every_n_iterations: grid interval in iterations (seed: 500); fast_dev_run draws one at the first iteration.
        num_samples: columns (samples of the validation stream).
        save_dir: PNG folder (default: <default_root_dir>/grids).
    """

    def __init__(self, every_n_iterations: int = 500, num_samples: int = 8, save_dir: Optional[str] = None) -> None:
        super().__init__()
        if every_n_iterations < 1 or num_samples < 1:
            raise ValueError("every_n_iterations and num_samples must be >= 1.")
        self.every_n_iterations, self.num_samples, self.save_dir = every_n_iterations, num_samples, save_dir
        self.last_grid_path: Path | None = None
        self._batch: dict[str, torch.Tensor] | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = pl_module.iterations
        if n % self.every_n_iterations == 0 or (trainer.fast_dev_run and n == 1):
            self.draw(trainer, pl_module)

    def fixed_batch(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        if self._batch is None:
            data = trainer.datamodule.dataset("val")
            state, samples = data.start(0), []
            for _ in range(self.num_samples):
                samples.append(data.sample(state))
            self._batch = collate_samples(samples)
        return self._batch

    @torch.no_grad()
    def grid(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        """The (3, H, W) grid in [0, 1]."""
        batch = {k: v.to(pl_module.device) for k, v in self.fixed_batch(trainer).items()}
        generator = ema_generator(trainer, pl_module)
        was_training = generator.training
        generator.eval()
        fake = generator(batch["gen_input"]).clamp(0, 1)
        generator.train(was_training)
        masks = batch["orig_gen_input_masks"]
        defects = extract_defects(fake, masks).unflatten(1, (-1, 3))  # (B, N, 3, S, S)
        rows = [batch["base"], batch["gen_input_union_mask"][:, None].expand(-1, 3, -1, -1), fake,
                *defects.unbind(1)]
        return make_grid(torch.cat(rows).float().cpu(), nrow=fake.shape[0], padding=2, pad_value=1.0)

    @rank_zero_only
    def draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        grid = self.grid(trainer, pl_module)
        out = Path(self.save_dir or Path(trainer.default_root_dir) / "grids")
        out.mkdir(parents=True, exist_ok=True)
        self.last_grid_path = out / f"iter_{pl_module.iterations:07d}.png"
        save_image(grid, self.last_grid_path)
        logger = get_wandb_logger(trainer)
        if logger is not None:
            n = pl_module.num_defect_classes
            caption = (f"iteration {pl_module.iterations}; rows: base, union mask, generated, defects of classes 1..{n}; "
                       f"EMA={ema_generator(trainer, pl_module) is not pl_module.generator}")
            logger.log_image(key="coigan/grid", images=[grid], caption=[caption], step=pl_module.iterations)
