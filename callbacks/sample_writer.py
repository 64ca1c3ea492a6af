"""Writes ``predict`` outputs: a PNG grid and an ``.npz`` of samples with their provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torchvision.utils import save_image

from callbacks.sample_grid import image_grid, require_generative


class SampleWriter(BasePredictionWriter):
    """Saves ``samples_rank{r}.npz`` (float32 samples in value_range, index, labels, provenance JSON) and
    ``grid_rank{r}.png`` in ``output_dir``; one file pair per rank so DDP ranks never overwrite each other.

    Args:
        output_dir: destination folder (default: <default_root_dir>/predictions).
        max_grid: at most this many samples go into the PNG grid.
    """

    def __init__(self, output_dir: str | None = None, max_grid: int = 100) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.max_grid = max_grid
        self.written: list[Path] = []

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders
            predictions = [p for group in predictions for p in group]
        samples = torch.cat([p["samples"] for p in predictions]).float()
        index = torch.cat([p["index"] for p in predictions])
        labels = torch.cat([p["labels"] for p in predictions])
        out = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        provenance = require_generative(pl_module, "SampleWriter").provenance()
        provenance.update(ckpt_path=str(trainer.ckpt_path) if trainer.ckpt_path else None, rank=rank,
                          world_size=trainer.world_size, torch=torch.__version__)
        npz = out / f"samples_rank{rank}.npz"
        np.savez_compressed(npz, samples=samples.numpy(), index=index.numpy(), labels=labels.numpy(),
                            provenance=json.dumps(provenance))
        png = out / f"grid_rank{rank}.png"
        save_image(image_grid(samples[: self.max_grid], pl_module.value_range), png)
        self.written = [npz, png]
        print(f"[rank {rank}] wrote {len(samples)} samples to {npz} and {png}")
