"""W&B mode selection and logging in offline mode."""

from pathlib import Path

import pytest
from conftest import TINY, run_cli_subprocess

from lightning_modules.wandb_utils import choose_wandb_mode


def test_no_credentials_means_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert choose_wandb_mode() == "offline"
    import os

    assert os.environ["WANDB_MODE"] == "offline"


def test_explicit_mode_is_respected(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_wandb_mode() == "disabled"


@pytest.mark.slow
def test_offline_run_logs_config_and_images_and_prints_sync_command(tmp_path):
    result = run_cli_subprocess("fit", "--config", str(TINY),
                                env={"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path)})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "logging offline" in out and "wandb sync" in out
    runs = list(Path(tmp_path / "run/wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = list(runs[0].glob("files/media/images/samples_*.png"))
    assert media, "sample grid not logged to W&B"
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # offline runs keep config in the run record
    assert b"lightning_modules.DDPMModule" in record and b"params/total" in record
