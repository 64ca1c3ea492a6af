"""VAE network and module, and seed 002's reconstruction metrics on known inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY_VAE, run_cli

from metrics import ReconstructionMetrics, edge_similarity, histogram_similarity
from metrics.reconstruction import lpips_model
from networks.vae import VAE, kl_divergence, reconstruction_loss


@pytest.mark.parametrize("mults,latent", [((1,), 32), ((1, 2), 16), ((1, 2, 2), 8), ((1, 2, 2, 4), 4)])
def test_vae_shapes_for_several_multipliers(mults, latent):
    vae = VAE(base_channels=8, channel_multipliers=mults, latent_channels=3, attention_levels=(len(mults) - 1,))
    x_rec, mu, logvar = vae(torch.rand(2, 1, 32, 32))
    assert x_rec.shape == (2, 1, 32, 32) and mu.shape == logvar.shape == (2, 3, latent, latent)
    assert vae.latent_size(32) == latent
    assert torch.allclose(x_rec, torch.full_like(x_rec, 0.5))  # zero-initialised conv_out + sigmoid


def test_logvar_is_clamped():
    vae = VAE(base_channels=8, channel_multipliers=(1, 2), latent_channels=2)
    vae.encoder.conv_out.bias.data.fill_(1e3)
    _, logvar = vae.encode(torch.rand(1, 1, 16, 16))
    assert logvar.max().item() == 20.0


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1).mean()
    assert torch.allclose(kl_divergence(mu, logvar), expected, rtol=1e-5)
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_reconstruction_losses():
    x, y = torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), 0.25)
    assert reconstruction_loss(x, y, "mse").item() == pytest.approx(16 * 0.0625)
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx(16 * 0.25)
    with pytest.raises(ValueError, match="Unknown recon_loss"):
        reconstruction_loss(x, y, "huber")


def test_metrics_identical_images():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    m = ReconstructionMetrics()
    m.update(x, x)
    v = m.compute()
    assert v["mse"] == 0 and v["mae"] == 0 and v["edge_sim"] == 0 and v["hist_sim"] == 0
    assert v["ssim"].item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(v["psnr"]) and v["psnr"].item() == pytest.approx(100.0)  # +inf handled by the floor


def test_metrics_known_shift():
    x = 0.2 + 0.6 * torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    m = ReconstructionMetrics()
    m.update(x + 0.1, x)
    v = m.compute()
    assert v["mse"].item() == pytest.approx(0.01, rel=1e-4)
    assert v["mae"].item() == pytest.approx(0.1, rel=1e-4)
    assert v["psnr"].item() == pytest.approx(20.0, rel=1e-4)
    assert v["ssim"].item() < 1


def test_histogram_similarity_matches_numpy():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    ours = histogram_similarity(a, b)
    for i in range(2):
        ha = np.histogram(a[i].numpy(), bins=256, range=(0, 1))[0].astype(float)
        hb = np.histogram(b[i].numpy(), bins=256, range=(0, 1))[0].astype(float)
        ha, hb = ha / ha.sum(), hb / hb.sum()
        assert ours[i].item() == pytest.approx(((ha - hb) ** 2 / (ha + hb + 1e-10)).sum(), rel=1e-4)


def test_edge_similarity_of_a_step_edge():
    a = torch.zeros(1, 1, 8, 8)
    a[..., 4:] = 1.0
    # Sobel G_x on a unit vertical step gives 4 on the two columns beside it (interior rows).
    assert edge_similarity(a, torch.zeros_like(a)).item() > 0
    assert edge_similarity(a, a.clone()).item() == 0


def test_lpips_without_weights_is_skipped_with_a_reason(tmp_path):
    net, reason = lpips_model(None)
    assert net is None and "lpips_weights" in reason
    net, reason = lpips_model(str(tmp_path / "missing.pth"))
    assert net is None and "not found" in reason


@pytest.mark.slow
def test_lpips_loads_a_local_backbone_file(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    backbone = torchvision.models.alexnet()
    torch.save(backbone.state_dict(), path)
    net, reason = lpips_model(str(path))
    assert reason is None
    assert torch.equal(net.net.slice1[0].weight, backbone.features[0].weight)
    m = ReconstructionMetrics(net)
    x = torch.rand(2, 1, 32, 32)
    m.update(x, x)
    assert m.compute()["lpips"].item() == pytest.approx(0.0, abs=1e-6)


def test_vae_fit_logs_parts_draws_grids_tsne_and_test_writes_report():
    cli = run_cli("fit", "--config", str(TINY_VAE))
    assert {"train/recon", "train/kl", "val/loss", "val/kl"} <= set(cli.trainer.callback_metrics)
    for folder in ("samples", "reconstructions", "latents"):
        assert list(Path("vae_run", folder).glob("*.png")), folder
    run_cli("test", "--config", str(TINY_VAE), "--ckpt_path", "vae_run/checkpoints/last.ckpt")
    report = json.loads(Path("vae_run/eval/VAE_synthetic.json").read_text())
    assert report["metrics"]["psnr"]["better"] == "higher" and report["metrics"]["edge_sim"]["better"] == "lower"
    assert "lpips" in report["skipped"] and report["provenance"]["test_images"] == 16
    md = Path("vae_run/eval/VAE_synthetic.md").read_text()
    assert "SSIM ↑" in md and "HistSim ↓" in md


def test_vae_loss_drops_when_overfitting():
    from lightning.pytorch import Trainer

    from datamodules import SyntheticDataModule
    from lightning_modules import VAEModule

    dm = SyntheticDataModule(image_size=16, batch_size=16, num_samples=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    module = VAEModule(VAE(base_channels=8, channel_multipliers=(1, 2), latent_channels=4), image_size=16,
                       optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before = module.loss(x, g())["recon"].item()
    Trainer(max_steps=80, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
            enable_model_summary=False).fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                                                                 batch_size=16))
    assert module.loss(x, g())["recon"].item() < 0.5 * before


def test_autoguide_is_refused_by_a_model_without_a_guide():
    """--sampling.autoguide true on a VAE used to be ignored without a word."""
    from lightning_modules import VAEModule
    from lightning_modules.contract import Sampling

    module = VAEModule(VAE(base_channels=8, channel_multipliers=(1, 2), latent_channels=4), image_size=16)
    with pytest.raises(ValueError, match=r"sampling.autoguide=true but a VAEModule has no guide model"):
        module.resolve_sampling(Sampling(autoguide=True))
    assert module.resolve_sampling(Sampling(autoguide=False)).autoguide is False
    with pytest.raises(ValueError, match=r"sampling.guidance_interval=\[0.28, 2.9\] but a VAEModule"):
        module.resolve_sampling(Sampling(guidance_interval=(0.28, 2.9)))
