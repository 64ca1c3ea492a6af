"""Checkpoints that are there when a run dies: ``last.ckpt`` on a cadence, on SIGTERM/Ctrl-C, written atomically.

``LastCheckpoint`` owns ``last.ckpt`` and keeps it the latest state: every N iterations and/or M minutes,
at the end of training, and when the run is stopped by SIGTERM (a preemptible cloud VM) or Ctrl-C. A stop
finishes the current batch, saves, and ends the run cleanly; a second Ctrl-C aborts at once.

``AtomicCheckpointIO`` writes every checkpoint to a temporary file in the same folder, fsyncs it, then
``os.replace``s it over the target, so a kill at any instant leaves either the old file or the new one
(Lightning's default writes through ``$TMPDIR``, which becomes a copy in place when ``$TMPDIR`` is on
another filesystem). ``cli.py`` installs it for every run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_modules.contract import GenerativeModule


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.tmp-<pid>`` beside the target, fsync, ``os.replace``, fsync the folder.

    Temporary files left by a killed writer are removed at the next save. Remote URLs (``s3://`` …) fall
    back to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(target)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_stale(target: Path) -> None:
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                stale.unlink(missing_ok=True)


class LastCheckpoint(Callback):
    """Writes ``<dirpath>/last.ckpt`` on a cadence, at the end of training and when the run is stopped.

    Args:
        dirpath: folder (default: ``<default_root_dir>/checkpoints``).
        filename: file name inside ``dirpath``.
        every_n_steps: save every n training iterations (batches; null: no step cadence).
        every_n_minutes: save when this much wall-clock time has passed since the last save (null: none).
            The default bounds the work a crash can lose to about ten minutes.
        on_interrupt: save and stop cleanly on SIGTERM and on the first Ctrl-C.
    """

    def __init__(self, dirpath: Optional[str] = None, filename: str = "last.ckpt", every_n_steps: Optional[int] = None,
                 every_n_minutes: Optional[float] = 10.0, on_interrupt: bool = True) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or null, got {every_n_steps}.")
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be > 0 or null, got {every_n_minutes}.")
        self.dirpath, self.filename = dirpath, filename
        self.every_n_steps, self.every_n_minutes, self.on_interrupt = every_n_steps, every_n_minutes, on_interrupt
        self.saved_at: list[int] = []  # iterations at which this run saved
        self._last_save = time.monotonic()
        self._interrupted = False
        self._previous_sigint: Any = None

    @property
    def state_key(self) -> str:
        return f"LastCheckpoint[{self.filename}]"

    def path(self, trainer: Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename

    # ---- hooks -------------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_save = time.monotonic()
        if self.on_interrupt and _in_main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = _iteration(trainer, pl_module)
        due = bool(self.every_n_steps and n % self.every_n_steps == 0)
        if self.every_n_minutes is not None:
            late = time.monotonic() - self._last_save >= self.every_n_minutes * 60
            due = due or bool(trainer.strategy.broadcast(late, src=0))  # every rank must agree: saving is collective
        stop = self.on_interrupt and (trainer.received_sigterm or bool(trainer.strategy.reduce_boolean_decision(
            self._interrupted, all=False)))
        if due or stop:
            self._save(trainer, n)
        if stop:
            self._report_stop(trainer, n)
            trainer.should_stop = True

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """A SIGTERM that lands after this callback's batch-end check reaches Lightning's own check first,
        which stops the run with ``SIGTERMException`` between batches: save there, so the stop still loses nothing."""
        if not (self.on_interrupt and isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING):
            return
        n = _iteration(trainer, pl_module)
        self._save_once(trainer, n)
        self._report_stop(trainer, n)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            self._save_once(trainer, _iteration(trainer, pl_module))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint is not None and _in_main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    # ---- work --------------------------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # second Ctrl-C: abort now
            raise KeyboardInterrupt
        self._interrupted = True
        print("\nCtrl-C: finishing this batch, saving last.ckpt, then stopping (Ctrl-C again to abort now).", flush=True)

    def _report_stop(self, trainer: Trainer, n: int) -> None:
        rank_zero_info(f"Stopped by a signal: saved {self.path(trainer)} at iteration {n}; resume with "
                       f"--ckpt_path {self.path(trainer)}.")

    def _save_once(self, trainer: Trainer, n: int) -> None:
        """Save unless iteration ``n`` is already the last one saved."""
        if not self.saved_at or self.saved_at[-1] != n:
            self._save(trainer, n)

    def _save(self, trainer: Trainer, n: int) -> None:
        if trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path(trainer), weights_only=False)  # full state: optimizer, loops, callbacks
        self.saved_at.append(n)
        self._last_save = time.monotonic()


def _iteration(trainer: Trainer, pl_module: LightningModule) -> int:
    """Training batches so far: a GenerativeModule's ``iterations`` (several optimizer steps may make one), else the
    trainer's global step."""
    return pl_module.iterations if isinstance(pl_module, GenerativeModule) else trainer.global_step


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
