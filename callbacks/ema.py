"""EMA of the weights with a warm-up, on top of Lightning's ``EMAWeightAveraging``.

Lightning swaps the EMA weights in for validation (so sample grids and ``val/loss`` use them), writes
them to ``state_dict`` of every checkpoint (raw weights under ``current_model_state``) and restores both
on ``fit --ckpt_path``. The warm-up matters for short runs: with a fixed decay of 0.999 the average
still remembers the random initialisation after a few hundred steps.
"""

from __future__ import annotations

import copy
from typing import Optional, Union

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor, nn


class WarmupEMAFn:
    """θ̄ ← d_n θ̄ + (1 − d_n) θ with d_n = min(decay, 1 − (1 + n)^(−power)) after n updates."""

    def __init__(self, decay: float, power: Optional[float]) -> None:
        self.decay, self.power = decay, power

    def decay_at(self, n: int) -> float:
        if not self.power:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + n) ** (-self.power))

    def __call__(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        d = self.decay_at(int(num_averaged))
        return averaged + (current - averaged) * (1.0 - d)


class EMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` with an optional decay warm-up.

    Args:
        decay: the final EMA decay (e.g. 0.9999 for long GPU runs, 0.999 for short CPU runs).
        warmup_power: p of the warm-up d_n = min(decay, 1 − (1+n)^−p); null disables the warm-up.
            2/3 suits runs of a few thousand steps, 3/4 long runs.
        update_every_n_steps: update the average every n optimizer steps.
        update_starting_at_step: first optimizer step that updates the average.
        device: where the averaged copy lives (default: the model's device; "cpu" saves GPU memory).
        use_buffers: also average buffers.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup_power: Optional[float] = 2 / 3,
        update_every_n_steps: int = 1,
        update_starting_at_step: Optional[int] = None,
        device: Optional[Union[torch.device, str, int]] = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}.")
        super().__init__(
            device=device, use_buffers=use_buffers, decay=decay, update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self.decay = decay
        self._kwargs["avg_fn"] = WarmupEMAFn(decay, warmup_power)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build the averaged copy without dragging the trainer (and its data) or lock-holding callables along.

        ``AveragedModel`` deep-copies the module; under DDP the trainer and jsonargparse's optimizer
        partial hold thread locks and cannot be copied, and single-process the copy would duplicate the
        data set. They are detached for the copy and put back right after.
        """
        if stage != "fit":
            return super().setup(trainer, pl_module, stage)
        detached = {"_trainer": pl_module.__dict__.get("_trainer")}
        for name, value in pl_module.__dict__.items():
            if name.startswith("_") or isinstance(value, (Tensor, nn.Module)) or name in detached:
                continue
            try:
                copy.deepcopy(value)
            except Exception:  # noqa: BLE001 - anything that cannot be copied is not model state
                detached[name] = value
        for name in detached:
            pl_module.__dict__[name] = None
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            pl_module.__dict__.update(detached)

    @property
    def average_model(self):
        """The ``AveragedModel`` holding the EMA copy (None outside ``fit``)."""
        return self._average_model
