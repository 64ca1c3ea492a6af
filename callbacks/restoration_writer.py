"""Writes ``predict`` outputs of the restoration data modules: inpainted images by name, panels and slerp strips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from torchvision.utils import save_image

from callbacks.sample_grid import image_grid, require_generative
from callbacks.sample_writer import SampleWriter


class RestorationWriter(SampleWriter):
    """``SampleWriter``'s npz and grid, plus, for ``InpaintingDataModule``, one ``<name>.png`` per image and a panel
    (rows: masked input, output) and, for ``SlerpDataModule``, ``strips_rank{r}.png`` with one strip per row.

    Add it with ``--trainer.callbacks+=callbacks.restoration_writer.RestorationWriter``.

    Args:
        output_dir: destination folder (default: <default_root_dir>/predictions).
        max_grid: at most this many samples go into the PNG grid.
    """

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        super().write_on_epoch_end(trainer, pl_module, predictions, batch_indices)
        if predictions and isinstance(predictions[0], list):
            predictions = [p for group in predictions for p in group]
        samples = torch.cat([p["samples"] for p in predictions]).float()
        index = torch.cat([p["index"] for p in predictions])
        value_range = require_generative(pl_module, "RestorationWriter").value_range
        out = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        dm, rank = trainer.datamodule, trainer.global_rank
        low, high = value_range
        if getattr(dm, "masks", None) is not None:
            masked = torch.where(dm.masks[index].bool(), dm.images[index], torch.full_like(dm.images[index], low))
            for i, x in zip(index.tolist(), samples):
                save_image(((x - low) / (high - low)).clamp(0, 1), out / f"{dm.names[i]}.png")
            panel = out / f"inpainting_rank{rank}.png"
            n = min(len(samples), 16)
            save_image(image_grid(torch.cat([masked[:n], samples[:n]]), value_range, nrow=n), panel)
            self.written.append(panel)
        elif hasattr(dm, "points"):
            strips = out / f"strips_rank{rank}.png"
            save_image(image_grid(samples[index.argsort()], value_range, nrow=dm.points), strips)
            self.written.append(strips)


__all__ = ["RestorationWriter"]
