"""``cli.py tune``: search-space parsing, SQLite studies that resume, pruning (also under DDP), failures,
the best-config export, stale trials after SIGKILL, W&B runs per trial and a shared PostgreSQL study."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY, run_cli
from optuna.trial import TrialState

from tuning.search_space import SearchSpaceError, load_search_space
from tuning.trial_config import load_configs
from tuning.tune import tune_main

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


def tune_subprocess(*args: str, search: Path = SEARCH, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "tune", "--config", str(TINY), "--search", str(search),
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


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
def test_forced_prune_and_nan_failure_are_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = write_search(tmp_path, n_trials=1, pruner={"name": "threshold", "upper": 0.0})  # any loss > 0 prunes
    study = tune("--storage", url, "--study_name", "pruned", search=search)
    assert states(study) == ["PRUNED"]
    assert "pruned at epoch 0" in study.trials[0].user_attrs["prune_reason"]
    assert list(study.trials[0].intermediate_values) == [0]  # stopped after the first report (max_epochs is 2)

    nan_params = {"model.init_args.optimizer.init_args.lr": {"type": "categorical", "choices": [1.0e12]}}
    search = write_search(tmp_path, n_trials=1, params=nan_params,
                          fixed={"trainer.max_epochs": 2, "model.init_args.optimizer.class_path": "torch.optim.SGD",
                                 "trainer.gradient_clip_val": None})
    study = tune("--storage", url, "--study_name", "nan", search=search)
    assert states(study) == ["FAIL"]
    assert "NaN/Inf" in study.trials[0].user_attrs["fail_reason"]


@pytest.mark.slow
def test_killed_study_leaves_a_stale_trial_that_is_failed_and_rerun(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    proc = tune_subprocess("--storage", url, "--study_name", "k", "--n_trials", "1")
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "[tune] trial 0:" in line or time.monotonic() > deadline:
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

@pytest.fixture(scope="module")
def postgres_url():
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    initdb = str(Path(bindirs[-1]) / "initdb") if bindirs else shutil.which("initdb")
    if not initdb:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg2")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "genlab", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "genlab", "studies"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://genlab@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url):
    workers = [tune_subprocess("--storage", postgres_url, "--study_name", "shared", "--n_trials", "4") for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and len(study.trials) == 4, states(study)
    ran = [[int(line.split()[2].rstrip(":")) for line in out.splitlines() if line.startswith("[tune] trial ") and "{" in line]
           for out in outputs]
    assert sorted(ran[0] + ran[1]) == [0, 1, 2, 3] and ran[0] and ran[1]  # both worked, no trial twice
