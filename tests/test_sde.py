"""Score SDEs and their samplers on toys with an exact score: VP/sub-VP/VE processes, DDPM as a VP-SDE,
reverse SDE, predictor–corrector, probability-flow ODE, (annealed) Langevin, inpainting."""

import pytest
import torch

from diffusion.hooks import Inpaint
from diffusion.processes import DiscreteVPProcess, NoiseProcess
from diffusion.samplers import DenoiseFn
from diffusion.sde import VESDE, VPSDE, DiscreteVPSDE, SubVPSDE, as_sde
from diffusion.sde_samplers import (
    AdaptiveODE,
    AnnealedLangevin,
    EulerMaruyama,
    HeunODE,
    Langevin,
    PredictorCorrector,
)
from diffusion.toy import GaussianMixture, exact_denoiser, toy_mixture


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription on shared cores (40× slower otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GAUSS = GaussianMixture.gaussian([1.5, -0.5], 0.5)
PROCESSES = {
    "vp": lambda: VPSDE(),
    "subvp": lambda: SubVPSDE(),
    "ve": lambda: VESDE(0.01, 50.0),
    "ddpm": lambda: DiscreteVPProcess("linear", 1000),
    "ddpm_cosine": lambda: DiscreteVPProcess("cosine", 1000),
}


def _sample(sampler, process, n=3000, seed=0, dist=GAUSS):
    denoise = exact_denoiser(dist, process)
    g = torch.Generator().manual_seed(seed)
    x_T = as_sde(process).prior_sample((n, dist.dim), g)
    out = sampler.sample(denoise, x_T, g)
    assert out.nfe == denoise.nfe > 0
    return out


def _assert_gaussian(x, dist=GAUSS, tol_mean=0.05, tol_std=0.06):
    mean, std = dist.means[0].float(), float(dist.stds[0])
    assert torch.isfinite(x).all()
    assert (x.mean(0) - mean).abs().max() < tol_mean, x.mean(0)
    assert ((x.std(0) / std) - 1).abs().max() < tol_std, x.std(0)


def test_vp_sde_marginals_match_ddpm_alpha_bar():
    ddpm = DiscreteVPProcess("linear", 1000)
    sde = VPSDE.from_discrete(ddpm)
    assert (sde.beta_min, sde.beta_max) == pytest.approx((0.1, 20.0))
    assert float(sde.network_time(torch.tensor([1.0]))) == pytest.approx(999)
    t = torch.linspace(sde.t_min, 1.0, 1001)
    alpha, sigma = sde.marginal(t, 1)
    alpha_ddpm, sigma_ddpm = ddpm.marginal(sde.network_time(t), 1)  # ᾱ at the index the network sees
    assert (alpha - alpha_ddpm).abs().max() < 5e-3
    assert (sigma - sigma_ddpm).abs().max() < 5e-3
    with pytest.raises(ValueError, match="linear"):
        VPSDE.from_discrete(DiscreteVPProcess("cosine", 1000))


def test_every_ddpm_schedule_has_an_sde():
    assert type(as_sde(DiscreteVPProcess("linear", 100))) is VPSDE
    cosine = as_sde(DiscreteVPProcess("cosine", 100))
    assert isinstance(cosine, DiscreteVPSDE)
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(cosine.marginal(t, 1), cosine.ddpm.marginal(torch.tensor([0, 49.5, 99]), 1))


@pytest.mark.parametrize("name,rtol", [("vp", 1e-4), ("subvp", 1e-4), ("ve", 1e-4), ("ddpm_cosine", 1e-2)])
def test_drift_and_diffusion_generate_the_marginals(name, rtol):
    """For dx = −k(t) x dt + g dw: dα/dt = −k α and dσ²/dt = −2k σ² + g² (Särkkä & Solin, Eq. 5.51)."""
    sde = as_sde(PROCESSES[name]())
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 2e-5
    a_p, s_p = sde.marginal(t + h, 1)
    a_m, s_m = sde.marginal(t - h, 1)
    alpha, sigma = sde.marginal(t, 1)
    k = -sde.drift(torch.ones_like(t)[:, None], t)[:, 0]
    g2 = sde.diffusion(t, 1) ** 2
    torch.testing.assert_close((a_p - a_m) / (2 * h), -k * alpha, rtol=rtol, atol=1e-6, check_dtype=False)
    torch.testing.assert_close((s_p**2 - s_m**2) / (2 * h), -2 * k * sigma**2 + g2, rtol=rtol, atol=1e-4,
                               check_dtype=False)


def test_priors():
    assert VESDE(0.01, 50.0).prior_std == 50.0
    for sde in (VPSDE(), SubVPSDE()):
        alpha, sigma = sde.marginal(torch.tensor([1.0]), 1)
        assert sde.prior_std == 1.0 and float(alpha) < 7e-3 and float(sigma) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_probability_flow_ode_maps_prior_to_gaussian(name):
    heun = _sample(HeunODE(40), PROCESSES[name]())
    assert heun.nfe == 2 * 40 - 1
    _assert_gaussian(heun.x)
    adaptive = _sample(AdaptiveODE(rtol=1e-5, atol=1e-5), PROCESSES[name]())
    _assert_gaussian(adaptive.x)
    assert 0 < adaptive.nfe < 300


def test_ode_is_deterministic():
    process = VPSDE()
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    a = HeunODE(10).sample(exact_denoiser(GAUSS, process), x_T, torch.Generator().manual_seed(1)).x
    b = HeunODE(10).sample(exact_denoiser(GAUSS, process), x_T, torch.Generator().manual_seed(2)).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["vp", "ve", "ddpm"])
def test_euler_maruyama_recovers_gaussian(name):
    out = _sample(EulerMaruyama(300), PROCESSES[name]())
    assert out.nfe == 300
    _assert_gaussian(out.x)


@pytest.mark.parametrize("predictor,name", [("reverse_diffusion", "vp"), ("reverse_diffusion", "ve"),
                                            ("ancestral", "subvp"), ("ancestral", "ddpm"),
                                            ("euler_maruyama", "ve")])
def test_predictor_corrector_recovers_gaussian(predictor, name):
    out = _sample(PredictorCorrector(200, predictor, corrector_steps=1, snr=0.16), PROCESSES[name]())
    assert out.nfe == 200 * 2
    _assert_gaussian(out.x)


def test_ddpm_network_sees_its_step_index():
    """A DDPM's DenoiseFn is re-bound to the VP-SDE: the network gets t (T − 1), NFE count on the caller."""
    ddpm = DiscreteVPProcess("linear", 1000)
    seen = []
    denoise = exact_denoiser(GAUSS, ddpm)
    net_fn = denoise.net_fn
    denoise.net_fn = lambda x, u: seen.append(u[0].item()) or net_fn(x, u)
    out = EulerMaruyama(5).sample(denoise, torch.randn(4, 2), torch.Generator().manual_seed(0))
    assert seen == pytest.approx((torch.linspace(1.0, 1e-3, 5) * 999).tolist(), rel=1e-5)
    assert out.nfe == denoise.nfe == 5


def test_per_sample_generators_make_samples_batch_independent():
    process = VPSDE()
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    gens = lambda k: [torch.Generator().manual_seed(10 + i) for i in range(k)]  # noqa: E731
    full = EulerMaruyama(20).sample(exact_denoiser(GAUSS, process), x_T, gens(3)).x
    part = EulerMaruyama(20).sample(exact_denoiser(GAUSS, process), x_T[:2], gens(2)).x
    torch.testing.assert_close(full[:2], part)


def test_annealed_langevin_recovers_mode_weights_plain_langevin_does_not():
    """Song & Ermon 2019, Fig. 3 / seed Fig. 25: same uniform start on [−8, 8]², exact scores."""
    mix, process = toy_mixture(), VESDE(0.1, 10.0)
    annealed = AnnealedLangevin(sigma_1=10.0, sigma_L=0.1, levels=10, steps_per_level=100, epsilon=5e-3,
                                uniform_init=True, init_range=(-8.0, 8.0))
    plain = Langevin(steps=1000, step_size=0.1, uniform_init=True, init_range=(-8.0, 8.0))
    x = torch.empty(4000, 2)
    out_a = annealed.sample(exact_denoiser(mix, process), x, torch.Generator().manual_seed(0))
    out_p = plain.sample(exact_denoiser(mix, process), x, torch.Generator().manual_seed(0))
    assert out_a.nfe == out_p.nfe == 1000
    w_a, w_p = mix.mode_weights(out_a.x), mix.mode_weights(out_p.x)
    assert (w_a - mix.weights).abs().max() < 0.05, w_a
    assert (w_p - mix.weights).abs().max() > 0.2, w_p
    assert annealed.sigmas()[0] == pytest.approx(10.0) and annealed.sigmas()[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("sampler,name", [(PredictorCorrector(30), "vp"), (EulerMaruyama(30), "ddpm"),
                                          (HeunODE(10), "ve"),
                                          (AnnealedLangevin(1.0, 0.01, 3, 5, 2e-5, denoise_last=True), "ve")])
def test_inpainting_hook_keeps_known_pixels(sampler, name):
    process = PROCESSES[name]()
    shape = (6, 1, 4, 4)
    dist = GaussianMixture.gaussian([0.3] * 16, 0.5)
    known = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    levels = []
    hooks = [Inpaint(known, mask), lambda s: levels.append((float(s.alpha_next.min()), float(s.sigma_next.max())))]
    x_T = as_sde(process).prior_sample(shape, torch.Generator().manual_seed(0))
    out = sampler.sample(exact_denoiser(dist, process), x_T, torch.Generator().manual_seed(1), hooks)
    assert torch.equal(out.x[..., :2], known[..., :2])
    assert torch.isfinite(out.x).all() and not torch.allclose(out.x[..., 2:], known[..., 2:])
    assert levels[-1] == (1.0, 0.0) and levels[0][1] > 0


def test_incompatible_processes_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="VE family"):
        AnnealedLangevin().check(VPSDE())
    with pytest.raises(ValueError, match="VE family"):
        AnnealedLangevin().check(DiscreteVPProcess())
    with pytest.raises(ValueError, match="sigma_min"):
        AnnealedLangevin(sigma_1=100.0).check(VESDE(0.01, 50.0))
    with pytest.raises(ValueError, match="SDE samplers take"):
        HeunODE(10).check(NoiseProcess())
    with pytest.raises(ValueError, match="predictor"):
        PredictorCorrector(predictor="leapfrog")
    v_model = DenoiseFn(lambda x, u: x, VESDE(), "v_prediction")
    with pytest.raises(ValueError, match="v-prediction"):
        HeunODE(10).sample(v_model, torch.zeros(2, 2))
