"""Writes COIGAN ``predict`` outputs as a Severstal (Kaggle) data set that the Severstal data module reads back.

Layout of ``output_dir``::

    train_images/<id>.jpg   generated tiles (RGB JPEG, as the Kaggle images)
    train.csv               ImageId,ClassId,EncodedPixels (1-based column-major RLE, ClassId 1..N)
    masks/<id>.png          label maps: 0 background, k = class k (classes do not overlap: placement avoids it)
    manifest.json           provenance: checkpoint (+ sha256), seed, classes, blend, noise, counts, model provenance

``<id>`` is ``<index:07d>_<name>``, unique across DDP ranks. Each rank writes its csv rows to ``parts/``; rank 0
merges them into ``train.csv`` after a barrier. The folder is a valid ``data.init_args.root``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from datamodules.severstal.rle import rle_encode
from datamodules.severstal.source import write_jpeg
from metrics.provenance import sha256_of


class COIGANPredictionWriter(BasePredictionWriter):
    """Writes generated tiles, their masks (RLE csv + PNG) and a manifest (see the module docstring).

    Args:
        output_dir: destination folder (default: <default_root_dir>/predictions).
        jpeg_quality: JPEG quality of the tiles.
    """

    def __init__(self, output_dir: Optional[str] = None, jpeg_quality: int = 95) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.jpeg_quality = output_dir, jpeg_quality
        self._rows: list[tuple[str, int, str]] = []
        self._count = 0

    def out_dir(self, trainer: Trainer) -> Path:
        return Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows, self._count = [], 0

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        out = self.out_dir(trainer)
        (out / "train_images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        tiles = (prediction["tiles"].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        masks = prediction["masks"].numpy() > 0
        for tile, mask, index, name in zip(tiles, masks, prediction["index"].tolist(), prediction["name"]):
            image_id = f"{int(index):07d}_{name}.jpg"
            write_jpeg(out / "train_images" / image_id, np.ascontiguousarray(tile), quality=self.jpeg_quality)
            labels = np.zeros(mask.shape[1:], dtype=np.uint8)
            for k in range(mask.shape[0]):
                labels[mask[k] & (labels == 0)] = k + 1
                if mask[k].any():
                    self._rows.append((image_id, k + 1, rle_encode(mask[k])))
            cv2.imwrite(str(out / "masks" / f"{Path(image_id).stem}.png"), labels)
            self._count += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self.out_dir(trainer)
        (out / "parts").mkdir(parents=True, exist_ok=True)
        with open(out / "parts" / f"train_rank{trainer.global_rank}.csv", "w", newline="") as f:
            csv.writer(f).writerows(self._rows)
        counts = trainer.strategy.reduce(torch.tensor(float(self._count)), reduce_op="sum")
        trainer.strategy.barrier("coigan_writer")
        if not trainer.is_global_zero:
            return
        rows = []
        for part in sorted((out / "parts").glob("train_rank*.csv")):
            with open(part, newline="") as f:
                rows += [r for r in csv.reader(f) if r]
        rows.sort(key=lambda r: (r[0], int(r[1])))
        with open(out / "train.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
            writer.writerows(rows)
        ckpt = trainer.ckpt_path
        provenance = pl_module.provenance() if hasattr(pl_module, "provenance") else {}
        manifest = {
            "checkpoint": str(ckpt) if ckpt else None, "checkpoint_sha256": sha256_of(ckpt) if ckpt else None,
            "seed": provenance.get("sampling_seed"), "classes": list(range(1, getattr(pl_module, "num_defect_classes", 0) + 1)),
            "class_ids": "ClassId k = mask channel k-1 = label value k in masks/*.png", "tiles": int(counts.item()),
            "defect_rows": len(rows), "blend": provenance.get("blend"), "noise": provenance.get("noise"),
            "ema": provenance.get("ema"), "world_size": trainer.world_size, "model": provenance,
            "layout": {"train_images": "generated tiles (JPEG)", "train.csv": "Kaggle RLE (1-based, column-major)",
                       "masks": "PNG label maps"},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        print(f"wrote {manifest['tiles']} tiles, {len(rows)} defect rows and manifest.json to {out}")
