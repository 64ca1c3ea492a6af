"""callbacks.GuideSnapshot: autoguidance by the run's own early EMA weights, taken inside the run."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, run_cli

from metrics.provenance import sha256_of


def _overlay(name: str, snapshot: dict | None, dirpath: str, first: str = "ema") -> str:
    """tiny_ddpm.yaml with a GuideSnapshot (None: without one) and checkpoints in ``dirpath``, as a whole config
    (jsonargparse merges a callbacks list item by item, which would hand ModelCheckpoint's filename to the next
    class in its place)."""
    ema = {"class_path": "callbacks.EMA", "init_args": {"decay": 0.9}}
    callbacks = [ema, {"class_path": "callbacks.GuideSnapshot", "init_args": snapshot}] if snapshot is not None else [ema]
    if first != "ema":
        callbacks.reverse()
    callbacks += [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": dirpath, "filename": "epoch_{epoch:03d}", "auto_insert_metric_name": False,
                       "save_last": True, "save_top_k": -1}},
        {"class_path": "callbacks.SampleGrid",
         "init_args": {"num_samples": 4, "sampling": {"sampler": {"class_path": "diffusion.DDIMSampler",
                                                                  "init_args": {"steps": 3}}}}}]
    config = yaml.safe_load(TINY.read_text())
    config["trainer"].update(callbacks=callbacks, default_root_dir=dirpath.rsplit("/", 1)[0])
    with open(name, "w") as f:
        yaml.safe_dump(config, f)
    return name


def _state(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_snapshot_is_the_ema_of_its_step_guides_the_rest_and_leaves_training_unchanged():
    """The snapshot at iteration 2 holds the same EMA weights as a run stopped after 2 iterations; from then on the
    module samples autoguided; and the final weights equal those of a run without the callback (the EMA swap of the
    save is undone, and nothing the callback does reaches training)."""
    cli = run_cli("fit", "--config", _overlay("snap.yaml", {"at_step": 2}, "run/checkpoints"))
    guide = "run/checkpoints/guide.ckpt"
    assert cli.model.guide_checkpoint == guide and cli.model.provenance()["guide"]["sha256"] == sha256_of(guide)
    assert torch.load(guide, map_location="cpu", weights_only=True)["global_step"] == 2
    assert cli.model.hparams.guide_checkpoint is None  # the snapshot is the callback's; the config never names it
    assert "_guide" not in "".join(_state("run/checkpoints/last.ckpt"))

    run_cli("fit", "--config", _overlay("two.yaml", None, "two/checkpoints"),
            "--trainer.limit_train_batches", "2")
    assert _equal(_state(guide), _state("two/checkpoints/last.ckpt"))

    run_cli("fit", "--config", _overlay("plain.yaml", None, "plain/checkpoints"))
    assert _equal(_state("run/checkpoints/last.ckpt"), _state("plain/checkpoints/last.ckpt"))
    assert not _equal(_state(guide), _state("plain/checkpoints/last.ckpt"))


def test_predict_uses_the_snapshot_beside_the_checkpoint_and_says_when_there_is_none():
    run_cli("fit", "--config", _overlay("snap.yaml", {"at_step": 2}, "run/checkpoints"))
    shutil.move("run/checkpoints", "moved")
    common = ("predict", "--config", "snap.yaml", "--ckpt_path", "moved/last.ckpt",
              "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "3")
    cli = run_cli(*common, "--predict_dir", "pred")
    assert cli.model.provenance()["guide"] == {"checkpoint": "moved/guide.ckpt", "sha256": sha256_of("moved/guide.ckpt")}
    assert cli.model.trained_guide == {"sha256": sha256_of("moved/guide.ckpt"), "iterations": 2}

    shutil.copy("moved/last.ckpt", "other.ckpt")
    cli = run_cli(*common, "--model.init_args.guide_checkpoint", "other.ckpt", "--predict_dir", "explicit")
    assert cli.model.guide_checkpoint == "other.ckpt"  # a guide named in the config wins over the snapshot

    cli = run_cli(*common, "--sampling.autoguide", "false", "--predict_dir", "cfg")
    assert cli.model._guide is not None and cli.model.provenance()["guide"] is None  # loaded, not used

    shutil.move("moved/guide.ckpt", "elsewhere.ckpt")
    with pytest.warns(UserWarning, match="no guide snapshot at moved/guide.ckpt"):
        cli = run_cli(*common, "--predict_dir", "none")
    assert cli.model.provenance()["guide"] is None
    samples = {d: np.load(f"{d}/samples_rank0.npz")["samples"] for d in ("pred", "cfg", "none")}
    assert np.array_equal(samples["cfg"], samples["none"]) and not np.allclose(samples["pred"], samples["none"], atol=1e-3)


def test_a_guide_that_is_not_older_or_not_the_recorded_one_is_not_used():
    """A checkpoint from before the snapshot step cannot be guided by it (the guide would be the stronger model); a
    guide.ckpt that differs from the one a checkpoint was trained with is refused, naming both."""
    run_cli("fit", "--config", _overlay("snap.yaml", {"at_step": 4}, "run/checkpoints"), "--trainer.max_epochs", "2")
    common = ("predict", "--config", "snap.yaml", "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "3")
    with pytest.warns(UserWarning, match="iteration 4.*is not older than this checkpoint .iteration 3"):
        cli = run_cli(*common, "--ckpt_path", "run/checkpoints/epoch_000.ckpt", "--predict_dir", "early")
    assert cli.model.guide_checkpoint is None and cli.model.provenance()["guide"] is None
    assert run_cli(*common, "--ckpt_path", "run/checkpoints/last.ckpt", "--predict_dir", "late").model.guide_iterations == 4

    shutil.copy("run/checkpoints/epoch_000.ckpt", "run/checkpoints/guide.ckpt")
    with pytest.raises(ValueError, match="is not the guide this checkpoint was trained and sampled with"):
        run_cli(*common, "--ckpt_path", "run/checkpoints/last.ckpt", "--predict_dir", "foreign")


def test_a_run_resumed_after_the_snapshot_step_guides_with_it_and_carries_it_to_its_new_folder():
    run_cli("fit", "--config", _overlay("snap.yaml", {"at_step": 2}, "run/checkpoints"))
    cli = run_cli("fit", "--config", "snap.yaml", "--ckpt_path", "run/checkpoints/last.ckpt",
                  "--trainer.max_epochs", "2", "--trainer.default_root_dir", "next")
    assert cli.model.iterations == 6 and cli.model.guide_checkpoint == "next/checkpoints/guide.ckpt"
    assert sha256_of("next/checkpoints/guide.ckpt") == sha256_of("run/checkpoints/guide.ckpt")
    cli = run_cli("validate", "--config", "snap.yaml", "--ckpt_path", "run/checkpoints/last.ckpt")
    assert cli.model.guide_checkpoint == "run/checkpoints/guide.ckpt"


def test_the_step_is_a_fraction_of_max_steps_and_bad_settings_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_cli("fit", "--config", _overlay("q.yaml", {"fraction": 0.5}, "run/checkpoints"),
                      "--trainer.max_steps", "3")
    assert torch.load("run/checkpoints/guide.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert cli.model.guide_checkpoint is not None
    with pytest.raises(ValueError, match="after EMA"):
        run_cli("fit", "--config", _overlay("o.yaml", {"at_step": 2}, "o/checkpoints", first="snap"))
    with pytest.warns(UserWarning, match="trainer.max_steps, which this run does not set"):
        cli = run_cli("fit", "--config", _overlay("m.yaml", {}, "m/checkpoints"))
    assert cli.model.guide_checkpoint is None and not Path("m/checkpoints/guide.ckpt").exists()
    from callbacks import GuideSnapshot

    with pytest.raises(ValueError, match="fraction"):
        GuideSnapshot(fraction=1.0)
    with pytest.raises(ValueError, match="at_step"):
        GuideSnapshot(at_step=0)


def test_modules_the_snapshot_cannot_guide_are_refused_before_training():
    from callbacks import GuideSnapshot
    from lightning_modules import DDPMModule, DiffuseVAEModule
    from networks import TinyUNet

    assert DDPMModule.accepts_guide and not DiffuseVAEModule.accepts_guide
    no_guide = type("NoGuide", (DDPMModule,), {"accepts_guide": False})
    net = TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=10)
    with pytest.raises(TypeError, match="cannot be guided"):
        GuideSnapshot().setup(None, no_guide(net, image_size=16), "fit")
    unconditional = DDPMModule(TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0), image_size=16)
    with pytest.raises(ValueError, match="unconditional model would never be used"):
        GuideSnapshot().setup(None, unconditional, "fit")


def test_a_config_can_keep_classifier_free_guidance_while_the_snapshot_is_taken():
    """``sampling.autoguide: false`` is linked into the model: the run still saves and loads its snapshot, and samples
    with the unconditional branch; the prediction with autoguide off is exactly the CFG formula."""
    config = yaml.safe_load(open(_overlay("snap.yaml", {"at_step": 2}, "run/checkpoints")))
    config["sampling"] = {"autoguide": False}
    with open("cfg.yaml", "w") as f:
        yaml.safe_dump(config, f)
    cli = run_cli("fit", "--config", "cfg.yaml")
    model = cli.model.eval()
    assert model.autoguide is False and model.hparams.autoguide is False and model._guide is not None
    assert model.provenance()["guide"] is None and Path("run/checkpoints/guide.ckpt").is_file()
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([3, 20, 40]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        cfg = 2.5 * model(x, t, y) - 1.5 * model(x, t, torch.full_like(y, -1))
        assert torch.allclose(model.guided_prediction(x, t, y, 1.5), cfg, atol=1e-5)
        assert not torch.allclose(model.guided_prediction(x, t, y, 1.5, autoguide=True), cfg, atol=1e-4)


def test_the_guidance_check_follows_the_sampling_choice_of_guide(tmp_path):
    """An unconditional model with a guide can be guided only while the guide is used: ``sampling.autoguide`` decides,
    not the model's default."""
    from conftest import ROOT

    from lightning_modules import DDPMModule
    from lightning_modules.contract import Sampling
    from networks import TinyUNet

    guide = ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt"
    ckpt = torch.load(guide, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["denoiser"]["init_args"]["num_classes"] = 0
    net = TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0)
    ckpt["state_dict"] = {f"denoiser.{k}": v for k, v in net.state_dict().items()}
    torch.save(ckpt, tmp_path / "unconditional_guide.ckpt")
    model = DDPMModule(TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0), num_timesteps=50,
                       beta_end=0.2, image_size=16, value_range=(-1.0, 1.0),
                       guide_checkpoint=str(tmp_path / "unconditional_guide.ckpt"), autoguide=False)
    model.check_sampling(Sampling(guidance_scale=2.0, autoguide=True))
    with pytest.raises(ValueError, match="unconditional"):
        model.check_sampling(Sampling(guidance_scale=2.0, autoguide=False))
    with pytest.raises(ValueError, match="unconditional"):
        model.check_sampling(Sampling(guidance_scale=2.0))
    assert "autoguide" not in Sampling().describe() and Sampling(autoguide=False).describe()["autoguide"] is False


def test_loading_a_guide_leaves_the_random_state_alone():
    from conftest import ROOT

    from lightning_modules import DDPMModule

    model = DDPMModule.load_from_checkpoint(ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt", map_location="cpu",
                                            weights_only=True)
    before = torch.get_rng_state()
    model.set_guide(str(ROOT / "tests" / "data" / "tiny_ddpm_400494a.ckpt"))
    assert model._guide is not None and torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
@pytest.mark.ddp
def test_a_two_process_ddp_run_takes_the_snapshot_once_and_goes_on(tmp_path):
    """Saving is collective (a rank that skipped it would hang the run); the snapshot is written once and the run
    goes on to its end."""
    from conftest import run_cli_subprocess

    config = _overlay("snap.yaml", {"at_step": 2}, "run/checkpoints")
    result = run_cli_subprocess("fit", "--config", str(tmp_path / config), "--trainer.devices", "2",
                                "--trainer.strategy", "ddp", "--trainer.max_epochs", "2", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("saved the iteration-2 guide") == 1  # rank 0 speaks
    assert torch.load(tmp_path / "run/checkpoints/guide.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"] == 6
