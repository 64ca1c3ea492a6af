"""FeatureClassifierModule: trains the in-domain feature network used for FID/KID (seed 000's RadImageNet idea)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_modules.data_checks import check_matches_data
from lightning_modules.hparams import save_config_hparams
from lightning_modules.lr_schedule import LRSchedule, configure_with_schedule
from networks.classifier import FeatureCNN, accuracy


class FeatureClassifierModule(LightningModule):
    """Supervised classifier; its checkpoint is the extractor of ``metrics.ClassifierFeatures``.

    Args:
        in_channels: image channels.
        num_classes: classes of the data set.
        image_size: input side; generated images of another size are resized to it.
        width: channels of the first conv stage (×2, ×4 after).
        feature_dim: size of the penultimate (feature) layer.
        dropout: dropout before the class head.
        label_smoothing: cross-entropy label smoothing.
        value_range: pixel range of the data (the extractor maps [0, 1] images to it).
        optimizer: optimizer factory.
        lr_schedule: warm-up and decay of the learning rate, per iteration (null: constant).
        augment: a batch augmentation applied to training images only, by class_path (e.g.
            ``datamodules.RandomAffine``); it sees images shifted so that the low end of ``value_range`` is 0.
        report_dir: where ``test`` writes ``classifier_test.json`` (default <default_root_dir>/eval).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 32,
        feature_dim: int = 128,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        value_range: tuple[float, float] = (0.0, 1.0),
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_schedule: Optional[LRSchedule] = None,
        augment: Optional[nn.Module] = None,
        report_dir: str | None = None,
    ) -> None:
        super().__init__()
        save_config_hparams(self, objects=("optimizer", "augment"))
        self.net = FeatureCNN(in_channels, num_classes, image_size, width, feature_dim, dropout)
        self.label_smoothing = label_smoothing
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.image_shape = (in_channels, image_size, image_size)
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.augment = augment
        self.report_dir = report_dir
        self._correct = self._seen = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch
        if stage == "train" and self.augment is not None:
            low = self.value_range[0]
            x = low + self.augment(x - low)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=stage == "train", sync_dist=sync, batch_size=len(x))
        self.log(f"{stage}/acc", accuracy(logits, y), prog_bar=True, on_epoch=True, on_step=False, sync_dist=sync,
                 batch_size=len(x))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        acc = float(self.trainer.callback_metrics["test/acc"])
        if self.trainer.is_global_zero:
            out = Path(self.report_dir or Path(self.trainer.default_root_dir) / "eval")
            out.mkdir(parents=True, exist_ok=True)
            dm = getattr(self.trainer, "datamodule", None)
            report = {"test_accuracy": acc, "checkpoint": self.trainer.ckpt_path, "data": getattr(dm, "info", None)}
            (out / "classifier_test.json").write_text(json.dumps(report, indent=2, default=str))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        val_acc = self.trainer.callback_metrics.get("val/acc")
        checkpoint["genlab"] = {"val_accuracy": None if val_acc is None else float(val_acc)}

    def setup(self, stage: str) -> None:
        check_matches_data(self.image_shape, self.value_range, getattr(self.trainer, "datamodule", None), self.net.num_classes)

    def configure_optimizers(self) -> Any:
        return configure_with_schedule(self, self.optimizer_factory(self.net.parameters()), self.lr_schedule)
