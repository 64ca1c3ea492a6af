"""COIGAN networks and losses (seed 004 §2-3): shapes, parameter counts, closed forms, lazy schedules."""

import math

import pytest
import torch
import torchvision
from torch import nn

from networks.ffc import FFCResnetBlock, FFCResNetGenerator, FourierUnit
from networks.gan_losses import (
    COIGANLossWeights,
    LazyR1,
    PathLengthRegularizer,
    ResNet50DilatedEncoder,
    SmoothMaskedL1,
    SmoothMaskedPerceptual,
    combine_losses,
    d_logistic_loss,
    g_nonsaturating_loss,
    lazy_turn,
    r1_penalty,
    smooth_weight_map,
)
from networks.swagan import SWAGANDiscriminator, blur_downsample, haar_dwt, haar_iwt, minibatch_stddev


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- FFC generator


@pytest.mark.parametrize("size,n_classes,out_act", [(32, 4, "sigmoid"), (64, 1, "tanh")])
def test_ffc_generator_output_shape_and_range(size, n_classes, out_act):
    torch.manual_seed(0)
    g = FFCResNetGenerator(input_nc=3 + n_classes, ngf=8, n_downsampling=3, n_blocks=2, out_activation=out_act)
    y = g(torch.rand(2, 3 + n_classes, size, size))
    assert y.shape == (2, 3, size, size)
    if out_act == "sigmoid":
        assert 0 <= y.min() and y.max() <= 1
    if out_act == "tanh":
        assert -1 <= y.min() and y.max() <= 1


def test_ffc_generator_options_and_errors():
    x = torch.rand(2, 5, 32, 32)
    for kw in (dict(enable_lfu=True, ratio_g=0.5), dict(norm="none", padding_type="zeros", upsample="bilinear")):
        assert FFCResNetGenerator(input_nc=5, ngf=8, n_blocks=1, **kw)(x).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        FFCResNetGenerator(input_nc=5, ngf=8, n_blocks=1)(torch.rand(1, 5, 36, 36))
    with pytest.raises(ValueError, match="out_activation"):
        FFCResNetGenerator(out_activation="relu")


def test_ffc_generator_parameter_count_matches_seed():
    """Seed config (7 in, ngf 64, 3 down, 8 blocks, α 0.75): 24,399,683 ≈ the spec's "roughly 24.4 M"."""
    g = FFCResNetGenerator(input_nc=7, output_nc=3, ngf=64, n_downsampling=3, n_blocks=8, ratio_g=0.75)
    assert n_params(g) == 24_399_683
    assert abs(n_params(g) / 24.4e6 - 1) < 0.001
    block = g.model[5]
    assert isinstance(block, FFCResnetBlock)
    ffc = block.conv1.ffc
    assert (ffc.in_cl, ffc.in_cg, ffc.out_cl, ffc.out_cg) == (128, 384, 128, 384)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 6, 7)])
def test_fourier_unit_with_identity_conv_is_identity(shape):
    fu = FourierUnit(shape[1], shape[1], norm="none", activation=False)
    with torch.no_grad():
        fu.conv.weight.copy_(torch.eye(2 * shape[1])[:, :, None, None])
    x = torch.randn(shape)
    assert torch.allclose(fu(x), x, atol=1e-5)


def test_ffc_residual_block_adds_its_input():
    """With every norm output zeroed the two FFC layers give 0, so the block returns its input (a sum)."""
    block = FFCResnetBlock(16, ratio_g=0.75)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    x_l, x_g = torch.randn(2, 4, 8, 8), torch.randn(2, 12, 8, 8)
    y_l, y_g = block((x_l, x_g))
    assert torch.equal(y_l, x_l) and torch.equal(y_g, x_g)


# ---------------------------------------------------------------- SWAGAN discriminator


@pytest.mark.parametrize("channels", [12, 3])
def test_swagan_output_is_one_logit_per_sample(channels):
    torch.manual_seed(0)
    d = SWAGANDiscriminator(size=64, input_channels=channels, channel_multiplier=1, channel_base=2048,
                            low_res_channels=32)  # narrow, so the 64×64 forward is quick on CPU
    logits, feats = d(torch.randn(4, channels, 64, 64), return_features=True)
    assert logits.shape == (4, 1)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4, 4]
    assert d(torch.randn(6, channels, 64, 64)).shape == (6, 1)  # batch not divisible by the group of 4
    with pytest.raises(ValueError, match="expected"):
        d(torch.randn(4, channels + 1, 64, 64))


def test_r1_backpropagates_through_swagan():
    """Double backward through the pure-PyTorch blur and Haar ops reaches every weight but the last bias."""
    d = SWAGANDiscriminator(size=32, input_channels=3, channel_multiplier=1, channel_base=1024, low_res_channels=16)
    real = torch.randn(2, 3, 32, 32, requires_grad=True)
    penalty = LazyR1()(d(real), real)
    assert penalty > 0
    penalty.backward()
    no_grad = [name for name, p in d.named_parameters() if p.grad is None]
    assert no_grad == ["final_linear.1.bias"]  # ∇ₓD does not depend on it (hence the seed's 0·D(real) trick)


def test_swagan_parameter_counts_at_seed_settings():
    """Size 256, channel multiplier 3 (the spec states no count; these are the measured values)."""
    assert n_params(SWAGANDiscriminator(size=256, input_channels=12, channel_multiplier=3)) == 32_529_537
    assert n_params(SWAGANDiscriminator(size=256, input_channels=3, channel_multiplier=3)) == 31_554_945
    d = SWAGANDiscriminator(size=256, input_channels=12, channel_multiplier=3)
    assert [c.conv2.conv.weight.shape[:2] for c in d.convs] == [(768, 192)] + [(512, 768)] + [(512, 512)] * 3


def test_haar_dwt_then_iwt_is_identity_and_orthonormal():
    x = torch.randn(2, 3, 16, 8)
    w = haar_dwt(x)
    assert w.shape == (2, 12, 8, 4)
    assert torch.allclose(haar_iwt(w), x, atol=1e-6)
    assert torch.allclose(w.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # orthonormal: energy preserved
    const = haar_dwt(torch.ones(1, 1, 4, 4))
    assert torch.allclose(const[:, 0], torch.full((1, 2, 2), 2.0)) and const[:, 1:].abs().max() == 0


def test_blur_downsample_keeps_constants_and_halves_size():
    y = blur_downsample((1, 3, 3, 1))(torch.ones(1, 2, 16, 16))
    assert y.shape == (1, 2, 8, 8)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.ones(1, 2, 6, 6))  # zero padding only dims the border


def test_minibatch_stddev_feature():
    x = torch.randn(8, 3, 2, 2)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 4, 2, 2)
    # sample i is grouped with i + 2, i + 4, i + 6 (StyleGAN2's view(G, -1, ...))
    expected = x.view(4, 2, 3, 2, 2).var(0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
    assert torch.allclose(y[:2, 3, 0, 0], expected)
    assert torch.allclose(y[2:4, 3, 0, 0], expected)


# ---------------------------------------------------------------- adversarial losses


def test_softplus_losses_match_closed_forms():
    real, fake = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([0.0, -3.0, 1.5])
    assert torch.isclose(g_nonsaturating_loss(torch.zeros(4)), torch.tensor(math.log(2)))
    assert torch.isclose(d_logistic_loss(torch.zeros(4), torch.zeros(4)), torch.tensor(2 * math.log(2)))
    assert torch.allclose(g_nonsaturating_loss(fake), -torch.log(torch.sigmoid(fake)).mean())
    expected = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert torch.allclose(d_logistic_loss(real, fake), expected)


# ---------------------------------------------------------------- R1 and path length


class Linear1(nn.Module):
    """D(x) = Σ w ⊙ x per sample, so ∇_x D = w for every sample and R1 = |w|²."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[[1.0, -2.0], [0.5, 3.0]]]))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def test_r1_penalty_equals_hand_computed_gradient_norm():
    d = Linear1()
    x = torch.randn(5, 1, 2, 2, requires_grad=True)
    penalty = r1_penalty(d(x), x)
    w2 = d.w.detach().pow(2).sum()  # 1 + 4 + 0.25 + 9
    assert torch.isclose(penalty, w2)
    penalty.backward()  # create_graph: d|w|²/dw = 2w
    assert torch.allclose(d.w.grad, 2 * d.w.detach())
    reg = LazyR1(weight=3.0, interval=16)
    x2 = torch.randn(2, 1, 2, 2, requires_grad=True)
    assert torch.isclose(reg(d(x2), x2), 3 * 16 * w2)  # no ½ factor (seed 004 §8.6)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(d(torch.randn(2, 1, 2, 2)), torch.randn(2, 1, 2, 2))


def test_lazy_schedule_follows_the_turn_counter():
    r1 = LazyR1(weight=3.0, interval=16)
    assert [t for t in range(50) if r1.applies(t)] == [0, 16, 32, 48]
    pl = PathLengthRegularizer(interval=4)
    assert [t for t in range(10) if pl.applies(t)] == [0, 4, 8]
    assert not any(LazyR1(weight=0.0).applies(t) for t in range(40))
    assert not any(lazy_turn(t, interval=0) for t in range(5))


class Scale(nn.Module):
    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return self.a * x[:, :3]


def test_path_length_ema_update_on_toy_tensors():
    """G(x) = a·x[:, :3] with y = 1/√(HW): J_Gᵀy = a·y on the first 3 of C channels, 0 on the rest."""
    b, c, h, w, a = 2, 4, 4, 8, 2.0
    g, reg = Scale(a), PathLengthRegularizer(weight=5.0, interval=4, decay=0.01)
    noise = torch.full((b, 3, h, w), 1 / math.sqrt(h * w))
    # seed reduction: sqrt(mean_C Σ_H g²) = sqrt((3/c) · a²/(h·w) · h) for every (sample, column)
    length = math.sqrt(3 / c * a**2 / w)
    ema = 0.0
    for _ in range(3):
        x = torch.rand(b, c, h, w, requires_grad=True)
        loss, lengths = reg(g(x), x, noise=noise)
        assert lengths.shape == (b, w) and torch.allclose(lengths, torch.full((b, w), length))
        ema += 0.01 * (length - ema)
        assert math.isclose(reg.mean_path_length.item(), ema, rel_tol=1e-5)
        assert math.isclose(loss.item(), 5 * 4 * (length - ema) ** 2, rel_tol=1e-4)
    loss.backward()
    assert g.a.grad is not None and g.a.grad.abs() > 0
    assert "mean_path_length" in reg.state_dict()
    per_sample = PathLengthRegularizer(reduction="sample")
    x = torch.rand(b, c, h, w, requires_grad=True)
    _, lengths = per_sample(g(x), x, noise=noise)
    assert torch.allclose(lengths, torch.full((b,), a * math.sqrt(3.0)))


def test_path_length_backpropagates_through_the_ffc_generator():
    """Double backward through rfftn/irfftn; the seed's reduction gives one length per (sample, column)."""
    torch.manual_seed(0)
    g = FFCResNetGenerator(input_nc=7, ngf=4, n_blocks=1)
    reg = PathLengthRegularizer()
    gen_in = torch.rand(2, 7, 32, 32, requires_grad=True)
    loss, lengths = reg(g(gen_in), gen_in)
    assert lengths.shape == (2, 32) and reg.mean_path_length > 0
    loss.backward()
    assert all(p.grad is not None for p in g.parameters() if p.requires_grad)


# ---------------------------------------------------------------- smooth-masked losses


def square_masks(n_classes: int = 2, size: int = 32) -> torch.Tensor:
    masks = torch.zeros(2, n_classes, size, size)
    masks[:, 0, 8:20, 8:20] = 1
    masks[:, -1, 24:30, 2:6] = 1
    return masks


def test_smooth_weight_map_values():
    masks = torch.zeros(1, 2, 64, 64)
    masks[:, 0, 10:40, 10:40] = 1
    masks[:, 1, 50:60, 50:60] = 1
    w = smooth_weight_map(masks, kernel_size=7, obj_weight=0.1, bg_weight=1.0)
    assert w.shape == (1, 1, 64, 64)
    assert torch.isclose(w[0, 0, 25, 25], torch.tensor(0.1)) and torch.isclose(w[0, 0, 0, 63], torch.tensor(1.0))
    assert torch.isclose(w[0, 0, 55, 55], torch.tensor(0.1))  # second class counts too
    assert 0.1 < w[0, 0, 10, 25] < 1.0 and 0.1 < w[0, 0, 9, 25] < 1.0  # a ramp across the edge
    union = masks.sum(1, keepdim=True)
    assert torch.allclose(smooth_weight_map(masks, kernel_size=1), 0.1 * union + (1 - union))  # k = 1: no smoothing


def test_smooth_masked_l1_zero_for_identical_and_positive_for_noise_in_zero_weight_mask():
    torch.manual_seed(0)
    masks = square_masks()
    base = torch.rand(2, 3, 32, 32)
    union = masks.sum(1, keepdim=True)
    noisy = base + union * torch.randn_like(base)  # changes only inside the masks
    assert SmoothMaskedL1(obj_weight=0.0, bg_weight=1.0, kernel_size=5)(base, base, masks) == 0
    assert SmoothMaskedL1(obj_weight=0.0, bg_weight=1.0, kernel_size=5)(noisy, base, masks) > 0
    assert SmoothMaskedL1(obj_weight=0.0, bg_weight=1.0, kernel_size=1)(noisy, base, masks) == 0  # unsmoothed: free
    no_masks = torch.zeros(2, 2, 32, 32)
    expected = (noisy - base).abs().sum(1).mean()  # Σ W counts one channel (seed 004 §3.4)
    assert torch.isclose(SmoothMaskedL1()(noisy, base, no_masks), expected)


@pytest.fixture(scope="module")
def random_alexnet_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return str(path)


def test_perceptual_loss_without_weights_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth.*weights_path"):
        SmoothMaskedPerceptual(net="alex", weights_path=None)
    with pytest.raises(FileNotFoundError, match="encoder_epoch_20.pth.*weights_path"):
        SmoothMaskedPerceptual(net="resnet50dilated", weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="lpips backbone"):
        SmoothMaskedPerceptual(net="resnet18", weights_path="x")


@pytest.mark.parametrize("calibrated", [True, False])
def test_smooth_masked_perceptual_lpips_backbone(random_alexnet_weights, calibrated):
    torch.manual_seed(0)
    loss = SmoothMaskedPerceptual(net="alex", weights_path=random_alexnet_weights, obj_weight=0.0, kernel_size=5,
                                  lpips_calibrated=calibrated)
    state = torch.load(random_alexnet_weights, weights_only=True)
    assert torch.equal(loss.features.net.slice1[0].weight, state["features.0.weight"])  # loaded, not random
    loss.train()
    assert not loss.features.training
    masks = square_masks(size=64)
    base = torch.rand(2, 3, 64, 64)
    pred = (base + masks.sum(1, keepdim=True) * torch.randn_like(base)).clamp(0, 1).requires_grad_(True)
    assert loss(base, base, masks) == 0
    value = loss(pred, base, masks)
    assert value > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())


def test_smooth_masked_perceptual_resnet_pl_backbone(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "encoder_epoch_20.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ResNet50DilatedEncoder().state_dict().items()},
               path)  # fp16 halves the file; load_state_dict casts back
    loss = SmoothMaskedPerceptual(net="resnet50dilated", weights_path=str(path))
    feats = loss.features(torch.rand(1, 3, 16, 16))  # output stride 4, 8, 8, 8 (layers 3-4 dilated)
    assert [f.shape[1:] for f in feats] == [(256, 4, 4), (512, 2, 2), (1024, 2, 2), (2048, 2, 2)]
    masks = square_masks()[:1]
    assert loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), masks) > 0


# ---------------------------------------------------------------- weights


def test_default_weights_reproduce_published_run_and_combine():
    w = COIGANLossWeights()
    assert (w.adversarial, w.ref_adversarial, w.l1_smooth, w.perceptual_smooth) == (20, 8, 5, 0.3)
    assert (w.d_logistic, w.ref_d_logistic, w.r1, w.r1_interval, w.ref_r1, w.ref_r1_interval) == (5, 5, 3, 16, 3, 16)
    assert (w.path_length, w.path_length_interval, w.path_length_decay) == (5, 4, 0.01)
    assert (w.obj_weight, w.bg_weight, w.smooth_kernel_size, w.l1, w.reduction) == (0.1, 1.0, 31, 0, "sum")
    terms = {"adversarial": torch.tensor(1.0), "l1_smooth": torch.tensor(2.0), "l1": torch.tensor(100.0)}
    weights = {"adversarial": w.adversarial, "l1_smooth": w.l1_smooth, "l1": w.l1}
    assert combine_losses(terms, weights) == 20 + 10  # l1 has weight 0: skipped
    assert combine_losses(terms, weights, reduction="mean") == 15
    with pytest.raises(ValueError, match="positive weight"):
        combine_losses(terms, {})
