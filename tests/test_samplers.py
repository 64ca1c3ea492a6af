"""Samplers: step spacing, determinism, DDIM(η=1) = DDPM(β̃), and exact sampling of a Gaussian."""

import math

import pytest
import torch

from diffusion.samplers import DDIMSampler, DDPMSampler, make_sampler, spaced_timesteps
from diffusion.schedules import NoiseSchedule


def test_spacings_match_diffusers_definitions():
    assert spaced_timesteps(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert spaced_timesteps(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert spaced_timesteps(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    with pytest.raises(ValueError, match="num_steps"):
        spaced_timesteps(100, 101, "leading")


def _fake_net(x, t):
    """A fixed, non-trivial function standing in for ε_θ."""
    return torch.tanh(x * 0.5 + 0.01 * t.float().view(-1, 1, 1, 1))


def _run(sampler, steps, x, generator):
    sampler.set_timesteps(steps)
    for t in sampler.timesteps.tolist():
        x = sampler.step(_fake_net(x, torch.full((x.shape[0],), t)), t, x, generator).prev_sample
    return x


def test_ddim_eta0_is_deterministic():
    s = NoiseSchedule("linear", 200)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = _run(DDIMSampler(s, eta=0.0), 20, x.clone(), torch.Generator().manual_seed(1))
    b = _run(DDIMSampler(s, eta=0.0), 20, x.clone(), torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = _run(DDIMSampler(s, eta=1.0), 20, x.clone(), torch.Generator().manual_seed(2))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("clip", [None, (-1.0, 1.0)])
def test_ddim_eta1_all_steps_equals_ddpm_beta_tilde(clip):
    s = NoiseSchedule("cosine", 100)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ddim = _run(DDIMSampler(s, clip_range=clip, eta=1.0), 100, x.clone(), torch.Generator().manual_seed(5))
    ddpm = _run(DDPMSampler(s, clip_range=clip, variance="beta_tilde"), 100, x.clone(), torch.Generator().manual_seed(5))
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    ddpm_beta = _run(DDPMSampler(s, clip_range=clip, variance="beta"), 100, x.clone(), torch.Generator().manual_seed(5))
    assert not torch.allclose(ddim, ddpm_beta, atol=1e-3)


def test_ddpm_step_with_true_noise_is_the_posterior_mean():
    s = NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = 400
    xt = s.add_noise(x0, eps, torch.full((5,), t))
    sampler = DDPMSampler(s)
    out = sampler.step(eps, t, xt, torch.Generator().manual_seed(3))
    mean, var = s.q_posterior(x0, xt, torch.full((5,), t))
    z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out.prev_sample, mean + var.sqrt() * z, atol=1e-5)
    assert torch.allclose(out.pred_x0, x0, atol=1e-4)


MU, SD = 0.3, 0.2
GAUSS = NoiseSchedule("linear", 1000)


def _sample_gaussian(name, steps, eta=0.0, variance="beta_tilde", spacing="leading"):
    """Sample with the closed-form optimal ε-predictor of x_0 ~ N(μ, s²)."""

    def eps_star(x, t):
        ab = GAUSS.alpha_bars[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * SD**2 + 1 - ab)

    g = torch.Generator().manual_seed(0)
    sampler = make_sampler(name, GAUSS, eta=eta, variance=variance, spacing=spacing)
    sampler.set_timesteps(steps)
    x = torch.randn(20_000, 1, 1, 1, generator=g)
    for t in sampler.timesteps.tolist():
        x = sampler.step(eps_star(x, torch.full((x.shape[0],), t)), t, x, g).prev_sample
    return x


@pytest.mark.parametrize(
    "name,eta,variance", [("ddpm", 0.0, "beta_tilde"), ("ddpm", 0.0, "beta"), ("ddim", 0.0, ""), ("ddim", 1.0, "")]
)
def test_samplers_recover_a_gaussian_with_the_optimal_denoiser(name, eta, variance):
    """With every step and the optimal denoiser, every sampler must return N(μ, s²)."""
    x = _sample_gaussian(name, 1000, eta, variance or "beta_tilde")
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(SD, rel=0.03)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_strided_ddim_converges_with_more_steps(spacing):
    """Fewer steps add discretisation error, which must shrink as the step count grows."""
    errors = [abs(_sample_gaussian("ddim", n, spacing=spacing).std().item() - SD) for n in (10, 50, 200)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 and errors[1] < 0.03


def test_per_sample_generators_make_results_batch_independent():
    s = NoiseSchedule("linear", 100)
    seeds = range(6)
    full = _run(DDPMSampler(s), 10, torch.zeros(6, 1, 4, 4), [torch.Generator().manual_seed(i) for i in seeds])
    half = _run(DDPMSampler(s), 10, torch.zeros(3, 1, 4, 4), [torch.Generator().manual_seed(i) for i in range(3, 6)])
    assert torch.allclose(full[3:], half, atol=1e-6)


def test_unknown_sampler_and_negative_eta_raise():
    s = NoiseSchedule("linear", 10)
    with pytest.raises(ValueError, match="Unknown sampler"):
        make_sampler("euler", s)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(s, eta=-1)
    assert math.isfinite(float(s.betas.sum()))
