"""Loss weightings: Min-SNR-γ and EDM's λ(σ) against their closed forms in every parameterisation, and Min-SNR
in training."""

import pytest
import torch
from conftest import TINY, run_cli

from diffusion import DiscreteVPProcess, EDMWeighting, MinSNR
from diffusion.sde import VESDE

X0_WEIGHTS = {  # closed forms in x_0 units, as functions of SNR = ᾱ / (1 − ᾱ)
    "min_snr": (MinSNR(5.0), lambda snr: snr.clamp(max=5.0)),
    # EDM Eq. 8: λ(σ) = (σ² + σ_d²) / (σ σ_d)² with σ² = 1 / SNR, σ_d = 0.5
    "edm": (EDMWeighting(0.5), lambda snr: (1 / snr + 0.25) / (0.25 / snr)),
}


@pytest.mark.parametrize("weighting", sorted(X0_WEIGHTS))
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_weighting_equals_its_x0_weight_times_x0_error_in_every_parameterisation(weighting, prediction_type):
    """w_target · ‖target error‖² must equal w_x0(SNR) · ‖x̂_0 − x_0‖² whatever the network predicts."""
    loss_weighting, x0_weight = X0_WEIGHTS[weighting]
    torch.manual_seed(0)
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    t = torch.tensor([0, 10, 50, 200, 600, 999])
    x0, noise, out = (torch.randn(6, 1, 4, 4) for _ in range(3))
    xt = process.add_noise(x0, noise, t)
    target = process.target(prediction_type, x0, noise, t)
    x0_hat, _ = process.to_x0_eps(out, xt, t, prediction_type)
    weighted = loss_weighting(process, t, prediction_type) * (out - target).square().flatten(1).mean(1)
    ab = process.alpha_bars[t].double()
    expected = x0_weight(ab / (1 - ab)) * (x0_hat - x0).double().square().flatten(1).mean(1)
    torch.testing.assert_close(weighted.double(), expected, rtol=1e-4, atol=1e-6)


def test_min_snr_epsilon_weights_are_one_for_noisy_steps_and_gamma_over_snr_for_clean_ones():
    process = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)
    t = torch.arange(1000)
    w = MinSNR(5.0)(process, t, "epsilon")
    s = process.snr(t)
    torch.testing.assert_close(w, torch.where(s > 5, 5 / s, torch.ones_like(s)))
    assert w[0] < 1e-3 and w[-1] == 1.0


def test_snr_of_a_continuous_ve_process_is_one_over_sigma_squared():
    process = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.0, 0.5, 1.0])
    sigma = 0.01 * (50.0 / 0.01) ** t
    torch.testing.assert_close(process.snr(t), 1 / sigma.square(), rtol=1e-4, atol=0)


def test_min_snr_rejects_a_non_positive_gamma():
    with pytest.raises(ValueError, match="gamma must be > 0"):
        MinSNR(0.0)


def test_min_snr_by_class_path_weights_the_training_loss_only():
    """Set from the command line, the weighting changes the training loss, validation stays L_simple, and a
    checkpoint rebuilds it."""
    cli = run_cli("fit", "--config", str(TINY), "--trainer.limit_val_batches", "1",
                  "--model.init_args.loss_weighting", "diffusion.MinSNR", "--model.init_args.loss_weighting.gamma", "2",
                  "--model.init_args.p_uncond", "0")
    module = cli.model
    assert isinstance(module.loss_weighting, MinSNR) and module.loss_weighting.gamma == 2.0
    x0 = torch.rand(8, *module.image_shape) * 2 - 1
    y = torch.arange(8) % module.num_classes if module.num_classes else None
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        module.eval()
        plain = module.diffusion_loss(x0, y, generator=g())
        module.train()
        weighted = module.diffusion_loss(x0, y, generator=g())
        module.loss_weighting = None
        unweighted_train = module.diffusion_loss(x0, y, generator=g())
    assert torch.isclose(plain, unweighted_train)
    assert weighted < plain

    from lightning_modules import DDPMModule

    reloaded = DDPMModule.load_from_checkpoint("run/checkpoints/last.ckpt", weights_only=True)
    assert isinstance(reloaded.loss_weighting, MinSNR) and reloaded.loss_weighting.gamma == 2.0
