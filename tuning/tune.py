r"""``python cli.py tune``: an Optuna study whose trials are ``fit`` runs of a base config.

    python cli.py tune --config sweeps/ddpm_mnist.yaml --search sweeps/ddpm_mnist.search.yaml \
        [--n_trials 20] [--timeout 3600] [--storage sqlite:///runs/studies/ddpm_mnist.db] \
        [--study_name NAME] [--export best.yaml] [--summary] [fit overrides: --trainer.devices 2]

* The study lives in a database (SQLite by default, any SQLAlchemy URL, e.g. PostgreSQL).
  Re-running the command resumes it; several machines pointed at one PostgreSQL URL share it.
  Passwords in the URL are masked wherever tune shows it; a PostgreSQL URL may leave the
  password out (libpq then reads PGPASSWORD or ~/.pgpass).
* Search paths are checked against the base config before any trial runs.
* ``n_trials`` is the study's total of trials (complete, pruned or failed; a killed trial's slot
  is run again): a resumed or shared study only runs the rest.
* Each trial runs in its own process with a heartbeat; a trial whose ``tune`` process was killed
  is marked FAIL once its heartbeat is older than ``heartbeat.grace_period`` (at the next start,
  or when any worker begins a trial), and its slot is run again.
* At the end (or with ``--summary``): the best trial as a complete config YAML (running into
  ``<study_dir>/best``), a summary table, and a W&B summary run in the study's group. The
  command exits non-zero when every trial it ran failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tuning.search_space import SearchSpace, load_search_space
from tuning.trial import PROGRESS, TRIAL_ENV, TrialSpec
from tuning.trial_config import apply_params, best_config, dump, load_configs, path_problem, trial_config

ROOT = Path(__file__).resolve().parents[1]
HELP_WIDTH = 100
STALE = "stale: no heartbeat (its tune process was killed)"
_USERINFO_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|sslpassword)=)[^&#\s]*", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` → ``postgresql://user:***@host/db?password=***`` in any
    text: storage URLs are printed, logged and written into files, their passwords never are."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", text))


@contextlib.contextmanager
def masked_argv() -> Iterator[None]:
    """W&B records ``sys.argv`` in a run's metadata: let it see the command line with passwords masked."""
    saved = sys.argv
    sys.argv = [mask_url(arg) for arg in saved]
    try:
        yield
    finally:
        sys.argv = saved


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
        Path(make_url(url).database or ".").parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several processes write the same file
    else:
        engine_kwargs = {"pool_pre_ping": True}
    hb = space.heartbeat or {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=hb.get("interval"),
                                      grace_period=hb.get("grace_period"))


def open_study(url: str, space: SearchSpace, attempts: int = 6) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    """Create or load the study. Workers starting together race to create the schema and the study
    (PostgreSQL raises on the duplicate); the losers retry and then load what the winner made. A study that
    exists with another direction is refused: Optuna would silently keep the stored one."""
    for attempt in range(attempts):
        try:
            storage = make_storage(url, space)
            study = optuna.create_study(study_name=space.study_name, storage=storage, sampler=space.make_sampler(),
                                        pruner=space.make_pruner(), direction=space.direction, load_if_exists=True)
            break
        except Exception as err:  # noqa: BLE001 - sqlalchemy IntegrityError / ProgrammingError from the race
            if attempt == attempts - 1:  # the error text may quote the URL: mask it, and no traceback
                raise SystemExit(f"cli.py tune: cannot open the study '{space.study_name}' at {mask_url(url)}: "
                                 f"{type(err).__name__}: {mask_url(str(err))}\nCheck --storage (or storage: in the "
                                 "search file) and that the database server is reachable.") from None
            print(f"[tune] opening the study failed ({type(err).__name__}); retrying", flush=True)
            time.sleep(0.5 + random.random() * 2)
    stored = [d.name.lower() for d in study.directions]
    if stored != [space.direction]:
        raise SystemExit(f"cli.py tune: study '{space.study_name}' at {mask_url(url)} exists and was created to "
                         f"{' and '.join(stored)}, but the search file asks to {space.direction} {space.monitor}. Set "
                         f"objective.direction: {stored[0]} to resume it, or start a new study with another "
                         "--study_name (or --storage).")
    return storage, study


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


@dataclass
class Outcome:
    """How one trial of this tune process ended: complete, pruned, fail, or done (no slot was left)."""

    number: int
    state: str
    reason: str | None = None
    log: Path | None = None


def run_one(study: optuna.Study, storage: optuna.storages.RDBStorage, url: str, space: SearchSpace, base: dict,
            study_dir: Path, passthrough: list[str]) -> Outcome:
    """Ask for a trial, run its fit in a child process (echoing its validations), and tell the result."""
    trial = study.ask()
    if space.n_trials is not None and slot_of(study, trial) >= space.n_trials:
        trial.set_user_attr("fail_reason", "surplus: another worker took the last slot")
        study.tell(trial, state=TrialState.FAIL)
        return Outcome(trial.number, "done")
    params = space.sample(trial)
    run_dir = study_dir / f"trial_{trial.number:03d}"
    config = trial_config(base, {**space.fixed, **params}, run_dir, space.study_name, trial.number, params)
    config_path, log_path = run_dir / "trial_config.yaml", run_dir / "fit.log"
    dump(config, config_path, f"Optuna study {space.study_name}, trial {trial.number}: {params}")
    trial.set_user_attr("config_path", str(config_path))
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    spec = TrialSpec(url, space.study_name, trial._trial_id, space.monitor, str(result_path), os.getpid(), space.pruner)
    env = {**os.environ, TRIAL_ENV: spec.to_env(), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    prefix = f"[tune] trial {trial.number}"
    print(f"{prefix} started: run folder {run_dir}, log {log_path}", flush=True)
    print(f"{prefix} params: {params}", flush=True)
    with Heartbeat(storage, trial._trial_id, float((space.heartbeat or {}).get("interval") or 60)), \
            open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(config_path), *passthrough],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            follow(proc, log_path, prefix)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    result = _read_result(result_path, proc.returncode, log_path)
    reason = result.get("reason")
    if result["state"] == "complete":
        study.tell(trial, result["value"])
        print(f"{prefix} COMPLETE: {space.monitor} = {result['value']:.6g}", flush=True)
    elif result["state"] == "pruned":
        trial.set_user_attr("prune_reason", reason)
        study.tell(trial, state=TrialState.PRUNED)
        print(f"{prefix} PRUNED: {_first_line(reason)}", flush=True)
    else:
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        print(f"{prefix} FAIL: {_first_line(reason)} (log: {log_path})", flush=True)
    return Outcome(trial.number, result["state"], reason, log_path)


def follow(proc: subprocess.Popen, log_path: Path, prefix: str, poll: float = 0.5) -> None:
    """Wait for the trial's fit, echoing the progress lines its OptunaTrial callback writes into fit.log."""
    with open(log_path, "rb") as log:
        pending = b""
        while True:
            finished = proc.poll() is not None
            pending += log.read()
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if PROGRESS in text:
                    print(f"{prefix} {text[text.index(PROGRESS) + len(PROGRESS):].strip()}", flush=True)
            if finished:
                return
            time.sleep(poll)


def _first_line(reason: str | None) -> str:
    return str(reason).strip().splitlines()[0][:300] if reason and str(reason).strip() else "no reason recorded"


def _read_result(path: Path, returncode: int, log: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    tail = log.read_text()[-1500:] if log.is_file() else ""
    return {"state": "fail", "value": None, "reason": f"fit exited with code {returncode} and no result; log tail:\n{tail}"}


def remaining(study: optuna.Study, space: SearchSpace) -> int | None:
    if space.n_trials is None:
        return None
    return space.n_trials - sum(counted(t) for t in study.get_trials(deepcopy=False))


def export_best(study: optuna.Study, base_configs: list[str], space: SearchSpace, path: Path, study_dir: Path,
                url: str) -> Path | None:
    """Base config + the best parameters: a complete config for ``cli.py fit --config`` that runs into
    ``<study_dir>/best`` as W&B run ``<study>-best`` (the trial budget in ``fixed`` is listed in the header,
    not applied)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    config = best_config(load_configs(base_configs), best.params, study_dir / "best", study.study_name, best.number)
    header = (f"Best trial of Optuna study '{study.study_name}' ({mask_url(url)}): trial {best.number}, "
              f"{space.monitor} = {best.value}\n"
              f"base config: {', '.join(base_configs)}; parameters: {best.params}\n"
              f"trials ran with these fixed overrides (not applied here): {space.fixed}\n"
              f"run it:  python cli.py fit --config {path}   (outputs in {study_dir / 'best'})")
    dump(config, path, header)
    return path


def summary(study: optuna.Study, space: SearchSpace, url: str) -> tuple[str, dict]:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    direction = study.direction.name.lower()  # the stored one: open_study refused any other
    info: dict[str, Any] = {"study": study.study_name, "storage": mask_url(url), "direction": direction,
                            "monitor": space.monitor, **counts}
    lines = [f"# Optuna study `{study.study_name}`", "", f"storage: `{mask_url(url)}`", "",
             f"trials: {len(trials)} (complete {counts['complete']}, pruned {counts['pruned']}, failed {counts['fail']}, "
             f"running {counts['running']})", ""]
    try:
        best = study.best_trial
        info.update(best_value=best.value, best_trial=best.number, best_params=best.params)
        lines += [f"best {space.monitor} ({direction}): {best.value:.6g} (trial {best.number})", "",
                  "| parameter | best value |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in best.params.items()], ""]
    except ValueError:
        lines += ["no completed trial yet", ""]
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
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
    with masked_argv():  # the run's metadata records the command line, which may hold --storage's password
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description keeps its own line breaks (its command example continues lines with a backslash);
    option help wraps at the description's width, 100 columns, whatever the terminal."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=HELP_WIDTH, max_help_position=24)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(prog="cli.py tune", description=__doc__.replace("``", ""), formatter_class=HelpFormatter,
                                 epilog="Any other option (e.g. --trainer.devices 2) goes to every trial's fit.")
    ap.add_argument("--config", action="append", required=True, metavar="FILE",
                    help="base config, as for fit (repeat to merge several)")
    ap.add_argument("--search", required=True, metavar="FILE", help="search-space YAML (sweeps/*.search.yaml)")
    ap.add_argument("--n_trials", type=int, default=None, metavar="N",
                    help="total trials of the study, all workers together (killed ones are rerun)")
    ap.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="stop starting trials after this many seconds")
    ap.add_argument("--storage", default=None, metavar="URL",
                    help="SQLAlchemy URL (default sqlite:///runs/studies/<study>.db); shown with its password masked. "
                         "A PostgreSQL URL may leave the password out: it then comes from PGPASSWORD or ~/.pgpass")
    ap.add_argument("--study_name", default=None, metavar="NAME",
                    help="study name (default: study_name in the search file, else the search file's name)")
    ap.add_argument("--study_dir", default=None, metavar="DIR", help="trial run folders (default runs/studies/<study>)")
    ap.add_argument("--export", default=None, metavar="FILE", help="best config path (default <study_dir>/best_config.yaml)")
    ap.add_argument("--summary", action="store_true", help="run no trial: export the best config and write the summary")
    return ap.parse_known_args(argv)


def check_paths(base: dict, space: SearchSpace, configs: list[str], search: str) -> None:
    """Every ``fixed`` and ``params`` path must reach a setting of the base config (blocks expanded), or every
    trial would fail on it: stop before the first one, naming the paths."""
    problems = [f"  fixed {path}: {why}" for path in space.fixed if (why := path_problem(base, path))]
    with_fixed = apply_params(base, space.fixed)
    problems += [f"  params {p.path}: {why}" for p in space.params if (why := path_problem(with_fixed, p.path))]
    if problems:
        raise SystemExit(f"cli.py tune: {search} names config paths that do not exist in the base config "
                         f"{', '.join(configs)} (its blocks expanded), so every trial would fail:\n" + "\n".join(problems)
                         + "\nFix these paths in the search file; `python cli.py fit --config "
                         f"{configs[0]} --print_config` lists every setting.")


def tune_main(argv: list[str]) -> optuna.Study:
    """Run (or resume) the study, then export the best config and the summary; exits non-zero when every
    trial this invocation ran failed."""
    warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")  # we run the heartbeat ourselves (ask/tell)
    args, passthrough = parse(argv)
    space = load_search_space(args.search)
    for key in ("n_trials", "timeout", "storage", "study_name"):
        if getattr(args, key) is not None:
            setattr(space, key, getattr(args, key))
    for path in args.config:
        if not Path(path).is_file():
            raise SystemExit(f"cli.py tune: config {path!r} does not exist.")
    base = load_configs(args.config)
    if not args.summary:
        check_paths(base, space, args.config, args.search)
    url = space.storage or f"sqlite:///runs/studies/{space.study_name}.db"
    storage, study = open_study(url, space)
    study_dir = Path(args.study_dir or f"runs/studies/{space.study_name}")
    stale = fail_stale(study, storage)
    print(f"[tune] study '{space.study_name}' at {mask_url(url)}: {len(study.trials)} trials so far"
          + (f"; marked {stale} stale trial(s) failed" if stale else ""), flush=True)
    outcomes: list[Outcome] = []
    start = time.monotonic()
    while not args.summary:
        if space.timeout is not None and time.monotonic() - start > space.timeout:
            break
        fail_stale(study, storage)
        left = remaining(study, space)
        if left is not None and left <= 0:
            break
        outcomes.append(run_one(study, storage, url, space, base, study_dir, passthrough))
        if outcomes[-1].state == "done":
            break
    best_path = export_best(study, args.config, space, Path(args.export or study_dir / "best_config.yaml"), study_dir, url)
    text, info = summary(study, space, url)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "summary.md").write_text(text)
    print(text + (f"\nbest config: {best_path}" if best_path else ""), flush=True)
    log_summary_to_wandb(base, study, info, study_dir)
    ran = [o for o in outcomes if o.state != "done"]
    if ran and all(o.state == "fail" for o in ran):
        last = ran[-1]
        raise SystemExit(f"cli.py tune: every trial this run started failed ({len(ran)} of {len(ran)}). Trial "
                         f"{last.number}: {_first_line(last.reason)}\nIts log: {last.log}. Fix the cause and rerun "
                         "(failed trials count toward n_trials: raise --n_trials, or use a new --study_name).")
    return study
