"""last.ckpt on a cadence and on SIGTERM, written atomically even when killed mid-write."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_cli_subprocess
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Checkpoint

from callbacks.checkpointing import AtomicCheckpointIO, LastCheckpoint
from cli import cli_main

WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    from callbacks.checkpointing import AtomicCheckpointIO
    io, version = AtomicCheckpointIO(), 0
    while True:
        version += 1
        io.save_checkpoint({{"version": version, "payload": torch.full((8_000_000,), float(version))}}, {path!r})
        print(version, flush=True)
""")


def test_a_kill_during_the_write_leaves_the_old_or_the_new_file(tmp_path):
    """TMPDIR on another filesystem (tmpfs /dev/shm) used to turn the final move into a copy in place."""
    target = tmp_path / "ckpt" / "last.ckpt"
    env = {**os.environ, "TMPDIR": "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)}
    for kill_after in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(target))],
                                stdout=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()  # one complete checkpoint exists
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(target, weights_only=True)  # never truncated, never empty
        assert state["payload"][0].item() == state["payload"][-1].item() == state["version"]
    AtomicCheckpointIO().save_checkpoint({"version": -1}, target)
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # stale temporary files are cleaned up


class _CrashAt(Callback):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.iterations + 1 == self.iteration:
            raise RuntimeError("simulated crash")


def test_last_checkpoint_on_a_step_cadence_survives_a_crash():
    cadence = LastCheckpoint(dirpath="lc", every_n_steps=2, every_n_minutes=None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "5", "--trainer.limit_val_batches", "0"],
                 trainer_defaults={"callbacks": [cadence, _CrashAt(6)]})
    assert cadence.saved_at == [2, 4]
    assert torch.load("lc/last.ckpt", weights_only=True)["global_step"] == 4


def test_last_checkpoint_on_a_time_cadence():
    cadence = LastCheckpoint(dirpath="lc", every_n_minutes=1e-6)
    cli_main(["fit", "--config", str(TINY), "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"],
             trainer_defaults={"callbacks": [cadence]})
    assert cadence.saved_at == [1, 2, 3]


class _SigtermAfterTheCheck(Checkpoint):
    """The race a real SIGTERM can hit: the signal lands after LastCheckpoint's batch-end check
    (cli.py orders Checkpoint callbacks after LastCheckpoint)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iterations == self.iteration:
            trainer._signal_connector.received_sigterm = True


def test_a_sigterm_after_the_batch_end_check_still_saves_the_interrupted_iteration(caplog):
    caplog.set_level("INFO")
    cadence = LastCheckpoint(dirpath="lc", every_n_steps=2, every_n_minutes=None)
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "5", "--trainer.limit_val_batches", "0"],
                 trainer_defaults={"callbacks": [cadence, _SigtermAfterTheCheck(3)]})
    assert cadence.saved_at == [2, 3]
    assert torch.load("lc/last.ckpt", weights_only=True)["global_step"] == 3
    assert "Stopped by a signal: saved lc/last.ckpt at iteration 3" in caplog.text


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_stops(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["trainer"].update(max_epochs=1000, limit_train_batches=3, limit_val_batches=0, enable_progress_bar=False)
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
    config["trainer"]["callbacks"].append({"class_path": "callbacks.LastCheckpoint",
                                           "init_args": {"every_n_steps": 4, "every_n_minutes": None}})
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(path)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not last.exists():  # the step-4 save
        assert proc.poll() is None, "fit ended before it could be stopped"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    ckpt = torch.load(last, weights_only=True)
    stopped = re.search(r"Stopped by a signal: saved \S+ at iteration (\d+)", output)
    assert stopped, output[-2000:]
    # the save at the stop holds the iteration the signal interrupted: nothing since the step-4 save was lost
    assert ckpt["global_step"] == int(stopped.group(1)) >= 4
    resumed = run_cli_subprocess("fit", "--config", str(path), "--ckpt_path", "run/checkpoints/last.ckpt",
                                 "--trainer.max_epochs", "4", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_max_time_stop_tells_how_to_finish_the_budget(tmp_path):
    """max_time counts training time across resumes: the hint must raise it, or the resumed run stops at once."""
    config = yaml.safe_load(TINY.read_text())
    config["trainer"].update(max_epochs=100_000, max_steps=100_000, max_time="00:00:00:01", limit_train_batches=3,
                             limit_val_batches=0, enable_progress_bar=False)
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
    config["trainer"]["callbacks"].append({"class_path": "callbacks.LastCheckpoint",
                                           "init_args": {"every_n_steps": None, "every_n_minutes": None}})
    path = tmp_path / "capped.yaml"
    path.write_text(yaml.safe_dump(config))
    first = subprocess.run([sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(path)], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    hint = re.search(r"max_time cap \(1 s\) was reached first; the cap counts training time across resumes\. "
                     r"Resume with --ckpt_path (\S+) --trainer\.max_time (\d\d:\d\d:\d\d:\d\d) ", first.stdout)
    assert hint, first.stdout[-2000:]
    last = tmp_path / hint.group(1)
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    days, hours, minutes, seconds = map(int, hint.group(2).split(":"))
    assert days * 86400 + hours * 3600 + minutes * 60 + seconds > 1

    def resume(*extra: str) -> int:
        run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(path), "--ckpt_path", str(last),
                              "--trainer.max_steps", str(stopped_at + 6), *extra], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        return torch.load(last, weights_only=True)["global_step"]

    assert resume() == stopped_at  # the trap the hint avoids: the old cap is already spent
    assert resume("--trainer.max_time", hint.group(2)) == stopped_at + 6


def _fit_weights(*extra: str, callbacks: list) -> dict[str, torch.Tensor]:
    cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "3", "--trainer.num_sanity_val_steps", "0",
              "--trainer.enable_progress_bar", "false", *extra], trainer_defaults={"callbacks": callbacks})
    return torch.load("lc/last.ckpt", weights_only=True)


def test_a_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run():
    """Same seed; crash at iteration 5 (epoch 1, batch 2 of 3); resume from the step-4 last.ckpt: same weights."""
    whole = _fit_weights(callbacks=[LastCheckpoint(dirpath="lc", every_n_steps=2, every_n_minutes=None)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit_weights(callbacks=[LastCheckpoint(dirpath="lc", every_n_steps=2, every_n_minutes=None), _CrashAt(5)])
    assert torch.load("lc/last.ckpt", weights_only=True)["global_step"] == 4
    resumed = _fit_weights("--ckpt_path", "lc/last.ckpt",
                           callbacks=[LastCheckpoint(dirpath="lc", every_n_steps=2, every_n_minutes=None)])
    assert resumed["global_step"] == whole["global_step"] == 9
    for key, value in whole["state_dict"].items():  # EMA weights
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    for key, value in whole["current_model_state"].items():  # the raw (non-EMA) weights
        torch.testing.assert_close(resumed["current_model_state"][key], value, rtol=0, atol=1e-6, msg=key)


def test_the_training_loader_skips_what_a_resumed_epoch_already_trained_on():
    from datamodules.resumable import ResumableLoader

    data = torch.utils.data.TensorDataset(torch.arange(40))
    first = ResumableLoader(data, batch_size=4, seed=3)
    first.sampler.set_epoch(2)
    it = iter(first)
    seen = [next(it)[0] for _ in range(4)]  # three trained on, one drawn ahead by the fetcher
    for _ in range(3):
        first.mark_trained()
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    again = ResumableLoader(data, batch_size=4, seed=3)
    again.load_state_dict(state)
    rest = [b[0] for b in again]
    torch.testing.assert_close(rest[0], seen[3])
    whole = torch.cat([*seen[:3], *rest])
    assert sorted(whole.tolist()) == list(range(40))  # the epoch's permutation, every sample once
    for _ in range(len(rest)):
        again.mark_trained()
    assert again.state_dict() == {"epoch": 3, "batches": 0}  # a finished epoch resumes at the next one
    other = ResumableLoader(data, batch_size=4, seed=3)
    other.sampler.set_epoch(3)
    assert not torch.equal(torch.cat([b[0] for b in other]), whole)  # each epoch its own shuffle


def _one_step_checkpoint() -> str:
    cli_main(["fit", "--config", str(TINY), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"],
             trainer_defaults={"callbacks": [LastCheckpoint(dirpath="lc", every_n_minutes=None)]})
    return "lc/last.ckpt"


class _LearningRates(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]


def test_resume_applies_a_new_learning_rate_and_refuses_a_new_architecture(capsys):
    ckpt = _one_step_checkpoint()
    seen = _LearningRates()
    cli_main(["fit", "--config", str(TINY), "--ckpt_path", ckpt, "--trainer.max_steps", "2", "--trainer.max_epochs", "5",
              "--trainer.limit_val_batches", "0",
              "--model.init_args.optimizer.init_args.lr=0.0003"], trainer_defaults={"callbacks": [seen]})
    assert seen.lrs == [0.0003]  # not the checkpoint's 0.001
    assert "learning rate [0.001] (checkpoint) -> [0.0003]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"model.init_args.denoiser.channels: checkpoint \[8, 16\], now \[8, 32\]"):
        cli_main(["fit", "--config", str(TINY), "--ckpt_path", ckpt, "--model.init_args.denoiser.init_args.channels=[8, 32]"])


def test_resume_refuses_a_checkpoint_of_another_model_class(tmp_path):
    ckpt = torch.load(_one_step_checkpoint(), weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "lightning_modules.VAEModule"
    torch.save(ckpt, tmp_path / "vae.ckpt")
    with pytest.raises(SystemExit,
                       match="holds a lightning_modules.VAEModule, but this config builds a lightning_modules.DDPMModule"):
        cli_main(["fit", "--config", str(TINY), "--ckpt_path", str(tmp_path / "vae.ckpt")])
    assert not Path("run/checkpoints/last-v1.ckpt").exists()


def test_a_fit_resume_refuses_another_optimizer_class_and_predict_accepts_it():
    """An AdamW-era checkpoint resumed by a config that now trains by MuonAdamW (the Fashion-MNIST CPU recipe since
    2026-12-05) would fail inside torch with "a different number of parameter groups"; it is one clear error instead,
    naming the class to resume with. Sampling a checkpoint needs no optimizer state, so predict goes on."""
    ckpt = _one_step_checkpoint()
    with pytest.raises(SystemExit, match="was trained by torch.optim.Adam, and its optimizer state cannot resume "
                                         "networks.MuonAdamW.*--model.init_args.optimizer torch.optim.Adam"):
        cli_main(["fit", "--config", str(TINY), "--ckpt_path", ckpt, "--trainer.max_steps", "2",
                  "--model.init_args.optimizer", "networks.MuonAdamW"])
    cli = cli_main(["predict", "--config", str(TINY), "--ckpt_path", ckpt, "--model.init_args.optimizer", "networks.MuonAdamW"])
    assert cli.trainer.state.finished


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    from metrics import ClassifierFeatures

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(str(marker))}}, evil)
    with pytest.raises(Exception):
        ClassifierFeatures(str(evil))
    with pytest.raises(BaseException):
        cli_main(["fit", "--config", str(TINY), "--ckpt_path", str(evil), "--trainer.max_steps", "1"])
    assert not marker.exists()
