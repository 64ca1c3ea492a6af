"""Autoguidance within one run: the run's own early EMA weights become its guide (Karras et al. 2024).

Autoguidance needs a weaker model of the same kind; a quarter of the same run is one, and it costs no extra
training. ``GuideSnapshot`` saves the EMA weights at a fraction of the run as ``guide.ckpt`` in the run's
checkpoint folder and guides every later sample (grids, metrics) with it. ``predict``, ``test`` and
``validate`` with the same config load the ``guide.ckpt`` that sits beside ``--ckpt_path``, so no config
restates the path. An explicit ``model.init_args.guide_checkpoint`` wins over the snapshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.ema import EMA
from lightning_modules.ddpm import DDPMModule
from metrics.provenance import sha256_of


class GuideSnapshot(Callback):
    """Saves the guide of autoguidance at a fraction of the run and samples with it from then on.

    Args:
        fraction: snapshot after ``round(fraction * max_steps)`` optimizer steps (0.25: a quarter of the budget).
        at_step: the training iteration (batch) instead, e.g. for runs bounded by epochs (``max_steps: -1``).
        dirpath: folder of the snapshot (default: ``<default_root_dir>/checkpoints``, where ``LastCheckpoint``
            writes ``last.ckpt``); ``predict``/``test``/``validate`` look beside ``--ckpt_path``.
        filename: the snapshot's file name.

    The snapshot holds EMA weights when an ``EMA`` callback averages from the start (it must come before this one).
    """

    def __init__(self, fraction: float = 0.25, at_step: Optional[int] = None, dirpath: Optional[str] = None,
                 filename: str = "guide.ckpt") -> None:
        super().__init__()
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"GuideSnapshot fraction must be in (0, 1), got {fraction}.")
        if at_step is not None and at_step < 1:
            raise ValueError(f"GuideSnapshot at_step must be >= 1 or null, got {at_step}.")
        self.fraction, self.at_step, self.dirpath, self.filename = fraction, at_step, dirpath, filename
        self._explicit = False  # the config named a guide_checkpoint: leave it alone

    def path(self, trainer: Trainer) -> Path:
        """Where this run writes its snapshot."""
        return Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename

    def beside_checkpoint(self, trainer: Trainer) -> Path:
        """Where the snapshot of the loaded ``--ckpt_path`` lies (this run's own folder without one)."""
        if self.dirpath is None and trainer.ckpt_path and "://" not in str(trainer.ckpt_path):
            return Path(trainer.ckpt_path).parent / self.filename
        return self.path(trainer)

    def snapshot_step(self, trainer: Trainer) -> int | None:
        """The training iteration (batch) after which the snapshot is taken; None for a run without ``max_steps``."""
        if self.at_step is not None:
            return self.at_step
        if trainer.max_steps is None or trainer.max_steps < 1:
            return None
        return max(1, round(self.fraction * trainer.max_steps)) * trainer.accumulate_grad_batches

    # ---- hooks -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse what cannot work before any training: the wrong module, a late EMA, no step."""
        if not isinstance(pl_module, DDPMModule) or not pl_module.accepts_guide:
            raise TypeError(f"GuideSnapshot guides a plain DDPMModule, got {type(pl_module).__name__}, which cannot be "
                            "guided by one; remove GuideSnapshot from this config.")
        if not pl_module.num_classes and not pl_module.guidance_scale:
            raise ValueError("GuideSnapshot on an unconditional model would never be used: it samples at w = 0 and "
                             "refuses a weight before a guide exists. Train without the callback, then sample with "
                             "--model.init_args.guide_checkpoint <a checkpoint from early in the run> and a weight.")
        self._explicit = pl_module.guide_checkpoint is not None
        if stage != "fit":
            return
        if self.snapshot_step(trainer) is None:
            rank_zero_warn("GuideSnapshot takes its step as a fraction of trainer.max_steps, which this run does not set "
                           "(bounded by epochs or time), so it takes no snapshot and samples with classifier-free "
                           "guidance; set the callback's at_step to take one.")
        mine = trainer.callbacks.index(self)
        emas = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, EMA)]
        if any(i > mine for i in emas):
            raise ValueError("GuideSnapshot must come after EMA in trainer.callbacks, so that the snapshot holds the "
                             "averaged weights of its step; move it below EMA.")
        if not emas:
            rank_zero_warn("GuideSnapshot: no EMA callback, so the guide holds the raw weights of its step.")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._explicit:
            rank_zero_info(f"GuideSnapshot: guide_checkpoint {pl_module.guide_checkpoint!r} is set, so no snapshot is "
                           "taken.")
            return
        step, path = self.snapshot_step(trainer), self.path(trainer)
        if trainer.fast_dev_run or step is None:
            return
        if pl_module.iterations >= step:
            source = self.beside_checkpoint(trainer)
            if not path.is_file() and source.is_file():  # resumed into a new folder: the snapshot moves along
                if trainer.is_global_zero:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, path)
                trainer.strategy.barrier("GuideSnapshot.copy")
            self._use(trainer, pl_module, path, "this run resumed after its snapshot step")
        elif path.is_file():
            rank_zero_warn(f"GuideSnapshot: {path} is from an earlier run; iteration {step} of this one replaces it.")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._explicit or trainer.fast_dev_run or pl_module.iterations != self.snapshot_step(trainer):
            return
        path = self.path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the full save: EMA puts its average in state_dict
        rank_zero_info(f"GuideSnapshot: saved the iteration-{pl_module.iterations} guide to {path}; "
                       f"{_use(pl_module)} from now on.")
        pl_module.set_guide(str(path))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            self._load_for_sampling(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._load_for_sampling(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._load_for_sampling(trainer, pl_module)

    # ---- work --------------------------------------------------------------------------------------

    def _load_for_sampling(self, trainer: Trainer, pl_module: DDPMModule) -> None:
        """After the weights are restored, so the folder of ``--ckpt_path`` and the model's iteration are known."""
        if self._explicit:
            return
        path = self.beside_checkpoint(trainer)
        recorded = pl_module.trained_guide
        if recorded and path.is_file() and sha256_of(path) != recorded["sha256"]:
            raise ValueError(f"{path} is not the guide this checkpoint was trained and sampled with (sha256 "
                             f"{recorded['sha256'][:12]}…, iteration {recorded['iterations']}); put that file back, or "
                             "name a guide with --model.init_args.guide_checkpoint.")
        self._use(trainer, pl_module, path, "sampling this checkpoint")
        if pl_module.guide_iterations is not None and pl_module.guide_iterations >= pl_module.iterations:
            rank_zero_warn(f"GuideSnapshot: {path} (iteration {pl_module.guide_iterations}) is not older than this "
                           f"checkpoint (iteration {pl_module.iterations}), so it cannot be its weaker guide; sampling "
                           "falls back to classifier-free guidance.")
            pl_module.set_guide(None)
            return
        pl_module.check_guide_data(getattr(trainer, "datamodule", None))

    def _use(self, trainer: Trainer, pl_module: DDPMModule, path: Path, why: str) -> None:
        if not path.is_file():
            rank_zero_warn(f"GuideSnapshot: no guide snapshot at {path} ({why}); sampling falls back to classifier-free "
                           "guidance. Train with the callback past its step, or pass --model.init_args.guide_checkpoint.")
            return
        pl_module.set_guide(str(path))
        rank_zero_info(f"GuideSnapshot: loaded {path} (iteration {pl_module.guide_iterations}); {_use(pl_module)}.")


def _use(pl_module: DDPMModule) -> str:
    """Whether sampling runs the guide, for the log lines."""
    return ("sampling is autoguided" if pl_module.autoguide else
            "sampling keeps classifier-free guidance (autoguide: false)")
