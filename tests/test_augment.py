"""Batch augmentation (datamodules.augment) and the legibility judge built with it (sweeps/metrics/judge.yaml)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT, SWEEPS, run_cli

from datamodules import RandomAffine
from datamodules.augment import affine

TINY_FEATURES = ROOT / "tests" / "configs" / "tiny_features.yaml"


def test_affine_matches_exact_rotations_and_integer_shifts():
    torch.manual_seed(0)
    x, ones, still = torch.rand(3, 2, 8, 8), torch.ones(3), torch.zeros(3, 2)
    assert torch.allclose(affine(x, 0 * ones, ones, still), x, atol=1e-6)
    assert torch.allclose(affine(x, math.pi / 2 * ones, ones, still), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    wide = torch.rand(2, 1, 6, 10)  # non-square: a half turn is still exact
    assert torch.allclose(affine(wide, math.pi * torch.ones(2), torch.ones(2), torch.zeros(2, 2)),
                          torch.rot90(wide, 2, (-2, -1)), atol=1e-5)
    moved = affine(x, 0 * ones, ones, torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    assert torch.allclose(moved[0, :, :, 1:], x[0, :, :, :-1], atol=1e-6) and moved[0, :, :, 0].abs().max() == 0
    assert torch.allclose(moved[1, :, 2:], x[1, :, :-2], atol=1e-6) and moved[1, :, :2].abs().max() == 0
    assert torch.allclose(moved[2, :, :-1, :-1], x[2, :, 1:, 1:], atol=1e-6)
    shifted = affine(wide, torch.zeros(2), torch.ones(2), torch.tensor([[3.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(shifted[0, :, 1:, 3:], wide[0, :, :-1, :-3], atol=1e-6)


def test_affine_scale_keeps_the_centre_and_zooms():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4], x[..., 4, 6] = 1.0, 1.0  # the centre pixel and one 2 px to its right
    zoomed = affine(x, torch.zeros(1), torch.full((1,), 2.0), torch.zeros(1, 2))
    assert zoomed[0, 0, 4, 4] == pytest.approx(1.0, abs=1e-6)  # the centre stays
    assert zoomed[0, 0, 4, 8] == pytest.approx(1.0, abs=1e-6)  # 2 px from the centre lands 4 px away


def test_random_affine_is_seeded_per_image_and_off_in_eval():
    x = torch.rand(4, 1, 12, 12)
    aug = RandomAffine(degrees=20, translate=0.1, scale=(0.8, 1.2))
    a = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))
    same = aug(x[:1].expand(4, -1, -1, -1), torch.Generator().manual_seed(1))
    assert not torch.allclose(same[0], same[1])  # each image draws its own transform
    assert torch.equal(aug.eval()(x), x)


@pytest.mark.parametrize("kwargs", [{"degrees": -1.0}, {"translate": 0.5}, {"scale": (1.2, 0.9)}, {"scale": (0.0, 1.0)}])
def test_random_affine_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="RandomAffine needs"):
        RandomAffine(**kwargs)


def test_classifier_augments_training_batches_only_and_fills_with_the_low_value():
    """The uncovered border of a shifted image is the data's low value (-1 here), not 0; validation sees x as is."""
    from lightning_modules import FeatureClassifierModule

    module = FeatureClassifierModule(image_size=16, width=8, feature_dim=16, value_range=(-1.0, 1.0),
                                     augment=RandomAffine(degrees=0.0, translate=0.45, scale=(1.0, 1.0)))
    seen: list[torch.Tensor] = []
    module.net.register_forward_pre_hook(lambda net, inputs: seen.append(inputs[0].detach().clone()))
    x, y = torch.ones(8, 1, 16, 16), torch.zeros(8, dtype=torch.long)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="self.log"):  # no trainer here: logging is skipped
        module._step((x, y), "train")
        module._step((x, y), "val")
    train, val = seen
    assert train.min() == -1.0 and train.max() <= 1.0 and (train == -1.0).float().mean() > 0.05
    assert torch.equal(val, x)


def test_judge_overlay_trains_an_augmented_classifier_with_a_cosine_decay():
    """sweeps/metrics/judge.yaml composed on the tiny feature config: no label smoothing, RandomAffine, the LR annealed
    to its minimum by the last step, and a checkpoint that the metrics' ClassifierFeatures loads."""
    from metrics import ClassifierFeatures

    cli = run_cli("fit", "--config", str(TINY_FEATURES), "--config", str(SWEEPS / "metrics" / "judge.yaml"),
                  "--trainer.max_epochs", "6", "--model.init_args.lr_schedule.warmup_steps", "5")
    module = cli.model
    assert module.label_smoothing == 0.0 and isinstance(module.augment, RandomAffine)
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(module.lr_schedule.min_lr, rel=0.05)
    assert cli.trainer.callback_metrics["val/acc"] > 0.5
    judge = ClassifierFeatures("features/checkpoints/last.ckpt")
    assert judge.describe()["num_features"] == 16
