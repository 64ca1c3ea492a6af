"""Training noise-level distributions: EDM's log-normal σ against its closed form, and its use in training
(EDM's loss weight is tested beside Min-SNR in test_loss_weighting.py)."""

import math

import pytest
import torch
from conftest import TINY, run_cli

from diffusion import DiscreteVPProcess, EDMWeighting, LogNormalSigma
from diffusion.sde import VESDE


def test_log_normal_masses_are_the_normal_cdf_between_midpoints_of_log_sigma():
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    probs = LogNormalSigma(-1.2, 1.2).probabilities(process).double()
    log_sigma = -0.5 * process.snr(torch.arange(1000)).double().log()
    normal = torch.distributions.Normal(-1.2, 1.2)
    k = 300
    lo, hi = (log_sigma[k - 1] + log_sigma[k]) / 2, (log_sigma[k] + log_sigma[k + 1]) / 2
    torch.testing.assert_close(probs[k], normal.cdf(hi) - normal.cdf(lo), rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(probs[0], normal.cdf((log_sigma[0] + log_sigma[1]) / 2), rtol=1e-4, atol=1e-12)
    assert math.isclose(float(probs.sum()), 1.0, abs_tol=1e-6) and bool((probs >= 0).all())


def test_draws_follow_the_log_normal_law_and_repeat_with_a_seed():
    """The draws' ln σ has the law's mean and standard deviation where the process covers it."""
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    dist = LogNormalSigma(p_mean=-0.5, p_std=0.8)
    t = dist(process, 100_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (100_000,) and 0 <= int(t.min()) and int(t.max()) < 1000
    log_sigma = -0.5 * process.snr(t).double().log()
    assert abs(float(log_sigma.mean()) + 0.5) < 0.02 and abs(float(log_sigma.std()) - 0.8) < 0.02
    again = dist(process, 100_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_a_continuous_process_draws_times_on_its_own_interval():
    process = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = LogNormalSigma(0.0, 1.0)(process, 50_000, generator=torch.Generator().manual_seed(1))
    assert t.is_floating_point() and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    sigma = 0.01 * (50.0 / 0.01) ** t
    assert abs(float(sigma.log().mean())) < 0.03


def test_log_normal_rejects_a_non_positive_std():
    with pytest.raises(ValueError, match="p_std must be > 0"):
        LogNormalSigma(-1.2, 0.0)


def test_edm_weighting_rejects_a_non_positive_sigma_data():
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMWeighting(0.0)


def test_noise_levels_by_class_path_change_training_times_only():
    """Set from the command line, the distribution draws training t; validation keeps uniform steps; a checkpoint
    rebuilds it."""
    cli = run_cli("fit", "--config", str(TINY), "--trainer.limit_val_batches", "1",
                  "--model.init_args.noise_levels", "diffusion.LogNormalSigma",
                  "--model.init_args.noise_levels.p_mean", "-3.0", "--model.init_args.noise_levels.p_std", "0.1")
    module = cli.model
    assert isinstance(module.noise_levels, LogNormalSigma) and module.noise_levels.p_mean == -3.0
    drawn = []
    original = module.process.add_noise
    module.process.add_noise = lambda x0, noise, t: drawn.append(t) or original(x0, noise, t)
    x0 = torch.rand(256, *module.image_shape) * 2 - 1
    with torch.no_grad():
        module.train()
        module.diffusion_loss(x0, None, generator=torch.Generator().manual_seed(0))
        module.eval()
        module.diffusion_loss(x0, None, generator=torch.Generator().manual_seed(0))
    sigma_train = module.process.snr(drawn[0]).rsqrt()
    sigma_val = module.process.snr(drawn[1]).rsqrt()
    assert float(sigma_train.max()) < 0.2 < float(sigma_val.max())
    assert module.provenance()["noise_levels"].startswith("LogNormalSigma")

    from lightning_modules import DDPMModule

    reloaded = DDPMModule.load_from_checkpoint("run/checkpoints/last.ckpt", weights_only=True)
    assert isinstance(reloaded.noise_levels, LogNormalSigma) and reloaded.noise_levels.p_std == 0.1
