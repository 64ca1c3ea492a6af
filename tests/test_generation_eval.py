"""In-domain feature network, the generation-metrics callback in fit and test, and its JSON provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SWEEPS, TINY, TINY_DVAE, TINY_VAE, run_cli, run_cli_subprocess
from PIL import Image

from metrics import ExtractorWeightsError

TINY_FEATURES = ROOT / "tests" / "configs" / "tiny_features.yaml"
SYNTHETIC = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--data", "SyntheticDataModule",
             "--data.batch_size", "8", "--data.num_workers", "0", "--data.num_samples", "32"]
QUIET = ["--trainer.enable_progress_bar", "false"]


def metrics_overlay(path: Path, extractor: dict, **kwargs) -> Path:
    import yaml

    init = {"extractor": extractor, "metrics": ["fid", "kid", "is", "precision_recall"], "every_n_epochs": 1,
            "num_samples": 24, "test_num_samples": 24, "reference_split": "test", "batch_size": 10,
            "sampling": {"sampler": {"class_path": "diffusion.DDIMSampler", "init_args": {"steps": 3}}},
            "kid_subsets": 5, "kid_subset_size": 10, "cache_dir": "cache", **kwargs}
    path.write_text(yaml.safe_dump({"generation_metrics": {"class_path": "callbacks.GenerationMetricsCallback",
                                                           "init_args": init}}))
    return path


CLASSIFIER = {"class_path": "metrics.ClassifierFeatures", "init_args": {"checkpoint": "features/checkpoints/last.ckpt"}}


@pytest.fixture
def classifier_ckpt():
    cli = run_cli("fit", "--config", str(TINY_FEATURES))
    assert cli.trainer.callback_metrics["val/acc"] > 0.5  # the bars' angle is learnable: well above chance (0.1)
    return Path("features/checkpoints/last.ckpt")


def test_feature_classifier_learns_and_reports_test_accuracy(classifier_ckpt):
    run_cli("test", "--config", str(TINY_FEATURES), "--ckpt_path", str(classifier_ckpt))
    report = json.loads(Path("features/eval/classifier_test.json").read_text())
    assert report["test_accuracy"] > 0.5
    ckpt = torch.load(classifier_ckpt, weights_only=False)
    assert ckpt["genlab"]["val_accuracy"] > 0.5


@pytest.mark.slow
def test_ddpm_fit_logs_metrics_and_test_writes_a_full_report(classifier_ckpt, tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", CLASSIFIER)
    cli = run_cli("fit", "--config", str(TINY), "--config", str(overlay), *QUIET)
    metrics = cli.trainer.callback_metrics
    for key in ("val/fid", "val/kid", "val/inception_score", "val/precision", "val/recall"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert len(list(Path("cache").glob("synthetic_test_*.pt"))) == 1  # real features cached once

    run_cli("test", "--config", str(TINY), "--config", str(overlay), "--ckpt_path", "run/checkpoints/last.ckpt",
            "--sampling.sampler", "DDPMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3", *QUIET)
    report = json.loads(Path("run/eval/generation_metrics.json").read_text())
    assert report["checkpoint"] == "run/checkpoints/last.ckpt" and len(report["checkpoint_sha256"]) == 64
    assert report["ema"] is True
    sampler = report["sampling"]["sampler"]
    assert sampler["class_path"].endswith("DDPMSampler") and sampler["steps"] == 5 and report["sampling"]["seed"] == 3
    assert {"variance", "spacing"} <= set(sampler) and "guidance_scale" in report["sampling"]
    assert report["nfe_per_sample"] == 5
    assert report["num_samples"] == 24
    assert report["reference"]["split"] == "test" and report["reference"]["count"] == 16
    assert report["reference"]["cache_hit"] is True
    assert report["extractor"]["name"] == "classifier:last.ckpt" and len(report["extractor"]["weights_sha256"]) == 64
    assert "bilinear" in report["extractor"]["resize"]
    assert report["software"]["torch"] == torch.__version__ and "cpu" in report["hardware"]
    assert report["results"]["fid"] >= 0 and 0 <= report["results"]["precision"] <= 1


@pytest.mark.slow
def test_sampler_settings_change_the_score_and_a_seed_reproduces_it(classifier_ckpt, tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", CLASSIFIER, every_n_epochs=0)
    run_cli("fit", "--config", str(TINY), "--config", str(overlay), *QUIET)
    results = []
    for steps in ("3", "3", "6"):
        run_cli("test", "--config", str(TINY), "--config", str(overlay), "--ckpt_path", "run/checkpoints/last.ckpt",
                "--sampling.sampler.steps", steps, *QUIET)
        results.append(json.loads(Path("run/eval/generation_metrics.json").read_text())["results"]["fid"])
    assert results[0] == results[1] and results[0] != results[2]


def test_any_user_module_is_an_extractor(tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", {"class_path": "torch.nn.Flatten"}, metrics=["fid", "kid"],
                              every_n_epochs=0)
    run_cli("fit", "--config", str(TINY), "--config", str(overlay), *QUIET)
    run_cli("test", "--config", str(TINY), "--config", str(overlay), "--ckpt_path", "run/checkpoints/last.ckpt", *QUIET)
    report = json.loads(Path("run/eval/generation_metrics.json").read_text())
    assert report["extractor"]["name"] == "torch.nn.modules.flatten.Flatten"
    assert report["results"]["fid"] > 0


def test_diffuse_vae_and_vae_are_scored(tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", {"class_path": "torch.nn.Flatten"}, metrics=["fid"], every_n_epochs=1)
    cli = run_cli("fit", "--config", str(TINY_VAE), "--config", str(overlay), *QUIET)
    assert torch.isfinite(cli.trainer.callback_metrics["val/fid"])
    cli = run_cli("fit", "--config", str(TINY_DVAE), "--config", str(overlay), *QUIET)
    assert torch.isfinite(cli.trainer.callback_metrics["val/fid"])


def test_missing_feature_checkpoint_fails_before_training(tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", {"class_path": "metrics.ClassifierFeatures",
                                                     "init_args": {"checkpoint": "nowhere.ckpt"}})
    fix = "python cli.py fit --config sweeps/features_fashion_mnist.yaml"
    with pytest.raises((ExtractorWeightsError, ValueError), match=fix):
        run_cli("fit", "--config", str(TINY), "--config", str(overlay), *QUIET)
    assert not Path("run/checkpoints").exists()


def test_shipped_metric_overlays_compose_with_the_configs(tmp_path):
    for name in ("features_mnist", "features_fashion_mnist"):
        run_cli("fit", "--config", str(SWEEPS / f"{name}.yaml"), *SYNTHETIC, "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", *QUIET)
        assert Path(f"runs/{name}/checkpoints/last.ckpt").is_file()
    for overlay in ("classifier_mnist", "classifier_fashion_mnist"):
        cli = run_cli("fit", "--config", str(TINY), "--config", str(SWEEPS / "metrics" / f"{overlay}.yaml"),
                      "--trainer.fast_dev_run", "1", *QUIET)
        assert "val/fid" in cli.trainer.callback_metrics


def test_inception_overlay_uses_a_local_weights_file(tmp_path, random_inception_weights):
    cli = run_cli("fit", "--config", str(TINY), "--config", str(SWEEPS / "metrics" / "inception.yaml"),
                  "--generation_metrics.init_args.extractor.init_args.weights_path", str(random_inception_weights),
                  "--generation_metrics.init_args.cache_dir", "cache", "--trainer.fast_dev_run", "1", *QUIET)
    assert torch.isfinite(cli.trainer.callback_metrics["val/fid"])


def test_image_folder_datamodule(tmp_path):
    from datamodules import DataError, ImageFolderDataModule

    rng = np.random.default_rng(0)
    for cls in ("cracks", "dents"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path / "imgs"), channels=1, image_size=16, test_fraction=0.2, batch_size=4)
    dm.setup()
    assert dm.classes == ["cracks", "dents"] and dm.num_classes == 2
    assert len(dm.dataset("test")) == 4 and len(dm.dataset("train")) + len(dm.dataset("val")) == 16
    x, y = dm.dataset("train")[0]
    assert x.shape == (1, 16, 16) and y in (0, 1)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "missing"))
    (tmp_path / "imgs" / "dents" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderDataModule(root=str(tmp_path / "imgs"), channels=1, image_size=16).setup()


@pytest.mark.ddp
@pytest.mark.slow
def test_test_metrics_agree_between_one_and_two_ddp_processes(classifier_ckpt, tmp_path):
    overlay = metrics_overlay(tmp_path / "gm.yaml", CLASSIFIER, every_n_epochs=0, test_num_samples=30)
    run_cli("fit", "--config", str(TINY), "--config", str(overlay), *QUIET)
    values = {}
    for devices in ("1", "2"):
        out = run_cli_subprocess(
            "test", "--config", str(TINY), "--config", str(overlay), "--ckpt_path", "run/checkpoints/last.ckpt",
            "--trainer.devices", devices, "--trainer.strategy", "ddp" if devices == "2" else "auto",
            "--generation_metrics.init_args.report_path", f"report_{devices}.json", *QUIET, timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        values[devices] = json.loads(Path(f"report_{devices}.json").read_text())
    assert values["2"]["world_size"] == 2
    for key in ("fid", "kid", "inception_score", "precision", "recall"):
        assert values["2"]["results"][key] == pytest.approx(values["1"]["results"][key], rel=1e-5, abs=1e-8), key
