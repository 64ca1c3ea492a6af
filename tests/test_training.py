"""Training behaviour: the loss drops, resume keeps step and EMA, NaN stops safely, predict writes files."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from lightning.pytorch import Callback, Trainer

from callbacks import EMA
from datamodules import SyntheticDataModule
from lightning_modules import DDPMModule
from lightning_modules.ddpm import NonFiniteLossError
from networks import TinyUNet


def _fixed_loss(module, x, y, draws=16):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(np.mean([module.diffusion_loss(x, y, generator=g).item() for _ in range(draws)]))


def test_overfit_one_batch_loss_halves():
    torch.manual_seed(0)
    dm = SyntheticDataModule(image_size=16, batch_size=16, num_samples=64, value_range=(-1, 1))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    module = DDPMModule(TinyUNet(channels=(16, 32), t_emb_dim=32, num_heads=2), num_timesteps=100,
                        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), image_size=16, value_range=(-1, 1))
    before = _fixed_loss(module.eval(), x, y)
    trainer = Trainer(max_steps=150, overfit_batches=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    after = _fixed_loss(module.eval(), x, y)
    assert after <= 0.5 * before, (before, after)


class _RecordEMA(Callback):
    """Records the EMA copy's weights and the step when training (re)starts."""

    def on_train_start(self, trainer, pl_module):
        ema = next(cb for cb in trainer.callbacks if isinstance(cb, EMA))
        self.step = trainer.global_step
        self.ema = {k: v.clone() for k, v in ema.average_model.module.state_dict().items()}
        self.current = {k: v.clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.slow
def test_resume_continues_step_and_keeps_ema(tmp_path):
    run_cli("fit", "--config", str(TINY), "--trainer.max_epochs", "1")
    last = Path("run/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3 and "current_model_state" in ckpt

    from cli import cli_main

    recorder = _RecordEMA()
    cli = cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "2", "--ckpt_path", str(last)],
                   trainer_defaults={"callbacks": [recorder]})
    assert recorder.step == 3 and cli.trainer.global_step == 6
    for k, v in ckpt["state_dict"].items():  # EMA weights restored into the average model
        assert torch.equal(recorder.ema[k], v), k
    for k, v in ckpt["current_model_state"].items():  # raw weights restored into the module
        assert torch.equal(recorder.current[k], v), k
    assert not all(torch.equal(ckpt["state_dict"][k], v) for k, v in ckpt["current_model_state"].items())


class _PoisonAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            next(pl_module.denoiser.parameters()).data.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint():
    from cli import cli_main

    cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "1"])
    last = Path("run/checkpoints/last.ckpt")
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    with pytest.raises(NonFiniteLossError, match=r"Training loss is nan \(gradient norm nan\) at iteration 5 \(global step 4"):
        cli_main(["fit", "--config", str(TINY), "--trainer.max_epochs", "3", "--ckpt_path", str(last),
                  "--trainer.enable_progress_bar", "false"],
                 trainer_defaults={"callbacks": [_PoisonAt(4)]})
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest
    ckpt = torch.load(last, weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_predict_writes_npz_and_grid_with_provenance(tmp_path):
    run_cli("fit", "--config", str(TINY))
    run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt",
            "--sampling.sampler", "DDPMSampler", "--sampling.sampler.steps", "4", "--sampling.guidance_scale", "2.0",
            "--predict_dir", "out")
    data = np.load("out/samples_rank0.npz")
    assert data["samples"].shape == (6, 1, 16, 16)
    assert data["samples"].min() >= -1 and data["samples"].max() <= 1
    assert data["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    prov = json.loads(str(data["provenance"]))
    sampler = prov["sampling"]["sampler"]
    assert prov["ema"] is True and sampler["steps"] == 4 and sampler["class_path"].endswith("DDPMSampler")
    assert prov["nfe"] == 4
    assert prov["sampling"]["guidance_scale"] == 2.0 and prov["ckpt_path"].endswith("last.ckpt")
    assert Path("out/grid_rank0.png").stat().st_size > 0
    # Same seed, same samples.
    run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt",
            "--sampling.sampler", "DDPMSampler", "--sampling.sampler.steps", "4", "--sampling.guidance_scale", "2.0",
            "--predict_dir", "out2", "--data.batch_size", "4")
    assert np.allclose(np.load("out2/samples_rank0.npz")["samples"], data["samples"], atol=1e-5)


def test_fit_writes_sample_grids_and_logs_metrics():
    cli = run_cli("fit", "--config", str(TINY), "--trainer.max_epochs", "2")
    assert sorted(p.name for p in Path("run/samples").glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    metrics = cli.trainer.callback_metrics
    assert {"train/loss_epoch", "val/loss"} <= set(metrics)
    assert metrics["train/images_per_sec"] > 0


def test_predict_with_chosen_labels_and_validate_test_subcommands():
    run_cli("fit", "--config", str(TINY))
    run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt", "--sampling.sampler.steps", "2",
            "--sampling.labels", "[7, 3]", "--predict_dir", "out")
    assert np.load("out/samples_rank0.npz")["labels"].tolist() == [7, 3, 7, 3, 7, 3]
    cli = run_cli("test", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt")
    assert "test/loss" in cli.trainer.callback_metrics
    cli = run_cli("validate", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt")
    assert "val/loss" in cli.trainer.callback_metrics


def test_sample_grid_follows_check_val_every_n_epoch():
    import yaml

    config = yaml.safe_load(TINY.read_text())
    grid = next(cb for cb in config["trainer"]["callbacks"] if cb["class_path"] == "callbacks.SampleGrid")
    grid["init_args"]["every_n_epochs"] = 2
    Path("every2.yaml").write_text(yaml.safe_dump(config))
    run_cli("fit", "--config", "every2.yaml", "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "2")
    assert sorted(p.name for p in Path("run/samples").glob("*.png")) == ["epoch_001.png", "epoch_003.png"]
