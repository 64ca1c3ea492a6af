"""Seed 000's shipped configs run end to end on a tiny generated scan folder, image size overridden small."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SWEEPS, run_cli
from PIL import Image

SEED000 = sorted(SWEEPS.glob("seed000_*.yaml"))


def _scan_folder(root, n: int = 12) -> str:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(root / f"slice_{i:03d}.png")
    return str(root)


def test_the_six_seed000_models_are_shipped():
    assert {p.stem for p in SEED000} == {f"seed000_{m}" for m in (
        "unet_small", "unet_small_attn", "unet_large", "unet_large_attn", "uvit_small", "uvit_large")}


@pytest.mark.parametrize("config", SEED000, ids=lambda p: p.stem)
def test_fast_dev_run_on_a_scan_folder(config, tmp_path):
    cli = run_cli("fit", "--config", str(config), "--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu",
                  "--trainer.devices", "1", "--data.init_args.root", _scan_folder(tmp_path / "scans"),
                  "--data.init_args.image_size", "32", "--data.init_args.batch_size", "2",
                  "--data.init_args.num_workers", "0")
    assert cli.trainer.global_step == 1
    assert cli.model.image_shape == (1, 32, 32)
    assert cli.trainer.lr_scheduler_configs  # the cosine schedule is attached


def test_a_missing_scan_folder_names_the_config_key():
    from datamodules import DataError

    with pytest.raises((DataError, ValueError), match="data.init_args.root is required"):  # jsonargparse may wrap it
        run_cli("fit", "--config", str(SEED000[0]), "--trainer.fast_dev_run", "1")


def test_all_split_spans_train_val_and_test():
    from datamodules import SyntheticDataModule

    dm = SyntheticDataModule(image_size=8, num_samples=40, batch_size=4, num_workers=0)
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert len(dm.dataset("all")) == sum(sizes)
    with pytest.raises(ValueError, match="unknown split"):
        dm.dataset("holdout")
