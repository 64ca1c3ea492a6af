"""Every shipped config runs through cli.py; --print_config round-trips."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SWEEPS, TINY, run_cli

SHIPPED = sorted(p for p in SWEEPS.glob("*.yaml") if not p.name.endswith(".search.yaml")
                 and not p.name.startswith(("seed000_", "coigan_")))  # those have their own data; see their tests


def test_configs_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"ddpm_mnist.yaml", "ddpm_fashion_mnist.yaml", "ddpm_mnist_cpu.yaml", "vae_mnist.yaml",
            "vae_fashion_mnist.yaml", "diffuse_vae_mnist.yaml", "diffuse_vae_fashion_mnist.yaml"} <= names


SYNTHETIC = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--data", "SyntheticDataModule",
             "--data.batch_size", "4", "--data.num_workers", "0", "--data.num_samples", "16"]


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_fast_dev_run_every_shipped_config(config):
    if config.stem.startswith("diffuse_vae_"):
        # Stage 1 writes the VAE checkpoint at the path the DiffuseVAE config documents.
        vae_config = SWEEPS / config.name.replace("diffuse_vae_", "vae_")
        run_cli("fit", "--config", str(vae_config), *SYNTHETIC, "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")
        vae_ckpt = yaml.safe_load(config.read_text())["model"]["init_args"]["vae_checkpoint"]
        assert (Path.cwd() / vae_ckpt).is_file()
    cli = run_cli("fit", "--config", str(config), "--trainer.fast_dev_run", "1", *SYNTHETIC)
    assert cli.trainer.global_step == 1
    assert "val/loss" in cli.trainer.callback_metrics


def test_print_config_round_trip(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(TINY), "--print_config"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(out)
    config = yaml.safe_load(out)
    assert config["model"]["class_path"] == "lightning_modules.DDPMModule"
    assert config["model"]["init_args"]["denoiser"]["class_path"] == "networks.TinyUNet"
    again = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "fit", "--config", str(dumped), "--print_config"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout
    assert yaml.safe_load(again) == config
    cli = run_cli("fit", "--config", str(dumped), "--trainer.fast_dev_run", "1")
    assert cli.trainer.global_step == 1


def test_mismatched_image_size_gives_a_clear_error_outside_the_cli():
    """cli.py links the facts; a module built in Python is still checked against its data at setup."""
    from lightning.pytorch import Trainer

    from datamodules import SyntheticDataModule
    from lightning_modules import DDPMModule
    from networks import TinyUNet

    model = DDPMModule(TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2), num_timesteps=10, image_size=16)
    data = SyntheticDataModule(image_size=8, batch_size=4, num_workers=0, num_samples=16)
    with pytest.raises(ValueError, match=r"model.image_size=16 does not match data.image_size=8"):
        Trainer(fast_dev_run=1, accelerator="cpu", logger=False).fit(model, data)
