"""Learning-rate schedule: linear warm-up, then constant or cosine annealing to a minimum LR.

Stepped once per training iteration (a batch), never per optimizer step, so a module with several
optimizers follows the same curve as one with a single optimizer.

    lr(s) = lr₀ · (s + 1) / W                                            for s < W
    lr(s) = lr_min + ½ (lr₀ − lr_min) (1 + cos(π (s − W) / (S − W)))     for W ≤ s ≤ S (cosine)

(Loshchilov & Hutter 2017, Eq. 5, without restarts; seed 000 uses lr₀ = 1e-4 → lr_min = 1e-6.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from lightning.pytorch import LightningModule


@dataclass
class LRSchedule:
    """Args:
        warmup_steps: W, iterations of linear warm-up (0: none).
        decay: ``constant`` after the warm-up, or ``cosine`` annealing to ``min_lr``.
        total_steps: S, the iteration at which the cosine reaches ``min_lr``; null uses the trainer's
            estimate of the run's length (max_steps, or max_epochs × batches per epoch).
        min_lr: the final learning rate of the cosine.
    """

    warmup_steps: int = 0
    decay: Literal["constant", "cosine"] = "constant"
    total_steps: Optional[int] = None
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.min_lr < 0:
            raise ValueError(f"warmup_steps and min_lr must be >= 0, got {self.warmup_steps} and {self.min_lr}.")
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"Unknown decay {self.decay!r}: choose constant or cosine.")

    @property
    def is_constant(self) -> bool:
        return self.warmup_steps == 0 and self.decay == "constant"

    @property
    def needs_length(self) -> bool:
        """Whether ``build`` needs the run's length from the trainer (cosine without ``total_steps``)."""
        return self.decay == "cosine" and self.total_steps is None

    def lr_at(self, step: int, base_lr: float, total_steps: int) -> float:
        """The learning rate at iteration ``step`` (0-based) for a base rate ``base_lr``."""
        if step < self.warmup_steps:
            return base_lr * min(1.0, (step + 1) / self.warmup_steps)
        if self.decay == "constant":
            return base_lr
        span = max(1, total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int | None) -> torch.optim.lr_scheduler.LambdaLR:
        """A LambdaLR following ``lr_at`` for every parameter group (step it once per iteration)."""
        total = self.total_steps or total_steps
        if self.decay == "cosine" and not total:
            raise ValueError("a cosine LR schedule needs its length, and this run has none (no max_steps, max_epochs -1): "
                             "set lr_schedule.total_steps or trainer.max_steps.")
        base = check_learning_rates(optimizer)
        lambdas = [lambda s, b=b: self.lr_at(s, b, int(total or 0)) / b for b in base]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def check_learning_rates(optimizer: torch.optim.Optimizer) -> list[float]:
    """The optimizer's learning rates; a zero or negative one is an error, since it would train silently."""
    base = [group["lr"] for group in optimizer.param_groups]
    if any(not b > 0 for b in base):
        raise ValueError(f"learning rate must be > 0, got {base}: set model.init_args.optimizer.init_args.lr "
                         "(on the command line as --model.init_args.optimizer.init_args.lr=1e-4).")
    return base


def configure_with_schedule(module: LightningModule, optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> Any:
    """What ``configure_optimizers`` returns for one optimizer: the optimizer alone when ``schedule`` is constant,
    else the optimizer with ``schedule`` stepped every iteration over the trainer's estimate of the run."""
    check_learning_rates(optimizer)
    if schedule.is_constant:
        return optimizer
    total = module.trainer.estimated_stepping_batches if module._trainer and schedule.needs_length else None
    scheduler = schedule.build(optimizer, int(total) if total and math.isfinite(total) else None)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
