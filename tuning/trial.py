"""One Optuna trial = one ``cli.py fit`` in its own process; this is the part that runs inside that process.

``cli.py`` calls ``run_trial`` when ``GENLAB_OPTUNA_TRIAL`` is set. A fresh process per trial means a
fresh W&B run, no state leaking between trials, OOM and NaN contained, and Lightning's DDP launcher
re-running a plain ``fit`` command on the other ranks.
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

from tuning.search_space import make_pruner

TRIAL_ENV = "GENLAB_OPTUNA_TRIAL"


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


class TrialPruningCallback(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback (RDB storage + ``check_pruned`` under DDP), which also stops
    the trial when the ``tune`` process that launched it has died, so a killed study leaves no orphans."""

    def __init__(self, trial: optuna.Trial, monitor: str, parent_pid: int) -> None:
        super().__init__(trial, monitor)
        self.parent_pid = parent_pid

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.parent_pid and trainer.is_global_zero and not _alive(self.parent_pid):
            trainer.should_stop = True
            raise SystemExit(f"the tune process {self.parent_pid} is gone; stopping this trial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def run_trial(args: list[str]) -> None:
    """Run ``fit`` with the pruning callback; rank 0 writes {state, value, reason} to the result file."""
    from cli import cli_main
    from lightning_modules.ddpm import NonFiniteLossError

    spec = TrialSpec.from_env()
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage, pruner=make_pruner(spec.pruner))
    trial = optuna.Trial(study, spec.trial_id)
    callback = TrialPruningCallback(trial, spec.monitor, spec.parent_pid)
    state, value, reason = "fail", None, None
    try:
        cli = cli_main(args, trainer_defaults={"callbacks": [callback]})
        callback.check_pruned()  # DDP: the decision was stored in the database by rank 0
        metric = cli.trainer.callback_metrics.get(spec.monitor)
        if metric is None:
            reason = f"'{spec.monitor}' was never logged; check objective.monitor against the model's logged keys."
        elif not math.isfinite(float(metric)):
            reason = f"{spec.monitor} = {float(metric)} (not finite)"
        else:
            state, value = "complete", float(metric)
    except optuna.TrialPruned as err:
        state, reason = "pruned", str(err) or "pruned by the pruner"
    except NonFiniteLossError as err:
        reason = f"NaN/Inf: {err}"
    except SystemExit as err:
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - any crash is recorded as the trial's failure reason
        if _is_oom(err):
            state, reason = "pruned", f"out of memory: {str(err).splitlines()[0][:300]}"
        else:
            reason = "".join(traceback.format_exception_only(type(err), err)).strip()[-2000:]
    finally:
        _finish_wandb(state, reason)
    if rank_zero_only.rank == 0:
        Path(spec.result_path).write_text(json.dumps({"state": state, "value": value, "reason": reason}))


def _finish_wandb(state: str, reason: str | None) -> None:
    """Close this trial's W&B run properly whatever happened, with the outcome in its summary."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.run.summary.update({"optuna/state": state, "optuna/reason": reason or ""})
        wandb.finish(exit_code=0 if state != "fail" else 1)
