"""Logs what a run is: parameter counts, the data set and its size, and training throughput."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from networks.unet import count_parameters


class RunInfo(Callback):
    """Parameter count and data-set info at fit start; ``train/images_per_sec`` (all ranks) while training.

    Args:
        window: number of recent batches the throughput is averaged over.
    """

    def __init__(self, window: int = 20) -> None:
        super().__init__()
        self.window = window
        self._times: deque[float] = deque(maxlen=window + 1)
        self._sizes: deque[int] = deque(maxlen=window)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        info: dict[str, Any] = {
            "params/total": count_parameters(pl_module, trainable_only=False),
            "params/trainable": count_parameters(pl_module),
        }
        dm = trainer.datamodule
        for key, value in (getattr(dm, "info", None) or {}).items():
            info[f"data/{key}"] = value
        info["world_size"] = trainer.world_size
        rank_zero_info("Run info: " + ", ".join(f"{k}={v}" for k, v in info.items()))
        for logger in trainer.loggers:
            logger.log_hyperparams(info)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._times.clear()
        self._sizes.clear()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._times.append(time.perf_counter())
        x = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values())) if isinstance(batch, dict) else batch
        self._sizes.append(int(x.shape[0]))
        if len(self._times) > 1:
            n_images = sum(list(self._sizes)[-(len(self._times) - 1):]) * trainer.world_size
            rate = n_images / (self._times[-1] - self._times[0])
            pl_module.log("train/images_per_sec", rate, on_step=True, on_epoch=False, prog_bar=True)
