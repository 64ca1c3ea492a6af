"""What a new user hits first: help that lists every command, one-line errors for common mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SWEEPS, TINY, run_cli, run_cli_subprocess


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


def _config_without_run_dirs(tmp_path, name: str, **trainer) -> str:
    """The tiny config with its run folder left to the CLI (runs/<config name>), as the shipped configs do."""
    import yaml

    config = yaml.safe_load(TINY.read_text())
    config["trainer"].pop("default_root_dir")
    config["trainer"]["logger"]["init_args"].pop("save_dir")
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
    config["trainer"]["callbacks"].append({"class_path": "callbacks.LastCheckpoint"})
    config["trainer"].update(trainer)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_gpu_sized_config_on_a_cpu_says_so_names_the_cpu_config_and_estimates_the_time(tmp_path):
    config = _config_without_run_dirs(tmp_path, "gpu", accelerator="auto", max_epochs=20, limit_val_batches=0)
    (tmp_path / "gpu_cpu.yaml").write_text("# the CPU-sized sibling\n")
    out = run_cli_subprocess("fit", "--config", config, "--trainer.max_steps", "14", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "No GPU found" in text and "gpu_cpu.yaml" in text
    assert "CPU speed:" in text and "s/step" in text


def test_a_second_fit_gets_its_own_run_folder(tmp_path):
    config = _config_without_run_dirs(tmp_path, "twice", limit_val_batches=0)
    first = run_cli("fit", "--config", config, "--trainer.max_steps", "1")
    second = run_cli("fit", "--config", config, "--trainer.max_steps", "2")
    assert first.trainer.default_root_dir.endswith("runs/twice")
    assert second.trainer.default_root_dir.endswith("runs/twice-2")
    assert torch.load("runs/twice/checkpoints/last.ckpt", weights_only=True)["global_step"] == 1  # untouched
    assert torch.load("runs/twice-2/checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    assert not list(Path("runs/twice/checkpoints").glob("last-v*.ckpt"))
    resumed = run_cli("fit", "--config", config, "--trainer.max_steps", "3", "--ckpt_path", "runs/twice/checkpoints/last.ckpt")
    assert resumed.trainer.default_root_dir.endswith("runs/twice")  # a resume continues in its own folder


def test_a_config_that_loads_an_overlay_keeps_its_own_run_name_and_takes_the_overlay(tmp_path):
    """A config may amend its model block with ``config: overlay.yaml`` (as the Fashion-MNIST CPU recipe does);
    jsonargparse lists the overlay first, but the run is still named after the file on the command line."""
    from cli import command_line_configs

    config = _config_without_run_dirs(tmp_path, "outer", limit_val_batches=0)
    (tmp_path / "overlay.yaml").write_text("model:\n  init_args:\n    optimizer:\n      init_args:\n        lr: 0.003\n")
    with open(config, "a") as f:
        f.write("config: overlay.yaml\n")
    cli = run_cli("fit", "--config", config, "--trainer.max_steps", "1")
    assert cli.trainer.default_root_dir.endswith("runs/outer")
    assert cli.config.fit.model.init_args.optimizer.init_args.lr == 0.003
    assert [Path(str(c)).name for c in cli.config.fit.config] == ["overlay.yaml", "outer.yaml"]
    assert command_line_configs(["fit", "-c", "a.yaml", "--config=b.yaml", "--x", "1", "--config", "c.yaml"]) == \
        ["a.yaml", "b.yaml", "c.yaml"]


def test_training_without_a_logger_leaves_the_learning_rate_monitor_out(caplog):
    caplog.set_level("INFO")
    cli = run_cli("fit", "--config", str(TINY), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
                  "--trainer.logger", "false", "--trainer.callbacks+", "lightning.pytorch.callbacks.LearningRateMonitor")
    assert cli.trainer.global_step == 2
    assert not any(type(cb).__name__ == "LearningRateMonitor" for cb in cli.trainer.callbacks)
    assert "LearningRateMonitor is left out" in caplog.text


@pytest.mark.slow
def test_the_cpu_recipe_budget_is_its_step_count_and_a_time_cap_says_so(capsys):
    cli = run_cli("fit", "--config", str(SWEEPS / "ddpm_mnist_cpu.yaml"), "--trainer.max_steps", "3",
                  "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false")
    assert cli.trainer.global_step == 3 and cli.trainer.max_steps == 3
    assert "Stopped after" not in capsys.readouterr().out
    assert list(Path("runs/ddpm_mnist_cpu/samples").glob("final_step_000003.png"))  # a grid at the end of training
    capped = run_cli("fit", "--config", str(SWEEPS / "ddpm_mnist_cpu.yaml"), "--trainer.max_time", "00:00:00:01",
                     "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false")
    out = capsys.readouterr().out
    assert capped.trainer.global_step < 1800
    assert f"Stopped after {capped.trainer.global_step:,} of 1,800 steps: the trainer.max_time cap" in out


def test_a_negative_value_after_a_space_reaches_the_real_check():
    from cli import join_negative_values

    assert join_negative_values(["--a", "-1e-3", "--b", "x", "-c", "--d", "-.5"]) == ["--a=-1e-3", "--b", "x", "-c", "--d=-.5"]
    out = run_cli_subprocess("fit", "--config", str(TINY), "--model.init_args.optimizer.init_args.lr", "-1e-3", timeout=300)
    assert out.returncode != 0
    assert "expected one argument" not in out.stderr and "Invalid learning rate: -0.001" in out.stderr


def test_a_nested_config_error_puts_the_innermost_problem_on_top():
    out = run_cli_subprocess("fit", "--config", str(TINY), "--model.init_args.denoiser.init_args.channels=abc", timeout=300)
    assert out.returncode != 0
    assert "error: the problem: model.denoiser.channels: Expected a <class 'collections.abc.Sequence'>" in out.stderr


def test_predict_loads_no_training_data_and_starts_no_wandb_run():
    run_cli("fit", "--config", str(TINY), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt")
    assert cli.trainer.logger is None
    assert cli.datamodule._splits == {}  # the training data were never loaded
    assert cli.model.show_progress  # per-step sampling progress in predict


def test_the_progress_hook_counts_every_denoising_step():
    from diffusion import DDIMSampler
    from diffusion.hooks import Progress
    from lightning_modules import DDPMModule
    from networks import TinyUNet

    model = DDPMModule(TinyUNet(channels=[8, 16], num_heads=2, t_emb_dim=16), num_timesteps=50, image_size=8)
    progress = Progress("test")
    model.sample(2, DDIMSampler(7), hooks=(progress,))
    assert progress.bar.total == 7 and progress.bar.n == 7
