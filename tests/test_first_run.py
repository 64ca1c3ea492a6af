"""What a new user hits first: help that lists every command, one-line errors for common mistakes."""

from __future__ import annotations

import pytest
from conftest import TINY, run_cli, run_cli_subprocess


def test_help_lists_tune():
    out = run_cli_subprocess("--help", timeout=300)
    assert out.returncode == 0
    assert "predict" in out.stdout and "tune" in out.stdout


def test_missing_checkpoint_is_one_clear_line():
    out = run_cli_subprocess("predict", "--config", str(TINY), "--ckpt_path", "runs/x/checkpoints/last.ckpt", timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --ckpt_path runs/x/checkpoints/last.ckpt does not exist")
    assert "Traceback" not in out.stderr


def test_zero_learning_rate_is_refused():
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        run_cli("fit", "--config", str(TINY), "--trainer.fast_dev_run", "1",
                "--model.init_args.optimizer.init_args.lr=0.0")


def test_predict_with_zero_samples_is_an_error():
    run_cli("fit", "--config", str(TINY), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    with pytest.raises(SystemExit, match="num_predict_samples is 0"):
        run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt",
                "--data.init_args.num_predict_samples", "0")
