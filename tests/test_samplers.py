"""Samplers: step spacing, determinism, DDIM(η=1) = DDPM(β̃), and exact sampling of a Gaussian."""

import math

import numpy as np
import pytest
import torch

from diffusion.processes import DiscreteVPProcess as NoiseSchedule
from diffusion.samplers import DDIMSampler, DDPMSampler, DenoiseFn, Prediction, spaced_timesteps


def make_sampler(name, schedule, eta=0.0, variance="beta_tilde", spacing="leading", steps=None):
    if name == "ddpm":
        return DDPMSampler(steps, variance=variance, spacing=spacing)
    return DDIMSampler(steps or schedule.num_timesteps, eta=eta, spacing=spacing)


def test_spacings_match_diffusers_definitions():
    assert spaced_timesteps(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert spaced_timesteps(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert spaced_timesteps(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    with pytest.raises(ValueError, match="steps must be in"):
        spaced_timesteps(100, 101, "leading")


def _fake_net(x, t):
    """A fixed, non-trivial function standing in for ε_θ."""
    return torch.tanh(x * 0.5 + 0.01 * t.float().view(-1, 1, 1, 1))


def _run(sampler, steps, x, generator, schedule, clip=None):
    sampler.steps = steps
    return sampler.sample(DenoiseFn(_fake_net, schedule, "epsilon", clip), x, generator).x


def test_ddim_eta0_is_deterministic():
    s = NoiseSchedule("linear", 200)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = _run(DDIMSampler(eta=0.0), 20, x.clone(), torch.Generator().manual_seed(1), s)
    b = _run(DDIMSampler(eta=0.0), 20, x.clone(), torch.Generator().manual_seed(2), s)
    assert torch.equal(a, b)
    c = _run(DDIMSampler(eta=1.0), 20, x.clone(), torch.Generator().manual_seed(2), s)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("clip", [None, (-1.0, 1.0)])
def test_ddim_eta1_all_steps_equals_ddpm_beta_tilde(clip):
    s = NoiseSchedule("cosine", 100)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ddim = _run(DDIMSampler(eta=1.0), 100, x.clone(), torch.Generator().manual_seed(5), s, clip)
    ddpm = _run(DDPMSampler(variance="beta_tilde"), 100, x.clone(), torch.Generator().manual_seed(5), s, clip)
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    ddpm_beta = _run(DDPMSampler(variance="beta"), 100, x.clone(), torch.Generator().manual_seed(5), s, clip)
    assert not torch.allclose(ddim, ddpm_beta, atol=1e-3)


def test_ddpm_step_with_true_noise_is_the_posterior_mean():
    s = NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = 400
    xt = s.add_noise(x0, eps, torch.full((5,), t))
    tt = torch.full((5,), t)
    pred = Prediction(*s.to_x0_eps(eps, xt, tt, "epsilon"))
    prev = DDPMSampler().step(s, pred, t, t - 1, xt, torch.Generator().manual_seed(3))
    mean, var = s.q_posterior(x0, xt, tt)
    z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(prev, mean + var.sqrt() * z, atol=1e-5)
    assert torch.allclose(pred.x0, x0, atol=1e-4)


MU, SD = 0.3, 0.2
GAUSS = NoiseSchedule("linear", 1000)


def _sample_gaussian(name, steps, eta=0.0, variance="beta_tilde", spacing="leading"):
    """Sample with the closed-form optimal ε-predictor of x_0 ~ N(μ, s²)."""

    def eps_star(x, t):
        ab = GAUSS.alpha_bars[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * SD**2 + 1 - ab)

    g = torch.Generator().manual_seed(0)
    sampler = make_sampler(name, GAUSS, eta=eta, variance=variance, spacing=spacing, steps=steps)
    x = torch.randn(20_000, 1, 1, 1, generator=g)
    out = sampler.sample(DenoiseFn(eps_star, GAUSS), x, g)
    assert out.nfe == steps
    return out.x


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
    full = _run(DDPMSampler(), 10, torch.zeros(6, 1, 4, 4), [torch.Generator().manual_seed(i) for i in seeds], s)
    half = _run(DDPMSampler(), 10, torch.zeros(3, 1, 4, 4), [torch.Generator().manual_seed(i) for i in range(3, 6)], s)
    assert torch.allclose(full[3:], half, atol=1e-6)


def test_bad_sampler_arguments_raise():
    s = NoiseSchedule("linear", 10)
    with pytest.raises(ValueError, match="spacing"):
        DDIMSampler(5, spacing="uniform")
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(5, eta=-1)
    with pytest.raises(ValueError, match=r"steps=20\) but the model has T = 10"):
        DDIMSampler(20).check(s)
    assert math.isfinite(float(s.betas.sum()))


def _reference_steps(T: int, n: int, spacing: str) -> list[int]:
    """diffusers' definitions in NumPy float64 (DDIMScheduler.set_timesteps)."""
    if spacing == "trailing":
        return (np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1).tolist()
    return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64).tolist()


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_spacing_matches_float64_reference_for_every_step_count(spacing):
    T = 1000
    for n in range(1, T + 1):
        assert spaced_timesteps(T, n, spacing).tolist() == _reference_steps(T, n, spacing), (spacing, n)
    assert 936 in spaced_timesteps(T, 48, "trailing").tolist()  # float32 rounding gave 937


def test_dynamic_threshold_closed_forms_and_consistent_eps():
    from diffusion import dynamic_threshold

    inside = torch.rand(1, 1, 6, 6) * 0.8 + 0.1                       # within (0, 1): untouched
    wide = torch.linspace(-1.5, 2.5, 36).view(1, 1, 6, 6)             # centred units u = 2x - 1 in [-4, 4]
    out = dynamic_threshold(torch.cat([inside, wide]), (0.0, 1.0), 1.0)
    torch.testing.assert_close(out[0], inside[0])
    torch.testing.assert_close(out[1], 0.5 + 0.5 * (2 * wide[0] - 1) / 4)   # s = max |u| = 4: scaled, not clipped
    assert out.min() >= 0 and out.max() <= 1
    # p < 1: s is the p-quantile of |u|; values beyond it are clamped, then everything is divided by s.
    u = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0]).view(1, 1, 1, 5)
    s = float(torch.quantile(u.abs().flatten(), 0.75))
    torch.testing.assert_close(dynamic_threshold(u, (-1.0, 1.0), 0.75), u.clamp(-s, s) / s)
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(u, (-1.0, 1.0), 0.0)

    schedule = NoiseSchedule("linear", 100)
    x, t = torch.randn(4, 1, 5, 5) * 3, torch.full((4,), 10)
    pred = DenoiseFn(lambda x, t: -x, schedule, "epsilon", (-1.0, 1.0), threshold=0.9)(x, t)
    alpha, sigma = schedule.marginal(t, 4)
    assert pred.x0.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(alpha * pred.x0 + sigma * pred.eps, x)
