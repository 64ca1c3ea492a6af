"""Schedule maths against closed forms."""

import math

import pytest
import torch

from diffusion.processes import DiscreteVPProcess as NoiseSchedule
from diffusion.schedules import cosine_betas, linear_betas

SCHEDULES = [dict(schedule="linear", beta_start=1e-4, beta_end=0.024), dict(schedule="cosine")]


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_alpha_bar_is_product_of_alphas(kwargs):
    s = NoiseSchedule(num_timesteps=1000, **kwargs)
    betas = s.betas.double()
    expected = torch.tensor([math.prod(1 - b for b in betas[: t + 1].tolist()) for t in (0, 10, 500, 999)], dtype=torch.float64)
    assert torch.allclose(s.alpha_bars[[0, 10, 500, 999]].double(), expected, rtol=1e-5, atol=1e-9)


def test_linear_endpoints_and_cosine_formula():
    lin = NoiseSchedule("linear", 1000, 1e-4, 0.024)
    assert lin.betas[0].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(0.024)
    cos = NoiseSchedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):  # index t is step t+1
        assert cos.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-5)
    assert cos.betas.max().item() <= 0.999 + 1e-7  # clipped near t = T


def test_bad_schedule_arguments_raise():
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        NoiseSchedule("linear", 100, 0.1, 0.01)
    with pytest.raises(ValueError, match="Unknown schedule"):
        NoiseSchedule("quadratic", 100)


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_q_sample_moments(kwargs):
    """x_t ~ N(√ᾱ_t x_0, (1 − ᾱ_t) I): check mean and variance on 200k draws."""
    s = NoiseSchedule(num_timesteps=1000, **kwargs)
    g = torch.Generator().manual_seed(0)
    for t in (0, 250, 999):
        x0 = torch.full((200_000, 1, 1, 1), 0.7)
        xt = s.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((x0.shape[0],), t))
        ab = s.alpha_bars[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
        assert xt.var().item() == pytest.approx(1 - ab, rel=2e-2, abs=1e-5)


@pytest.mark.parametrize("kwargs", SCHEDULES)
def test_posterior_matches_gaussian_conditioning(kwargs):
    """q(x_{t−1}|x_t,x_0) ∝ N(x_t; √α_t x_{t−1}, β_t) N(x_{t−1}; √ᾱ_{t−1} x_0, 1 − ᾱ_{t−1}), solved directly."""
    s = NoiseSchedule(num_timesteps=1000, **kwargs)
    betas64 = linear_betas(1000, 1e-4, 0.024) if kwargs["schedule"] == "linear" else cosine_betas(1000)
    x0, xt = torch.tensor([[[[0.3]]], [[[-0.5]]]]), torch.tensor([[[[1.1]]], [[[0.2]]]])
    for t in (1, 37, 600, 998):
        b = betas64[t].item()
        a = 1 - b
        ab_prev = torch.prod(1 - betas64[:t]).item()
        precision = a / b + 1 / (1 - ab_prev)
        var = 1 / precision
        mean = var * (math.sqrt(a) * xt.double() / b + math.sqrt(ab_prev) * x0.double() / (1 - ab_prev))
        mu, v = s.q_posterior(x0, xt, torch.full((2,), t))
        assert torch.allclose(mu.double(), mean, rtol=1e-4, atol=1e-5)
        assert v[0].item() == pytest.approx(var, rel=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_parameterisations_round_trip(prediction_type):
    s = NoiseSchedule("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)
    t = torch.randint(0, 990, (8,), generator=g)
    xt = s.add_noise(x0, eps, t)
    x0_hat, eps_hat = s.to_x0_eps(s.target(prediction_type, x0, eps, t), xt, t, prediction_type)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps_hat, eps, atol=1e-3)
