"""``python cli.py tune``: an Optuna study whose trials are ``fit`` runs of a base config.

    python cli.py tune --config sweeps/ddpm_mnist.yaml --search sweeps/ddpm_mnist.search.yaml \
        [--n_trials 20] [--timeout 3600] [--storage sqlite:///runs/studies/ddpm_mnist.db] [--study_name NAME] \
        [--export best.yaml] [--summary] [any fit override, e.g. --trainer.devices 2]

* The study lives in a database (SQLite by default, any SQLAlchemy URL, e.g. PostgreSQL). Re-running the
  command resumes it; several machines pointed at one PostgreSQL URL share it.
* ``n_trials`` is the study's total of trials (complete, pruned or failed; a killed trial's slot is run
  again): a resumed or shared study only runs the rest.
* Each trial runs in its own process with a heartbeat; a trial whose ``tune`` process was killed is
  marked FAIL once its heartbeat is older than ``heartbeat.grace_period`` (at the next start, or when
  any worker begins a trial), and its slot is run again.
* At the end (or with ``--summary``): the best trial as a complete config YAML, a summary table, and a
  W&B summary run in the study's group.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.search_space import SearchSpace, load_search_space
from tuning.trial import TRIAL_ENV, TrialSpec
from tuning.trial_config import apply_params, dump, load_configs, trial_config

ROOT = Path(__file__).resolve().parents[1]
STALE = "stale: no heartbeat (its tune process was killed)"


def fail_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    """Our own failures record a reason before ``tell``; a FAIL without one was failed by Optuna's
    stale-heartbeat check (a finished trial can no longer be annotated)."""
    if trial.state != TrialState.FAIL:
        return None
    return trial.user_attrs.get("fail_reason") or STALE


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Every trial counts toward n_trials except a killed (stale) one and a surplus one."""
    reason = fail_reason(trial)
    return reason is None or not reason.startswith(("stale", "surplus"))


def make_storage(url: str, space: SearchSpace) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several processes write the same file
    else:
        engine_kwargs = {"pool_pre_ping": True}
    hb = space.heartbeat or {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=hb.get("interval"),
                                      grace_period=hb.get("grace_period"))


def open_study(url: str, space: SearchSpace, attempts: int = 6) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    """Create or load the study. Workers starting together race to create the schema and the study
    (PostgreSQL raises on the duplicate); the losers retry and then load what the winner made."""
    for attempt in range(attempts):
        try:
            storage = make_storage(url, space)
            study = optuna.create_study(study_name=space.study_name, storage=storage, sampler=space.make_sampler(),
                                        pruner=space.make_pruner(), direction=space.direction, load_if_exists=True)
            return storage, study
        except Exception as err:  # noqa: BLE001 - sqlalchemy IntegrityError / ProgrammingError from the race
            if attempt == attempts - 1:
                raise
            print(f"[tune] opening the study failed ({type(err).__name__}); retrying", flush=True)
            time.sleep(0.5 + random.random() * 2)
    raise AssertionError("unreachable")


class Heartbeat:
    """Records the running trial's heartbeat every ``interval`` seconds from a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.storage.record_heartbeat(self.trial_id)
            self._stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale(study: optuna.Study, storage: optuna.storages.RDBStorage) -> int:
    """Mark RUNNING trials whose heartbeat is older than the grace period FAIL; returns how many."""
    if storage.get_heartbeat_interval() is None:
        return 0
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return len(before - after)


def slot_of(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> int:
    """How many counted trials were created before this one: trial numbers are assigned atomically by the
    database, so this decides races between workers without locks."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and counted(t))


def run_one(study: optuna.Study, storage: optuna.storages.RDBStorage, url: str, space: SearchSpace, base: dict,
            study_dir: Path, passthrough: list[str]) -> str:
    trial = study.ask()
    if space.n_trials is not None and slot_of(study, trial) >= space.n_trials:
        trial.set_user_attr("fail_reason", "surplus: another worker took the last slot")
        study.tell(trial, state=TrialState.FAIL)
        return "done"
    params = space.sample(trial)
    run_dir = study_dir / f"trial_{trial.number:03d}"
    config = trial_config(base, {**space.fixed, **params}, run_dir, space.study_name, trial.number, params)
    config_path = run_dir / "trial_config.yaml"
    dump(config, config_path, f"Optuna study {space.study_name}, trial {trial.number}: {params}")
    trial.set_user_attr("config_path", str(config_path))
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    spec = TrialSpec(url, space.study_name, trial._trial_id, space.monitor, str(result_path), os.getpid(), space.pruner)
    env = {**os.environ, TRIAL_ENV: spec.to_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print(f"[tune] trial {trial.number}: {params}", flush=True)
    with Heartbeat(storage, trial._trial_id, float((space.heartbeat or {}).get("interval") or 60)), \
            open(run_dir / "fit.log", "w") as log:
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(config_path), *passthrough],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    result = _read_result(result_path, proc.returncode, run_dir / "fit.log")
    if result["state"] == "complete":
        study.tell(trial, result["value"])
    elif result["state"] == "pruned":
        trial.set_user_attr("prune_reason", result.get("reason"))
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("fail_reason", result.get("reason"))
        study.tell(trial, state=TrialState.FAIL)
    print(f"[tune] trial {trial.number}: {result['state']} {result.get('value') or result.get('reason') or ''}", flush=True)
    return result["state"]


def _read_result(path: Path, returncode: int, log: Path) -> dict:
    import json

    if path.is_file():
        return json.loads(path.read_text())
    tail = log.read_text()[-1500:] if log.is_file() else ""
    return {"state": "fail", "value": None, "reason": f"fit exited with code {returncode} and no result; log tail:\n{tail}"}


def remaining(study: optuna.Study, space: SearchSpace) -> int | None:
    if space.n_trials is None:
        return None
    return space.n_trials - sum(counted(t) for t in study.get_trials(deepcopy=False))


def export_best(study: optuna.Study, base_configs: list[str], space: SearchSpace, path: Path) -> Path | None:
    """Base config + the best parameters: a complete config for ``cli.py fit --config`` (the trial budget in
    ``fixed`` is listed in the header, not applied)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    config = apply_params(load_configs(base_configs), best.params)
    header = (f"Best trial of Optuna study '{study.study_name}': trial {best.number}, {space.monitor} = {best.value}\n"
              f"base config: {', '.join(base_configs)}; parameters: {best.params}\n"
              f"trials ran with these fixed overrides (not applied here): {space.fixed}\n"
              f"run it:  python cli.py fit --config {path}")
    dump(config, path, header)
    return path


def summary(study: optuna.Study, space: SearchSpace) -> tuple[str, dict]:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    info: dict[str, Any] = {"study": study.study_name, "direction": space.direction, "monitor": space.monitor, **counts}
    lines = [f"# Optuna study `{study.study_name}`", "",
             f"trials: {len(trials)} (complete {counts['complete']}, pruned {counts['pruned']}, failed {counts['fail']}, "
             f"running {counts['running']})", ""]
    try:
        best = study.best_trial
        info.update(best_value=best.value, best_trial=best.number, best_params=best.params)
        lines += [f"best {space.monitor} ({space.direction}): {best.value:.6g} (trial {best.number})", "",
                  "| parameter | best value |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in best.params.items()], ""]
    except ValueError:
        lines += ["no completed trial yet", ""]
    try:
        importances = optuna.importance.get_param_importances(study)
        info["importances"] = importances
        lines += ["| parameter | importance (fANOVA) |", "|---|---|",
                  *[f"| `{k}` | {v:.3f} |" for k, v in importances.items()], ""]
    except Exception as err:  # noqa: BLE001 - needs ≥ 2 completed trials with varied parameters
        lines += [f"parameter importances: not available ({type(err).__name__}: {err})", ""]
    lines += ["| trial | state | value | reason |", "|---|---|---|---|"]
    for t in trials:
        reason = fail_reason(t) or t.user_attrs.get("prune_reason") or ""
        lines.append(f"| {t.number} | {t.state.name} | {'' if t.value is None else f'{t.value:.6g}'} | "
                     f"{str(reason).splitlines()[0][:120] if reason else ''} |")
    return "\n".join(lines) + "\n", info


def log_summary_to_wandb(base: dict, study: optuna.Study, info: dict, study_dir: Path) -> None:
    logger = (base.get("trainer") or {}).get("logger")
    logger = logger[0] if isinstance(logger, list) and logger else logger
    if not isinstance(logger, dict) or "Wandb" not in logger.get("class_path", ""):
        return
    from lightning_modules.wandb_utils import choose_wandb_mode

    choose_wandb_mode()
    if os.environ.get("WANDB_MODE") == "disabled":
        return
    import wandb

    # mode is explicit: wandb keeps the first mode a process used, and a tune process may have used another.
    run = wandb.init(project=(logger.get("init_args") or {}).get("project", "genlab"), group=study.study_name,
                     name=f"{study.study_name}-summary", job_type="optuna-summary", dir=str(study_dir), config=info,
                     reinit="finish_previous", mode=os.environ.get("WANDB_MODE", "online"))
    table = wandb.Table(columns=["trial", "state", "value", "params"])
    for t in study.get_trials(deepcopy=False):
        table.add_data(t.number, t.state.name, t.value, str(t.params))
    run.log({"optuna/trials": table})
    run.summary.update({k: v for k, v in info.items() if not isinstance(v, dict)})
    run.finish()
    wandb.teardown()  # stop the service: processes started later must not attach to it via WANDB_SERVICE


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(prog="cli.py tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="base config(s), as for fit")
    ap.add_argument("--search", required=True, help="search-space YAML (sweeps/*.search.yaml)")
    ap.add_argument("--n_trials", type=int, default=None, help="total trials of the study (killed ones are rerun)")
    ap.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    ap.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///runs/studies/<study>.db)")
    ap.add_argument("--study_name", default=None)
    ap.add_argument("--study_dir", default=None, help="trial run folders (default runs/studies/<study>)")
    ap.add_argument("--export", default=None, help="best config path (default <study_dir>/best_config.yaml)")
    ap.add_argument("--summary", action="store_true", help="run no trial: export the best config and print the summary")
    return ap.parse_known_args(argv)


def tune_main(argv: list[str]) -> optuna.Study:
    warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")  # we run the heartbeat ourselves (ask/tell)
    args, passthrough = parse(argv)
    space = load_search_space(args.search)
    for key in ("n_trials", "timeout", "storage", "study_name"):
        if getattr(args, key) is not None:
            setattr(space, key, getattr(args, key))
    for path in args.config:
        if not Path(path).is_file():
            raise SystemExit(f"cli.py tune: config {path!r} does not exist.")
    url = space.storage or f"sqlite:///runs/studies/{space.study_name}.db"
    storage, study = open_study(url, space)
    study_dir = Path(args.study_dir or f"runs/studies/{space.study_name}")
    stale = fail_stale(study, storage)
    print(f"[tune] study '{space.study_name}' at {url}: {len(study.trials)} trials so far"
          + (f"; marked {stale} stale trial(s) failed" if stale else ""), flush=True)
    base = load_configs(args.config)
    start = time.monotonic()
    while not args.summary:
        if space.timeout is not None and time.monotonic() - start > space.timeout:
            break
        fail_stale(study, storage)
        left = remaining(study, space)
        if left is not None and left <= 0:
            break
        if run_one(study, storage, url, space, base, study_dir, passthrough) == "done":
            break
    best_path = export_best(study, args.config, space, Path(args.export or study_dir / "best_config.yaml"))
    text, info = summary(study, space)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "summary.md").write_text(text)
    print(text + (f"\nbest config: {best_path}" if best_path else ""), flush=True)
    log_summary_to_wandb(base, study, info, study_dir)
    return study
