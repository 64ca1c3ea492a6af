"""One Optuna trial = one ``cli.py fit`` in its own process; this callback is the part inside that process.

``tune`` writes each trial's config with ``tuning.trial.OptunaTrial`` in its callbacks, so the trial is visibly
a plain ``fit`` of that file. The storage URL (which may hold a password) travels in the environment
variable the callback names, never in the config. A fresh process per trial means a fresh W&B run, no
state leaking between trials, OOM and NaN contained, and Lightning's DDP launcher re-running a plain
``fit`` command on the other ranks.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from optuna_integration import PyTorchLightningPruningCallback

from callbacks.checkpointing import pid_alive
from lightning_modules.contract import NonFiniteLossError
from tuning.search_space import make_pruner

TRIAL_ENV = "GENLAB_OPTUNA_TRIAL"
PROGRESS = "[optuna-trial] "  # marks the fit.log lines that ``tune`` echoes as the trial's progress


@dataclass
class TrialSpec:
    """What the trial process needs to find its trial: passed as JSON in ``GENLAB_OPTUNA_TRIAL``."""

    storage: str
    study_name: str
    trial_id: int
    monitor: str
    result_path: str
    parent_pid: int
    pruner: dict[str, Any]

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> TrialSpec:
        return cls(**json.loads(os.environ[TRIAL_ENV]))


class OptunaTrial(PyTorchLightningPruningCallback):
    """Reports to, and is pruned by, the Optuna trial named in ``$GENLAB_OPTUNA_TRIAL``; rank 0 writes the
    trial's outcome {state, value, reason} to the result file that ``tune`` reads.

    optuna-integration's pruning callback (RDB storage + ``check_pruned`` under DDP), which also stops the
    trial when the ``tune`` process that launched it has died, so a killed study leaves no orphans.

    Args:
        spec_env: the environment variable holding the trial's JSON spec (set by ``cli.py tune``).
    """

    def __init__(self, spec_env: str = TRIAL_ENV) -> None:
        if not os.environ.get(spec_env):
            raise ValueError(f"this config is an Optuna trial (it has a tuning.trial.OptunaTrial callback) but ${spec_env} is "
                             "not set: run the study with `python cli.py tune`, or remove the callback to fit alone.")
        spec = TrialSpec(**json.loads(os.environ[spec_env]))
        study = optuna.load_study(study_name=spec.study_name, storage=spec.storage, pruner=make_pruner(spec.pruner))
        super().__init__(optuna.Trial(study, spec.trial_id), spec.monitor)
        self.spec = spec
        self.written = False

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.spec.parent_pid and trainer.is_global_zero and not pid_alive(self.spec.parent_pid):
            trainer.should_stop = True
            raise SystemExit(f"the tune process {self.spec.parent_pid} is gone; stopping this trial")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """One progress line per validation (``tune`` shows it), then the report to Optuna and its pruning."""
        if not trainer.sanity_checking and trainer.is_global_zero:
            metric = trainer.callback_metrics.get(self.spec.monitor)
            shown = "not logged" if metric is None else f"{float(metric):.6g}"
            print(f"{PROGRESS}validation: epoch {trainer.current_epoch}, step {trainer.global_step}, "
                  f"{self.spec.monitor} = {shown}", flush=True)
        super().on_validation_end(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, value, reason = "fail", None, None
        try:
            self.check_pruned()  # DDP: the decision was stored in the database by rank 0
            metric = trainer.callback_metrics.get(self.spec.monitor)
            if metric is None:
                reason = f"'{self.spec.monitor}' was never logged; check objective.monitor against the model's logged keys."
            elif not math.isfinite(float(metric)):
                reason = f"{self.spec.monitor} = {float(metric)} (not finite)"
            else:
                state, value = "complete", float(metric)
        except optuna.TrialPruned as err:
            state, reason = "pruned", str(err) or "pruned by the pruner"
        self._write(state, value, reason)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        state, reason = "fail", None
        if isinstance(exception, optuna.TrialPruned):
            state, reason = "pruned", str(exception) or "pruned by the pruner"
        elif isinstance(exception, NonFiniteLossError):
            reason = f"NaN/Inf: {exception}"
        elif isinstance(exception, SystemExit):
            reason = str(exception)
        elif _is_oom(exception):
            state, reason = "pruned", f"out of memory: {str(exception).splitlines()[0][:300]}"
        else:
            reason = "".join(traceback.format_exception_only(type(exception), exception)).strip()[-2000:]
        self._write(state, None, reason)

    def _write(self, state: str, value: float | None, reason: str | None) -> None:
        if self.written:
            return
        self.written = True
        _record_in_wandb(state, reason)
        if rank_zero_only.rank == 0:
            Path(self.spec.result_path).write_text(json.dumps({"state": state, "value": value, "reason": reason}))


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _record_in_wandb(state: str, reason: str | None) -> None:
    """Put the trial's outcome in its W&B run's summary (the logger closes the run)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.run.summary.update({"optuna/state": state, "optuna/reason": reason or ""})
