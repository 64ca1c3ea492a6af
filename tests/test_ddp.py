"""A real 2-process CPU DDP fit (gloo) through cli.py."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli_subprocess


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_ddp_fit_and_resume(tmp_path):
    args = ["fit", "--config", str(TINY), "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "2"]
    result = run_cli_subprocess(*args, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    # 64 synthetic images, 10% validation, batch 8 per rank, limit 3 batches: 3 steps per epoch on each rank.
    assert ckpt["global_step"] == 6 and "current_model_state" in ckpt
    grids = sorted(p.name for p in Path(tmp_path / "run/samples").glob("*.png"))
    assert grids == ["epoch_000.png", "epoch_001.png"]  # rank 0 only, once per epoch
    resumed = run_cli_subprocess(*args[:-4], "--trainer.max_epochs", "3", "--ckpt_path",
                                 str(tmp_path / "run/checkpoints/last.ckpt"), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"] == 9
