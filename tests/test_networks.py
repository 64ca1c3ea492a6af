"""U-Net shapes and conditioning, classifier-free guidance and autoguidance."""

import pytest
import torch

from diffusion.guidance import classifier_free_guidance
from lightning_modules import DDPMModule
from networks import TinyUNet, UNet
from networks.embeddings import timestep_embedding


@pytest.mark.parametrize(
    "kwargs,size",
    [
        (dict(channels=(8, 16)), 16),
        (dict(channels=(8, 16, 32), down_sample=(True, False), attention=(True, False), num_layers=2), 28),
        (dict(channels=(8, 16, 32, 32), in_channels=3, num_classes=5), 32),
    ],
)
def test_unet_output_shape_matches_input(kwargs, size):
    net = UNet(t_emb_dim=16, num_heads=2, **kwargs)
    c = kwargs.get("in_channels", 1)
    x = torch.randn(2, c, size, size)
    assert net(x, torch.tensor([0, 999])).shape == x.shape


def test_unet_rejects_indivisible_size_and_bad_flags():
    with pytest.raises(ValueError, match="divisible"):
        UNet(channels=(8, 16, 16), t_emb_dim=16, num_heads=2)(torch.randn(1, 1, 30, 30), torch.tensor([1]))
    with pytest.raises(ValueError, match="attention needs 2 entries"):
        UNet(channels=(8, 16, 16), attention=(True,), t_emb_dim=16)


def _perturbed(net):
    """Zero-initialised output layers make a fresh net constant; randomise them so inputs matter."""
    torch.manual_seed(0)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def test_class_labels_and_condition_images_change_the_output():
    net = _perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10, cond_channels=1))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 10])
    base = net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(base, net(x, t, torch.tensor([2, 2])))
    assert not torch.allclose(base, net(x, t, torch.tensor([-1, -1])))  # null token
    assert not torch.allclose(base, net(x, t, torch.tensor([1, 1]), cond=torch.rand(2, 1, 16, 16)))


def test_scale_shift_unit_is_adaptive_group_norm_and_starts_as_the_identity():
    """AdaGN: the second GroupNorm's output is scaled by 1 + s and shifted by b, both from the embedding."""
    from networks.unet import ResnetUnit

    torch.manual_seed(0)
    unit = ResnetUnit(8, 8, emb_dim=6, scale_shift=True)
    x, emb = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    assert torch.equal(unit(x, emb), x)  # zero-initialised last conv: a fresh unit passes x through
    _perturbed(unit)
    s, b = unit.t_emb_layer(emb)[:, :, None, None].chunk(2, dim=1)
    norm, act, _, conv = unit.conv_second
    expected = conv(act(norm(unit.conv_first(x)) * (1 + s) + b)) + x
    assert torch.allclose(unit.eval()(x, emb), expected, atol=1e-6)
    additive = ResnetUnit(8, 8, emb_dim=6)
    assert unit.t_emb_layer[1].out_features == 2 * additive.t_emb_layer[1].out_features
    net = _perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10, scale_shift=True))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 10])
    assert net(x, t, torch.tensor([1, 1])).shape == x.shape
    assert not torch.allclose(net(x, t, torch.tensor([1, 1])), net(x, t, torch.tensor([2, 2])))
    assert all(m.scale_shift for m in net.modules() if isinstance(m, ResnetUnit))


def test_timestep_embedding_accepts_integers_and_is_cos_sin():
    e = timestep_embedding(torch.tensor([0, 5]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_guidance_formula_and_w0():
    c, u = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(classifier_free_guidance(c, u, 0.0), c)
    assert torch.allclose(classifier_free_guidance(c, u, 2.0), 3 * c - 2 * u)


def test_module_guidance_w0_equals_conditional_prediction():
    m = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10)), num_timesteps=50)
    x, t, y = torch.randn(3, 1, 32, 32), torch.tensor([3, 20, 40]), torch.tensor([0, 4, 9])
    assert torch.allclose(m.guided_prediction(x, t, y, 0.0), m(x, t, y), atol=1e-6)
    guided = m.guided_prediction(x, t, y, 1.5)
    assert torch.allclose(guided, 2.5 * m(x, t, y) - 1.5 * m(x, t, torch.full_like(y, -1)), atol=1e-5)


def test_guidance_interval_guides_only_where_sigma_lies_inside_it():
    """σ = σ(t)/α(t); inside (σ_lo, σ_hi] the closed-form CFG mix, outside the conditional output alone, per sample."""
    from diffusion.guidance import check_guidance_interval, interval_weight

    m = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10)), num_timesteps=50)
    t = torch.tensor([0, 10, 25, 49])
    alpha, sigma = m.process.marginal(t, 1)
    edm_sigma = sigma / alpha
    low, high = float(edm_sigma[1]), float(edm_sigma[2])  # (σ(t=10), σ(t=25)]: only t = 25 is inside
    assert interval_weight(2.0, edm_sigma, (low, high)).tolist() == [0.0, 0.0, 2.0, 0.0]
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 4, 9, 2])
    m.guidance_interval = (low, high)
    guided = m.guided_prediction(x, t, y, 1.5)
    cond, uncond = m(x, t, y), m(x, t, torch.full_like(y, -1))
    assert torch.allclose(guided[2], 2.5 * cond[2] - 1.5 * uncond[2], atol=1e-5)
    assert torch.allclose(guided[[0, 1, 3]], cond[[0, 1, 3]], atol=1e-6)
    assert not torch.allclose(guided[2], cond[2], atol=1e-3)  # the guidance really changed something

    calls = []
    m.denoiser.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    m.guided_prediction(x[:2], t[:2], y[:2], 1.5)  # no sample inside: one pass of the conditional batch
    m.guided_prediction(x[2:3], t[2:3], y[2:3], 1.5)  # inside: one pass of the doubled batch
    assert calls == [2, 2]
    assert check_guidance_interval([0, 2.9]) == (0.0, 2.9)
    for bad in ([2.9, 0.28], [-1, 1], [1.0]):
        with pytest.raises(ValueError, match="guidance_interval"):
            DDPMModule(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10), guidance_interval=bad)


def test_guidance_interval_sigma_is_the_edm_noise_level_on_vp_and_ve_processes():
    """Linear β 1e-4…0.02, T = 1000: σ = √((1 − ᾱ_t)/ᾱ_t) from the closed-form product puts 38 of DDPM-100's
    steps (t = 90…460) in (0.28, 2.9]. On a VE-SDE the network sees σ itself, and the same interval applies."""
    import numpy as np

    from diffusion import VESDE
    from diffusion.guidance import interval_weight

    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    t = np.arange(0, 1000, 10)
    edm_sigma = np.sqrt((1 - alpha_bar[t]) / alpha_bar[t])
    inside = (edm_sigma > 0.28) & (edm_sigma <= 2.9)
    assert inside.sum() == 38 and t[inside].min() == 90 and t[inside].max() == 460

    m = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10)), num_timesteps=1000,
                   guidance_interval=(0.28, 2.9))
    alpha, sigma = m.process.marginal(m.process.time_from_network(torch.from_numpy(t)), 1)
    weights = interval_weight(1.0, sigma / alpha, m.guidance_interval)
    assert torch.equal(weights > 0, torch.from_numpy(inside))

    ve = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10)), process=VESDE(0.01, 50.0),
                    guidance_interval=(1.0, 10.0))
    x, y = torch.randn(3, 1, 32, 32), torch.tensor([1, 2, 3])
    u = ve.process.network_time(ve.process.t_for_sigma(torch.tensor([0.5, 5.0, 20.0])))  # the network's σ inputs
    guided = ve.guided_prediction(x, u, y, 1.0)
    cond, uncond = ve(x, u, y), ve(x, u, torch.full_like(y, -1))
    assert torch.allclose(guided[1], 2 * cond[1] - uncond[1], atol=1e-5)
    assert torch.allclose(guided[[0, 2]], cond[[0, 2]], atol=1e-6)


def test_guidance_interval_samples_between_the_conditional_and_the_fully_guided_ones():
    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling

    m = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_classes=10)), num_timesteps=50,
                   image_size=16).eval()

    def draw(w, interval):
        m.guidance_interval = interval
        return m.generate(torch.arange(3), torch.arange(3), sampling=Sampling(DDPMSampler(20), w, 3))

    full, cond = draw(1.5, None), draw(0.0, None)
    assert torch.equal(draw(1.5, (0.0, 1e9)), full) and torch.equal(draw(1.5, (1e8, 1e9)), cond)
    part = draw(1.5, (0.3, 3.0))
    assert not torch.allclose(part, full, atol=1e-4) and not torch.allclose(part, cond, atol=1e-4)
    assert torch.equal(draw(1.5, (0.3, 3.0)), part)  # seeded


def test_sample_is_reproducible_and_batch_independent():
    m = DDPMModule(_perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16)), num_timesteps=50).eval()
    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling

    cfg = Sampling(DDPMSampler(10), seed=3)
    a = m.generate(torch.arange(4), sampling=cfg)
    b = m.generate(torch.arange(2, 4), sampling=cfg)
    assert torch.allclose(a[2:], b, atol=1e-5)
    assert a.min() >= 0 and a.max() <= 1  # clipped to value_range


# ---- autoguidance: guidance by a weaker version of the model ------------------------------------

def _guide_file(tmp_path, scale: float = 0.05, **changes):
    """The stored tiny DDPM checkpoint with its denoiser perturbed (a different, "weaker" model), saved anew."""
    from conftest import ROOT

    ckpt = torch.load(ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt", map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(7)
    ckpt["state_dict"] = {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    ckpt["hyper_parameters"].update(changes)
    path = tmp_path / "guide.ckpt"
    torch.save(ckpt, path)
    return path


def _tiny_model(**kwargs) -> DDPMModule:
    from conftest import ROOT

    return DDPMModule.load_from_checkpoint(ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt", map_location="cpu",
                                           weights_only=True, **kwargs).eval()


def test_autoguidance_is_the_cfg_form_with_the_guide_in_place_of_the_unconditional_branch(tmp_path):
    from diffusion.guidance import autoguidance

    good, bad = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(autoguidance(good, bad, 1.5), 2.5 * good - 1.5 * bad) and torch.equal(autoguidance(good, bad, 0), good)
    path = _guide_file(tmp_path)
    m = _tiny_model(guide_checkpoint=str(path))
    guide = _tiny_model()
    guide.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([3, 20, 40]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        expected = 2.5 * m(x, t, y) - 1.5 * guide(x, t, y)
        assert torch.allclose(m.guided_prediction(x, t, y, 1.5), expected, atol=1e-5)
        assert not torch.allclose(expected, 2.5 * m(x, t, y) - 1.5 * m(x, t, torch.full_like(y, -1)), atol=1e-3)
        assert torch.equal(m.guided_prediction(x, t, y, 0.0), m(x, t, y))


def test_a_model_guided_by_itself_is_the_conditional_model_and_the_guide_is_not_in_its_state(tmp_path):
    """(1 + w)·D − w·D = D: guiding by an identical copy changes nothing (to rounding); the guide stays out of the
    state_dict and parameters, so checkpoints and optimizers never see it."""
    from conftest import ROOT

    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling
    from metrics.provenance import sha256_of

    same = str(ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt")
    m, plain = _tiny_model(guide_checkpoint=same), _tiny_model()
    assert m.state_dict().keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in plain.parameters())
    cfg = Sampling(DDPMSampler(10), 2.0, seed=5)
    conditional = plain.generate(torch.arange(4), torch.arange(4), sampling=Sampling(DDPMSampler(10), 0.0, seed=5))
    assert torch.allclose(m.generate(torch.arange(4), torch.arange(4), sampling=cfg), conditional, atol=1e-4)
    assert m.provenance()["guide"] == {"checkpoint": same, "sha256": sha256_of(same)}


def test_autoguided_sampling_is_seeded_and_respects_the_interval(tmp_path):
    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling

    m = _tiny_model(guide_checkpoint=str(_guide_file(tmp_path)))

    def draw(w, interval=None):
        m.guidance_interval = interval
        return m.generate(torch.arange(4), torch.arange(4), sampling=Sampling(DDPMSampler(10), w, seed=5))

    guided, conditional = draw(1.5), draw(0.0)
    assert not torch.allclose(guided, conditional, atol=1e-3) and torch.equal(draw(1.5), guided)
    assert torch.equal(draw(1.5, (1e8, 1e9)), conditional)  # no step inside the interval: no guide pass


def test_an_unconditional_model_can_be_autoguided(tmp_path):
    import copy

    un = TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0)
    with pytest.raises(ValueError, match="guide_checkpoint"):
        DDPMModule(un, num_timesteps=50, beta_end=0.2, image_size=16, value_range=(-1.0, 1.0), guidance_scale=2.0)
    guide_file = _guide_file(tmp_path)
    ckpt = torch.load(guide_file, map_location="cpu", weights_only=True)
    hp = copy.deepcopy(ckpt["hyper_parameters"])
    hp["denoiser"]["init_args"]["num_classes"] = 0
    guide_net = _perturbed(TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0))
    ckpt["hyper_parameters"] = hp
    ckpt["state_dict"] = {f"denoiser.{k}": v for k, v in guide_net.state_dict().items()}
    torch.save(ckpt, guide_file)
    m = DDPMModule(_perturbed(un), num_timesteps=50, beta_end=0.2, image_size=16, value_range=(-1.0, 1.0),
                   guidance_scale=2.0, guide_checkpoint=str(guide_file)).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 30])
    with torch.no_grad():
        assert torch.allclose(m.guided_prediction(x, t, None, 2.0), 3 * m(x, t) - 2 * guide_net(x, t), atol=1e-5)
        # a class-conditional model guided by an unconditional network: the guide gets no labels
        cond = _tiny_model(guide_checkpoint=str(guide_file))
        y = torch.tensor([3, 7])
        assert torch.allclose(cond.guided_prediction(x, t, y, 1.5), 2.5 * cond(x, t, y) - 1.5 * guide_net(x, t), atol=1e-5)


@pytest.mark.parametrize("change,message", [
    ({"num_timesteps": 40}, "noise process"),
    ({"beta_end": 0.03}, "noise process"),
    ({"prediction_type": "v_prediction"}, "prediction_type"),
    ({"value_range": [0.0, 1.0]}, "value_range"),
])
def test_a_guide_from_other_data_or_another_process_is_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        _tiny_model(guide_checkpoint=str(_guide_file(tmp_path, **change)))


def test_a_guide_trained_on_another_data_set_is_refused_at_setup(tmp_path):
    m = _tiny_model(guide_checkpoint=str(_guide_file(tmp_path)))
    assert m.guide_data == "datamodules.SyntheticDataModule"
    m.check_guide_data(type("SyntheticDataModule", (), {})())
    with pytest.raises(ValueError, match="trained on datamodules.SyntheticDataModule.*FashionMNISTDataModule"):
        m.check_guide_data(type("FashionMNISTDataModule", (), {})())


def test_a_missing_or_foreign_guide_checkpoint_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="guide_checkpoint"):
        _tiny_model(guide_checkpoint=str(tmp_path / "nope.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="guide_checkpoint.*not a readable checkpoint"):
        _tiny_model(guide_checkpoint=str(tmp_path / "junk.ckpt"))
