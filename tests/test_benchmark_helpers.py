"""The benchmark scripts' helpers: the sample cache (drawn once, re-scored, refused when settings differ) and the timed step."""

from __future__ import annotations

import pytest
import torch
from conftest import SWEEPS

from benchmarks.common import cached_samples


def test_cached_samples_draws_once_and_refuses_other_settings(tmp_path):
    calls = []

    def draw():
        calls.append(1)
        return torch.full((4, 1, 2, 2), float(len(calls))), 100.0

    path, settings = tmp_path / "row.pt", {"sampling": {"steps": 100, "guidance_scale": 1.0}, "weights": "ema"}
    first, nfe, seconds = cached_samples(path, settings, draw)
    again, nfe_again, seconds_again = cached_samples(path, settings, draw)
    assert len(calls) == 1 and torch.equal(first, again) and (nfe, seconds) == (nfe_again, seconds_again) == (100.0, seconds)
    with pytest.raises(SystemExit, match="holds samples drawn with"):
        cached_samples(path, {**settings, "weights": "raw"}, draw)
    cached_samples(None, settings, draw)  # no file: draws every time
    assert len(calls) == 2


def test_sample_settings_keys_a_guide_by_hash_and_leave_old_keys_unchanged(tmp_path):
    """Rows drawn with an autoguidance guide are keyed by its hash, so a cached CFG row is never reused for them (or
    for another guide), while settings without a guide keep the shape older saved files have."""
    from benchmarks.common import sample_settings
    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling

    cfg = Sampling(DDPMSampler(100), 1.0, seed=0)
    plain = sample_settings(cfg, True, None, "ema")
    assert set(plain) == {"sampling", "clip_x0", "dynamic_threshold", "weights"}
    guided = sample_settings(cfg, True, None, "ema", guide_sha256="ab" * 32)
    assert guided == {**plain, "guide_sha256": "ab" * 32}
    path = tmp_path / "row.pt"
    cached_samples(path, plain, lambda: (torch.zeros(2, 1, 2, 2), 100.0))
    with pytest.raises(SystemExit, match="holds samples drawn with"):
        cached_samples(path, guided, lambda: (torch.ones(2, 1, 2, 2), 100.0))


def test_a_cached_cfg_row_matches_with_or_without_the_autoguide_field(tmp_path):
    """Without a guide, autoguide false and unset draw the same samples, so files from before the field still serve;
    a guided row never reuses them."""
    from benchmarks.common import sample_settings
    from diffusion import DDPMSampler
    from lightning_modules.contract import Sampling

    old = sample_settings(Sampling(DDPMSampler(100), 1.0, seed=0), True, None, "ema")
    new = sample_settings(Sampling(DDPMSampler(100), 1.0, seed=0, autoguide=False), True, None, "ema")
    assert "autoguide" not in old["sampling"] and new["sampling"]["autoguide"] is False
    path = tmp_path / "row.pt"
    first, _, _ = cached_samples(path, old, lambda: (torch.zeros(2, 1, 2, 2), 100.0))
    again, _, _ = cached_samples(path, new, lambda: (torch.ones(2, 1, 2, 2), 100.0))
    assert torch.equal(first, again)
    guided = sample_settings(Sampling(DDPMSampler(100), 1.0, seed=0, autoguide=True), True, None, "ema",
                             guide_sha256="ab" * 32)
    with pytest.raises(SystemExit, match="holds samples drawn with"):
        cached_samples(path, guided, lambda: (torch.ones(2, 1, 2, 2), 100.0))


def test_the_throughput_baseline_is_the_recipes_unet_and_its_training_step_runs():
    """The timing scripts compare against the network users train (read from the model block, as the CLI builds
    it), and the bare training step it times runs against today's DDPMModule (it broke once when the module's
    noise process was renamed)."""
    from benchmarks.ddpm_speed import bare_loop, make_net, recipe_unet_args
    from cli import cli_main
    from networks import MuonAdamW

    cli = cli_main(["--config", str(SWEEPS / "ddpm_mnist_cpu.yaml"), "--trainer.logger", "false"], run=False)
    recipe = cli.model.denoiser
    ours = make_net(recipe_unet_args(), "cpu")
    assert [p.shape for p in ours.parameters()] == [p.shape for p in recipe.parameters()]
    tiny = {**recipe_unet_args(), "channels": [8, 8, 16]}
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(8, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (8,), generator=g))
    for ema in (False, True):  # with the recipe's EMA update too
        images_per_s = bare_loop(tiny, data, steps=2, warmup=2, device="cpu", ema=ema)
        assert images_per_s > 0 and images_per_s == images_per_s

    class CountingMuon(MuonAdamW):  # an --optimizer-variant's class steps every iteration
        steps = 0

        def step(self, closure=None):
            CountingMuon.steps += 1
            return super().step(closure)

    bare_loop(tiny, data, steps=2, warmup=2, device="cpu", optimizer=CountingMuon)
    assert CountingMuon.steps == 4
