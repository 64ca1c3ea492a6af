"""DiffuseVAE: frozen VAE, clear errors, conditioning, generation modes, evaluation, DDP."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_DVAE, TINY_VAE, run_cli, run_cli_subprocess

from lightning_modules import DiffuseVAEModule
from lightning_modules.diffuse_vae import load_frozen_vae
from networks import TinyUNet


@pytest.fixture
def vae_ckpt():
    run_cli("fit", "--config", str(TINY_VAE))
    return Path("vae_run/checkpoints/last.ckpt")


def _module(path, **kwargs):
    unet = TinyUNet(channels=(8, 16), num_heads=2, t_emb_dim=16, cond_channels=1)
    return DiffuseVAEModule(str(path), unet, num_timesteps=20, image_size=16, **kwargs)


def test_missing_and_wrong_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Train the VAE first"):
        load_frozen_vae(str(tmp_path / "nope.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_frozen_vae(str(tmp_path / "junk.ckpt"))
    run_cli("fit", "--config", str(TINY))  # a DDPM checkpoint is not a VAE
    with pytest.raises(ValueError, match="is not a VAEModule checkpoint"):
        load_frozen_vae("run/checkpoints/last.ckpt")


def test_a_guide_checkpoint_is_refused_before_anything_loads(tmp_path):
    """Autoguidance's guide is a plain DDPM, which cannot read the VAE condition; the error comes before the VAE
    (a path that does not exist here) is even opened."""
    with pytest.raises(ValueError, match="guide_checkpoint"):
        _module(tmp_path / "no_vae.ckpt", guide_checkpoint="any.ckpt")


def test_denoiser_without_cond_channels_is_rejected(vae_ckpt):
    with pytest.raises(ValueError, match="cond_channels"):
        DiffuseVAEModule(str(vae_ckpt), TinyUNet(channels=(8, 16), num_heads=2, t_emb_dim=16), image_size=16)


def test_frozen_vae_is_unchanged_by_training_and_not_optimised(vae_ckpt):
    from lightning.pytorch import Trainer

    from datamodules import SyntheticDataModule

    module = _module(vae_ckpt)
    before = {k: v.clone() for k, v in module.vae.state_dict().items()}
    optimizer = module.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in module.vae.parameters())
    assert not any(p.requires_grad for p in module.vae.parameters())
    Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
            enable_model_summary=False).fit(module, datamodule=SyntheticDataModule(image_size=16, batch_size=4,
                                                                                 num_samples=32))
    assert not module.vae.training
    for k, v in module.vae.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(module.denoiser.parameters(), _module(vae_ckpt).denoiser.parameters()))


def test_conditioning_changes_the_prediction(vae_ckpt):
    module = _module(vae_ckpt).eval()
    torch.manual_seed(0)
    for p in module.denoiser.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 5])
    a = module(x, t, cond=torch.zeros(2, 1, 16, 16))
    b = module(x, t, cond=torch.ones(2, 1, 16, 16))
    assert not torch.allclose(a, b)


def test_fit_resume_predict_both_modes_and_test_report(vae_ckpt):
    run_cli("fit", "--config", str(TINY_DVAE))
    last = "dvae_run/checkpoints/last.ckpt"
    vae_weights = {k: v for k, v in torch.load(last, weights_only=True)["state_dict"].items() if k.startswith("vae.")}
    cli = run_cli("fit", "--config", str(TINY_DVAE), "--trainer.max_epochs", "2", "--ckpt_path", last)
    assert cli.trainer.global_step == 6
    for k, v in torch.load(last, weights_only=True)["state_dict"].items():
        if k.startswith("vae."):
            assert torch.equal(v, vae_weights[k]), k  # still frozen after resume
    for mode in ("prior", "reconstruction"):
        run_cli("predict", "--config", str(TINY_DVAE), "--ckpt_path", last, "--sampling.sampler.steps", "3",
                "--sampling.generation_mode", mode, "--predict_dir", mode)
        data = np.load(f"{mode}/samples_rank0.npz")
        assert data["samples"].shape == (4, 1, 16, 16)
        assert json.loads(str(data["provenance"]))["generation_mode"] == mode
    run_cli("test", "--config", str(TINY_DVAE), "--ckpt_path", last, "--sampling.sampler.steps", "4")
    report = json.loads(Path("dvae_run/eval/DiffuseVAE_synthetic.json").read_text())
    assert report["provenance"]["sampling"]["sampler"]["steps"] == 4 and report["provenance"]["ema"] is True
    assert set(report["metrics"]) == {"mse", "psnr", "ssim", "mae", "edge_sim", "hist_sim"}


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_ddp_diffuse_vae_fit(vae_ckpt, tmp_path):
    result = run_cli_subprocess("fit", "--config", str(TINY_DVAE), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                                timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(tmp_path / "dvae_run/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    vae_now = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("vae.")}
    vae_orig = torch.load(vae_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, vae_orig[k[len("vae."):]]) for k, v in vae_now.items())
