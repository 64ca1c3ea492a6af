"""Training noise-level distributions: EDM's log-normal σ against its closed form, VDM's stratified draws, and
their use in training (EDM's loss weight is tested beside Min-SNR in test_loss_weighting.py)."""

import math

import pytest
import torch
from conftest import TINY, run_cli

from diffusion import DiscreteVPProcess, EDMWeighting, LogNormalSigma, Stratified, Uniform
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


def test_stratified_uniform_draws_one_time_per_stratum():
    """n draws over T steps put exactly one in each block of T/n steps; n = T draws every step once."""
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    for seed in range(5):
        t = Stratified()(process, 10, generator=torch.Generator().manual_seed(seed))
        assert t.dtype == torch.long and sorted((t // 100).tolist()) == list(range(10))
    every = Stratified()(process, 1000, generator=torch.Generator().manual_seed(0))
    assert sorted(every.tolist()) == list(range(1000))
    assert not torch.equal(every, torch.arange(1000)), "the draws are shuffled, not tied to batch positions"


def test_stratified_keeps_the_base_law_and_lowers_the_variance_of_a_batch_mean():
    """Each batch position still follows the base law; the batch's mean ln σ varies far less than under i.i.d.
    draws (about 11× less here at n = 32; the law's tails, piled on the first and last steps, keep it from the
    1/n³ against 1/n of a smooth function)."""
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    base = LogNormalSigma(p_mean=-0.5, p_std=0.8)
    g = torch.Generator().manual_seed(0)
    strat = torch.stack([Stratified(base)(process, 32, generator=g) for _ in range(3000)])
    iid = torch.stack([base(process, 32, generator=g) for _ in range(3000)])
    log_sigma = lambda t: (-0.5 * process.snr(t.flatten()).double().log()).view(t.shape)  # noqa: E731
    first = log_sigma(strat[:, 0])
    assert abs(float(first.mean()) + 0.5) < 0.05 and abs(float(first.std()) - 0.8) < 0.05
    assert float(log_sigma(strat).mean(1).var()) < 0.2 * float(log_sigma(iid).mean(1).var())


def test_stratified_repeats_with_a_seed_and_rejects_a_stratified_base():
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    a = Stratified(Uniform())(process, 64, generator=torch.Generator().manual_seed(3))
    b = Stratified()(process, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="itself Stratified"):
        Stratified(Stratified())


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


def test_stratified_noise_levels_by_class_path_cover_a_training_batch():
    """``--model.init_args.noise_levels diffusion.Stratified`` trains; the i-th smallest of a batch's 64 times lies
    in the i-th 64th of the T steps, and a checkpoint rebuilds the distribution."""
    cli = run_cli("fit", "--config", str(TINY), "--trainer.limit_val_batches", "1",
                  "--model.init_args.noise_levels", "diffusion.Stratified")
    module = cli.model
    drawn = []
    original = module.process.add_noise
    module.process.add_noise = lambda x0, noise, t: drawn.append(t) or original(x0, noise, t)
    module.train()
    with torch.no_grad():
        module.diffusion_loss(torch.rand(64, *module.image_shape) * 2 - 1, None)
    T, t = module.process.num_timesteps, drawn[0].sort().values.double()
    i = torch.arange(64, dtype=torch.float64)
    assert bool((t > i * T / 64 - 1).all()) and bool((t < (i + 1) * T / 64).all())
    assert module.provenance()["noise_levels"] == "Stratified(base=Uniform())"

    from lightning_modules import DDPMModule

    reloaded = DDPMModule.load_from_checkpoint("run/checkpoints/last.ckpt", weights_only=True)
    assert isinstance(reloaded.noise_levels, Stratified) and isinstance(reloaded.noise_levels.base, Uniform)
