"""``cli.py tune``: search-space parsing, search paths checked before any trial, SQLite studies that resume,
direction mismatches refused, pruning (also under DDP), failures and the exit status, progress lines, masked
storage passwords, the best-config export, stale trials after SIGKILL, W&B runs per trial, the help text and a
shared PostgreSQL study."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY, run_cli
from optuna.trial import TrialState

from tuning.search_space import SearchSpaceError, load_search_space
from tuning.trial_config import load_configs, path_problem
from tuning.tune import mask_url, parse, tune_main

SEARCH = ROOT / "tests" / "configs" / "tiny.search.yaml"


def write_search(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(SEARCH.read_text())
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def tune(*args: str, search: Path = SEARCH) -> optuna.Study:
    return tune_main(["--config", str(TINY), "--search", str(search), *args])


def tune_subprocess(*args: str, search: Path = SEARCH, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "tune", "--config", str(TINY), "--search", str(search),
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def finished_study(url: str, name: str, direction: str = "minimize") -> optuna.Study:
    """A study with one COMPLETE trial over the tiny search space, made without running a fit."""
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    trial = study.ask()
    load_search_space(SEARCH).sample(trial)
    study.tell(trial, 0.5)
    return study


# ---- search-space format ------------------------------------------------------------------------------

@pytest.mark.parametrize("params, message", [
    ({"a.b": {"type": "uniform", "low": 0, "high": 1}}, "type one of"),
    ({"a.b": {"type": "float", "low": 1, "high": 0}}, "low < high"),
    ({"a.b": {"type": "float", "low": 1e-3, "high": 1, "log": True, "step": 0.1}}, "log and step"),
    ({"a.b": {"type": "categorical", "choices": []}}, "non-empty choices"),
    ({"a.b": {"type": "float", "low": 0, "high": 1, "condition": {"x.y": 1}}}, "not parameters"),
])
def test_bad_search_spaces_name_the_problem(tmp_path, params, message):
    with pytest.raises(SearchSpaceError, match=message):
        load_search_space(write_search(tmp_path, params=params))


def test_unknown_top_level_key_and_missing_file(tmp_path):
    with pytest.raises(SearchSpaceError, match="unknown top-level keys"):
        load_search_space(write_search(tmp_path, n_trails=3))
    with pytest.raises(SearchSpaceError, match="does not exist"):
        load_search_space(tmp_path / "nope.yaml")


def test_conditional_parameter_only_sampled_when_its_condition_holds():
    space = load_search_space(SEARCH)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"linear": 0, "cosine": 0}
    for _ in range(20):
        trial = study.ask()
        values = space.sample(trial)
        schedule = values["model.init_args.schedule"]
        seen[schedule] += 1
        assert ("model.init_args.beta_end" in values) == (schedule == "linear")
        if schedule == "linear":
            steps = (values["model.init_args.beta_end"] - 0.1) / 0.05  # on the 0.05 grid from 0.1 to 0.3
            assert abs(steps - round(steps)) < 1e-9 and 0 <= round(steps) <= 4
        assert 1e-4 <= values["model.init_args.optimizer.init_args.lr"] <= 1e-2
        study.tell(trial, 0.0)
    assert seen["linear"] and seen["cosine"]


def test_shipped_search_files_match_seed_002():
    ddpm = load_search_space(ROOT / "sweeps" / "ddpm_mnist.search.yaml")
    vae = load_search_space(ROOT / "sweeps" / "vae_mnist.search.yaml")
    assert (ddpm.n_trials, ddpm.fixed["trainer.max_epochs"], ddpm.pruner["n_warmup_steps"]) == (20, 3, 1)
    vae_budget = (vae.n_trials, vae.fixed["trainer.max_epochs"], vae.pruner["n_startup_trials"], vae.pruner["n_warmup_steps"])
    assert vae_budget == (25, 40, 5, 5)
    assert isinstance(ddpm.make_sampler(), optuna.samplers.TPESampler)
    assert isinstance(vae.make_pruner(), optuna.pruners.MedianPruner)
    lr = next(p for p in ddpm.params if p.path.endswith("lr"))
    assert (lr.low, lr.high, lr.log) == (5e-5, 5e-4, True)
    beta = next(p for p in ddpm.params if p.path.endswith("beta_end"))
    assert (beta.step, beta.condition) == (0.002, {"model.init_args.schedule": "linear"})
    kl = next(p for p in vae.params if p.path.endswith("kl_weight"))
    assert (kl.low, kl.high, kl.log) == (1e-6, 1e-2, True)
    for name in ("ddpm_mnist", "vae_mnist", "ddpm_mnist_cpu"):  # every parameter path exists in its base config
        space = load_search_space(ROOT / "sweeps" / f"{name}.search.yaml")
        base = load_configs([str(ROOT / "sweeps" / f"{name}.yaml")])
        for p in space.params:
            node = base
            for key in p.path.split("."):
                assert key in node, f"{name}: {p.path}"
                node = node[key]


# ---- checks before the first trial ----------------------------------------------------------------------

def test_path_problem_accepts_defaults_and_names_typos():
    base = load_configs([str(TINY)])
    assert path_problem(base, "model.init_args.optimizer.init_args.lr") is None
    assert path_problem(base, "model.init_args.schedule") is None  # a DDPMModule argument the config leaves out
    assert path_problem(base, "trainer.enable_progress_bar") is None  # a Trainer argument
    assert "did you mean 'optimizer'" in path_problem(base, "model.init_args.optimiser.init_args.lr")
    assert "(Adam) has no argument 'lrr'" in path_problem(base, "model.init_args.optimizer.init_args.lrr")
    assert "(Trainer) has no argument 'max_epoch'" in path_problem(base, "trainer.max_epoch")
    assert "is a list" in path_problem(base, "trainer.callbacks.0.init_args.decay")
    assert "is a value (0.2)" in path_problem(base, "model.init_args.beta_end.low")
    assert "no top-level 'modle'" in path_problem(base, "modle.init_args.beta_end")


def test_a_search_path_missing_from_the_base_config_stops_before_any_trial(tmp_path):
    params = {"model.init_args.optimiser.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    search = write_search(tmp_path, params=params, fixed={"trainer.max_epoch": 2})
    db = tmp_path / "studies.db"
    with pytest.raises(SystemExit) as exit_info:
        tune("--storage", f"sqlite:///{db}", "--study_name", "typo", search=search)
    message = str(exit_info.value.code)  # a string code: the process exits with status 1
    assert "params model.init_args.optimiser.init_args.lr" in message and "did you mean 'optimizer'" in message
    assert "fixed trainer.max_epoch" in message and str(TINY) in message and str(search) in message
    assert not db.exists() and not Path("runs").exists()  # no study opened, no trial started


def test_a_study_stored_with_the_other_direction_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    finished_study(url, "dir", direction="maximize")
    for extra in ([], ["--summary"]):
        with pytest.raises(SystemExit, match="created to maximize, but the search file asks to minimize val/loss"):
            tune("--storage", url, "--study_name", "dir", *extra)
    assert len(optuna.load_study(study_name="dir", storage=url).trials) == 1  # nothing ran
    assert not Path("runs/studies/dir/summary.md").exists()


def test_the_exported_best_config_runs_into_its_own_folder_under_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = finished_study(url, "b")
    tune("--storage", url, "--study_name", "b", "--summary")
    base, best = yaml.safe_load(TINY.read_text()), yaml.safe_load(Path("runs/studies/b/best_config.yaml").read_text())
    base_logger, best_logger = base["trainer"]["logger"]["init_args"], best["trainer"]["logger"]["init_args"]
    assert best["trainer"]["default_root_dir"] == "runs/studies/b/best" != base["trainer"]["default_root_dir"]
    assert best_logger["save_dir"] == "runs/studies/b/best" != base_logger["save_dir"]
    assert (best_logger["name"], best_logger["group"]) == ("b-best", "b") and "name" not in base_logger
    checkpoint = next(cb for cb in best["trainer"]["callbacks"] if cb["class_path"].endswith("ModelCheckpoint"))
    assert checkpoint["init_args"]["dirpath"] == "runs/studies/b/best/checkpoints"
    assert not any(cb["class_path"] == "tuning.trial.OptunaTrial" for cb in best["trainer"]["callbacks"])
    lr = best["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert lr == study.best_trial.params["model.init_args.optimizer.init_args.lr"]


# ---- storage passwords ----------------------------------------------------------------------------------

def test_mask_url_hides_passwords_in_any_text():
    assert mask_url("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"
    assert mask_url("postgresql+psycopg2://u:p%40ss:w@h:5432/db?sslmode=require") == \
        "postgresql+psycopg2://u:***@h:5432/db?sslmode=require"
    assert mask_url("--storage=postgresql://u:s3cret@h/db and mysql://a:b@c/d") == \
        "--storage=postgresql://u:***@h/db and mysql://a:***@c/d"
    assert mask_url("postgresql://h/db?user=u&password=s3cret&sslmode=x") == "postgresql://h/db?user=u&password=***&sslmode=x"
    for plain in ("postgresql://user@host:5432/db", "sqlite:///runs/studies/s.db", "postgresql://host:5432/db"):
        assert mask_url(plain) == plain


@pytest.mark.slow
def test_a_storage_password_never_appears_in_output_files_or_wandb_and_progress_is_printed(tmp_path):
    """A real `cli.py tune` process with offline W&B (trial run + summary run, whose metadata records sys.argv)."""
    secret = "Hunter2-not-a-real-password"
    url = f"sqlite:///{tmp_path / 'studies.db'}?password={secret}"  # SQLite ignores the query; tune must not show it
    search = write_search(tmp_path, n_trials=1)
    proc = tune_subprocess("--storage", url, "--study_name", "pw", search=search, env={"WANDB_MODE": "offline"})
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert secret not in out and "password=***" in out
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".db" and secret.encode() in p.read_bytes()]
    assert not leaked
    assert glob.glob("runs/studies/pw/wandb/offline-run-*") and glob.glob("runs/studies/pw/trial_000/wandb/offline-run-*")
    assert "password=***" in Path("runs/studies/pw/summary.md").read_text()
    assert "password=***" in Path("runs/studies/pw/best_config.yaml").read_text().splitlines()[0]
    # progress: where the trial runs, its parameters, one line per validation (2 epochs), how it ended
    assert "[tune] trial 0 started: run folder runs/studies/pw/trial_000, log runs/studies/pw/trial_000/fit.log" in out
    assert re.search(r"\[tune\] trial 0 params: \{'model\.init_args\.optimizer\.init_args\.lr': ", out)
    validations = re.findall(r"\[tune\] trial 0 validation: epoch (\d), step (\d+), val/loss = [\d.]+", out)
    assert validations == [("0", "3"), ("1", "6")], out
    assert re.search(r"\[tune\] trial 0 COMPLETE: val/loss = [\d.]+", out)


# ---- studies on SQLite ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_study_runs_resumes_and_exports_a_runnable_best_config(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = tune("--storage", url, "--study_name", "s")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert all(Path(f"runs/studies/s/trial_{i:03d}/checkpoints/last.ckpt").is_file() for i in range(2))
    # Re-running the same command resumes: the study already has its 2 trials.
    study = tune("--storage", url, "--study_name", "s")
    assert len(study.trials) == 2
    study = tune("--storage", url, "--study_name", "s", "--n_trials", "3")
    assert states(study) == ["COMPLETE"] * 3
    summary = Path("runs/studies/s/summary.md").read_text()
    assert "complete 3, pruned 0, failed 0" in summary and "importance" in summary
    best = Path("runs/studies/s/best_config.yaml")
    config = yaml.safe_load(best.read_text())
    lr = config["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert lr == study.best_trial.params["model.init_args.optimizer.init_args.lr"]
    cli = run_cli("fit", "--config", str(best), "--trainer.fast_dev_run", "1")
    assert cli.trainer.global_step == 1


@pytest.mark.slow
def test_forced_prune_and_nan_failure_are_recorded_and_all_failed_exits_non_zero(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = write_search(tmp_path, n_trials=1, pruner={"name": "threshold", "upper": 0.0})  # any loss > 0 prunes
    study = tune("--storage", url, "--study_name", "pruned", search=search)
    assert states(study) == ["PRUNED"]
    assert "pruned at epoch 0" in study.trials[0].user_attrs["prune_reason"]
    assert list(study.trials[0].intermediate_values) == [0]  # stopped after the first report (max_epochs is 2)
    out = capsys.readouterr().out
    assert re.search(r"\[tune\] trial 0 validation: epoch 0, step 3, val/loss = [\d.]+\n", out)
    assert "[tune] trial 0 PRUNED: Trial was pruned at epoch 0." in out

    nan_params = {"model.init_args.optimizer.init_args.lr": {"type": "categorical", "choices": [1.0e12]}}
    search = write_search(tmp_path, n_trials=1, params=nan_params,
                          fixed={"trainer.max_epochs": 2, "model.init_args.optimizer.class_path": "torch.optim.SGD",
                                 "trainer.gradient_clip_val": None})
    with pytest.raises(SystemExit) as exit_info:  # every trial of this run failed
        tune("--storage", url, "--study_name", "nan", search=search)
    message = str(exit_info.value.code)
    assert "every trial this run started failed (1 of 1)" in message and "NaN/Inf" in message
    assert "runs/studies/nan/trial_000/fit.log" in message
    study = optuna.load_study(study_name="nan", storage=url)
    assert states(study) == ["FAIL"]
    assert "NaN/Inf" in study.trials[0].user_attrs["fail_reason"]
    assert Path("runs/studies/nan/summary.md").is_file()  # the summary is written before the exit
    assert re.search(r"\[tune\] trial 0 FAIL: NaN/Inf.*\(log: runs/studies/nan/trial_000/fit\.log\)", capsys.readouterr().out)


@pytest.mark.slow
def test_killed_study_leaves_a_stale_trial_that_is_failed_and_rerun(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    proc = tune_subprocess("--storage", url, "--study_name", "k", "--n_trials", "1")
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "[tune] trial 0 started" in line or time.monotonic() > deadline:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="k", storage=url)
    assert states(study) == ["RUNNING"]
    time.sleep(4)  # > heartbeat grace period (3 s)
    study = tune("--storage", url, "--study_name", "k", "--n_trials", "1")
    assert states(study) == ["FAIL", "COMPLETE"]
    assert "fail_reason" not in study.trials[0].user_attrs  # failed by the heartbeat check, not by a fit
    assert "stale: no heartbeat" in Path("runs/studies/k/summary.md").read_text()


@pytest.mark.slow
def test_each_trial_is_its_own_offline_wandb_run_in_the_study_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    study = tune("--storage", f"sqlite:///{tmp_path / 'studies.db'}", "--study_name", "w")
    runs = sorted(glob.glob("runs/studies/w/trial_*/wandb/offline-run-*"))
    assert len(runs) == 2 and runs[0].split("/")[3] != runs[1].split("/")[3]
    for i, run in enumerate(runs):
        record = next(Path(run).glob("*.wandb")).read_bytes()  # the offline run's protobuf log
        assert f'"study":"w","trial":{i}'.encode() in record  # trial number and params in its config
        assert f"w-trial-{i:03d}".encode() in record and b"optuna-trial" in record  # its name and job type
    assert len(glob.glob("runs/studies/w/wandb/offline-run-*")) == 1  # the study summary run
    assert len(study.trials) == 2


# ---- DDP trial ------------------------------------------------------------------------------------------

@pytest.mark.ddp
@pytest.mark.slow
def test_a_two_process_ddp_trial_is_pruned(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = write_search(tmp_path, n_trials=1, pruner={"name": "threshold", "upper": 0.0})
    study = tune("--storage", url, "--study_name", "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                 "--trainer.accelerator", "cpu", search=search)
    log = Path("runs/studies/ddp/trial_000/fit.log").read_text()
    assert states(study) == ["PRUNED"], log[-3000:]
    assert "world_size=2" in log
    assert list(study.trials[0].intermediate_values) == [0]  # both ranks stopped after epoch 0 of 2


# ---- PostgreSQL, two workers --------------------------------------------------------------------------

@contextlib.contextmanager
def postgres_server(password: str | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL server with database ``studies`` for user ``genlab``; yields its URL without a
    password. With ``password``, the server asks for it (scram-sha-256) instead of trusting local clients."""
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    initdb = str(Path(bindirs[-1]) / "initdb") if bindirs else shutil.which("initdb")
    if not initdb:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg2")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    as_user: list[str] = []
    auth = ["--auth=trust"]
    if password is not None:
        (root / "pw").write_text(password + "\n")
        auth = ["--auth=scram-sha-256", f"--pwfile={root / 'pw'}"]
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        if password is not None:
            shutil.chown(root / "pw", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "genlab", *auth], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "genlab", "studies"],
                       check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password or ""})
        yield f"postgresql+psycopg2://genlab@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url):
    workers = [tune_subprocess("--storage", postgres_url, "--study_name", "shared", "--n_trials", "4") for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and len(study.trials) == 4, states(study)
    ran = [[int(m) for m in re.findall(r"^\[tune\] trial (\d+) started", out, flags=re.MULTILINE)] for out in outputs]
    assert sorted(ran[0] + ran[1]) == [0, 1, 2, 3] and ran[0] and ran[1]  # both worked, no trial twice


# ---- help -------------------------------------------------------------------------------------------------

def test_tune_help_reads_cleanly(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and max(len(line) for line in text.splitlines()) <= 100
    options = text[text.index("\noptions:\n"):].splitlines()[1:]
    entries: dict[str, str] = {}
    for line in options:
        if line.startswith("  -"):
            flags, _, help_text = line.strip().partition("  ")
            entries[flags] = help_text.strip()
        elif line.startswith(" " * 20) and entries:  # a wrapped help line, indented under its option's help
            entries[list(entries)[-1]] += " " + line.strip()
    expected = {"--config FILE", "--search FILE", "--n_trials N", "--timeout SECONDS", "--storage URL",
                "--study_name NAME", "--study_dir DIR", "--export FILE", "--summary"}
    assert expected <= set(entries), entries
    assert all(entries.values()), entries  # every option has its help on its own line
    prose = [line for line in text.splitlines() if not line.startswith("  -") and not line.startswith(" " * 19)]
    assert not [line for line in prose if re.search(r"\S {3,}\S", line)]  # no lines run together
    example = [line for line in text.splitlines() if line.startswith(("    python cli.py tune", "        [--"))]
    assert len(example) == 3 and all(line.endswith("\\") for line in example[:2])  # the command's continuation lines


# ---- PostgreSQL with a password ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_postgresql_password_comes_from_pgpassword_or_is_masked(monkeypatch, capsys):
    """The documented way: no password in --storage, libpq reads PGPASSWORD; one in the URL is never shown,
    not even when the server rejects it."""
    secret = "S3cret-pg-password"
    with postgres_server(password=secret) as url:  # postgresql+psycopg2://genlab@127.0.0.1:PORT/studies
        monkeypatch.setenv("PGPASSFILE", os.devnull)
        monkeypatch.setenv("PGPASSWORD", secret)
        tune("--storage", url, "--study_name", "pg", "--summary")
        assert f"at {url}:" in capsys.readouterr().out
        monkeypatch.delenv("PGPASSWORD")
        with_password = url.replace("genlab@", f"genlab:{secret}@")
        tune("--storage", with_password, "--study_name", "pg", "--summary")
        out = capsys.readouterr().out
        assert url.replace("genlab@", "genlab:***@") in out and secret not in out
        with pytest.raises(SystemExit) as exit_info:
            tune("--storage", url.replace("genlab@", "genlab:Wrong-secret@"), "--study_name", "pg", "--summary")
        message = str(exit_info.value.code)
        assert "cannot open the study 'pg' at postgresql+psycopg2://genlab:***@127.0.0.1" in message
        assert "password authentication failed" in message and "Wrong-secret" not in message + str(capsys.readouterr())
    assert secret not in Path("runs/studies/pg/summary.md").read_text()
