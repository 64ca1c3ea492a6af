"""EMA of the weights with a warm-up, on top of Lightning's ``EMAWeightAveraging``.

Lightning swaps the EMA weights in for validation (so sample grids and ``val/loss`` use them), writes
them to ``state_dict`` of every checkpoint (raw weights under ``current_model_state``) and restores both
on ``fit --ckpt_path``. The warm-up matters for short runs: with a fixed decay of 0.999 the average
still remembers the random initialisation after a few hundred steps.

Two changes to Lightning's behaviour: updates are counted in training iterations (batches), not in
optimizer steps, so a GAN with three optimizers is averaged once per iteration; and ``submodule``
averages one named sub-network only (the generator, not the discriminators).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Optional, Union

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from lightning_modules.contract import GenerativeModule


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
        submodule: average only this named sub-network (e.g. ``generator``); null averages the whole module.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup_power: Optional[float] = 2 / 3,
        update_every_n_steps: int = 1,
        update_starting_at_step: Optional[int] = None,
        device: Optional[Union[torch.device, str, int]] = None,
        use_buffers: bool = True,
        submodule: Optional[str] = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}.")
        super().__init__(
            device=device, use_buffers=use_buffers, decay=decay, update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self.decay = decay
        self.submodule = submodule
        self._kwargs["avg_fn"] = WarmupEMAFn(decay, warmup_power)

    def _target(self, pl_module: LightningModule) -> nn.Module:
        if not self.submodule:
            return pl_module
        try:
            return pl_module.get_submodule(self.submodule)
        except AttributeError as err:
            names = ", ".join(name for name, _ in pl_module.named_children())
            raise ValueError(f"EMA submodule {self.submodule!r} is not a sub-network of {type(pl_module).__name__}; "
                             f"choose one of: {names}.") from err

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Build the averaged copy without dragging the trainer (and its data) or lock-holding callables along.

        ``AveragedModel`` deep-copies the module; under DDP the trainer and jsonargparse's optimizer
        partial hold thread locks and cannot be copied, and single-process the copy would duplicate the
        data set. They are detached for the copy and put back right after.
        """
        if stage != "fit":
            return super().setup(trainer, pl_module, stage)
        if self.submodule:
            device = self._device or pl_module.device
            self._average_model = AveragedModel(self._target(pl_module), device=device, use_buffers=self._use_buffers,
                                                **self._kwargs)
            return None
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

    # ---- iteration counting ------------------------------------------------------------------------

    @staticmethod
    def iterations(trainer: Trainer, pl_module: LightningModule) -> int:
        """Training iterations so far: the contract's counter, not ``global_step`` (which counts optimizer steps)."""
        return pl_module.iterations if isinstance(pl_module, GenerativeModule) else trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.iterations(trainer, pl_module)
        if n > self._latest_update_step and self.should_update(step_idx=n - 1):
            self._average_model.update_parameters(self._target(pl_module))
            self._latest_update_step = n

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._average_model.update_parameters(self._target(pl_module))
            self._latest_update_epoch = trainer.current_epoch

    # ---- sub-network swapping and checkpoints ------------------------------------------------------

    def _swap_models(self, pl_module: LightningModule) -> None:
        target = self._target(pl_module)
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        for avg, cur in zip(average, itertools.chain(target.parameters(), target.buffers())):
            tmp = avg.data.clone()
            avg.data.copy_(cur.data)
            cur.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: LightningModule) -> None:
        target = self._target(pl_module)
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        for avg, cur in zip(average, itertools.chain(target.parameters(), target.buffers())):
            cur.data.copy_(avg.data)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """``state_dict`` holds the EMA weights where averaged (the whole module, or the sub-network) and the
        raw weights elsewhere; ``current_model_state`` holds all raw weights."""
        if not self.submodule or self._average_model is None:
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        average = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **{
            f"{self.submodule}.{k[7:]}": v for k, v in average.items() if k.startswith("module.")}}
        checkpoint["averaging_state"] = {k: v for k, v in average.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if not self.submodule or self._average_model is None:
            return super().on_load_checkpoint(trainer, pl_module, checkpoint)
        prefix = f"{self.submodule}."
        average = {"module." + k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            self._average_model.load_state_dict({**average, **checkpoint["averaging_state"]})
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            self._average_model.module.load_state_dict({k[7:]: v for k, v in average.items()}, strict=False)
