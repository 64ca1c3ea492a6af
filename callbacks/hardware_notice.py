"""Tells a user when a GPU-sized config runs on the CPU, and how long the whole run will take at that speed."""

from __future__ import annotations

import time
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_info


class CPUNotice(Callback):
    """At the start of training on a CPU: a notice naming the CPU config; after ``measure_steps`` steps: an
    estimate of the total time from the measured seconds per step.

    Args:
        config: the config being run (for the message).
        cpu_config: the config sized for a CPU, when one exists.
        measure_steps: steps timed (after the first, which includes start-up) before the estimate.
    """

    def __init__(self, config: str = "this config", cpu_config: Optional[str] = None, measure_steps: int = 10) -> None:
        super().__init__()
        self.config, self.cpu_config, self.measure_steps = config, cpu_config, measure_steps
        self._start: Optional[tuple[int, float]] = None
        self.estimate_s: Optional[float] = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(trainer.accelerator, CPUAccelerator):
            return
        hint = (f"On a CPU use {self.cpu_config}: python cli.py fit --config {self.cpu_config}" if self.cpu_config
                else "The sweeps/*_cpu.yaml configs are sized for a CPU.")
        rank_zero_info(f"No GPU found: {self.config} is sized for a GPU and runs on the CPU here, which is far slower. "
                       f"{hint}. An estimate of this run's time follows after {self.measure_steps} steps.")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not isinstance(trainer.accelerator, CPUAccelerator) or self.estimate_s is not None:
            return
        if self._start is None:
            self._start = (trainer.global_step, time.perf_counter())
            return
        steps = trainer.global_step - self._start[0]
        if steps < self.measure_steps:
            return
        per_step = (time.perf_counter() - self._start[1]) / steps
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            return
        self.estimate_s = per_step * (total - trainer.global_step)
        rank_zero_info(f"CPU speed: {per_step:.2f} s/step; the remaining {int(total - trainer.global_step):,} steps take "
                       f"about {self.estimate_s / 3600:.1f} h. Stop with Ctrl-C (last.ckpt is saved) and use a CPU config.")
