"""The issue-16 benchmark end to end on tiny models: its result files appear, saved samples are re-scored without
sampling again, and a mistyped row tag is refused before anything is drawn."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_cli
from test_datamodules import make_fake_mnist

import datamodules.mnist as mnist_mod

TINY_FEATURES = ROOT / "tests" / "configs" / "tiny_features.yaml"
MNIST_DATA = {"class_path": "datamodules.MNISTDataModule",
              "init_args": {"data_dir": "data", "image_size": 12, "value_range": [-1.0, 1.0], "val_fraction": 0.25,
                            "batch_size": 8, "num_workers": 0}}


def on_mnist(source, path, **model_args):
    """A tiny test config on fake offline MNIST at 12x12 (small enough for attention at full resolution)."""
    config = yaml.safe_load(source.read_text())
    config["data"] = MNIST_DATA
    config["model"]["init_args"].update(model_args)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def tiny_mnist_models(tmp_path, monkeypatch):
    """A class-conditional DDPM (T = 100, so DDPM-100 rows run) and a feature classifier, both on fake MNIST."""
    monkeypatch.setattr(mnist_mod, "_try_download", lambda cls, d: "URLError: no network (test)")
    make_fake_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=48, n_test=30)
    run_cli("fit", "--config", str(on_mnist(TINY_FEATURES, tmp_path / "features.yaml")), "--trainer.max_epochs", "1")
    config = on_mnist(TINY, tmp_path / "ddpm.yaml", num_timesteps=100)
    run_cli("fit", "--config", str(config), "--trainer.enable_progress_bar", "false")
    return config, tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path / "features" / "checkpoints" / "last.ckpt"


def run_benchmark(monkeypatch, *args: str) -> None:
    from benchmarks import cpu_recipe_quality

    monkeypatch.setattr(sys, "argv", ["cpu_recipe_quality.py", *args])
    cpu_recipe_quality.main()


def test_benchmark_writes_its_result_and_rescores_saved_samples(tiny_mnist_models, tmp_path, monkeypatch):
    config, ckpt, features = tiny_mnist_models
    args = ["--config", str(config), "--ckpt", str(ckpt), "--features", str(features), "--num-samples", "20",
            "--batch-size", "10", "--groups", "ancestral", "--only", "ddpm100-w0,ddpm100-w1", "--samples-dir", "samples",
            "--cache-dir", "cache", "--grids", "grids"]
    run_benchmark(monkeypatch, *args, "--out", "first.json")
    result = json.loads((tmp_path / "first.json").read_text())
    rows = {row["setting"]: row for row in result["rows"]}
    assert [row["group"] for row in result["rows"]] == ["floor", "ancestral", "ancestral"]
    for tag, w in (("ddpm100-w0", 0.0), ("ddpm100-w1", 1.0)):
        row = rows[tag]
        assert row["nfe"] == 100 and row["sampling"]["guidance_scale"] == w and row["weights"] == "ema"
        assert row["network_passes"] == (200 if w else 100)  # CFG's unconditional half is a second pass
        assert torch.isfinite(torch.tensor(row["classifier"]["fid"])) and 0.0 <= row["legible"] <= row["accuracy"] <= 1.0
        assert torch.load(row["samples_file"], weights_only=True)["samples"].shape == (20, 1, 12, 12)
        assert (tmp_path / "grids" / f"{tag}.png").stat().st_size > 0
    assert result["reference"]["split"] == "test" and result["checkpoint"]["provenance"]["ema"] is True
    assert (tmp_path / "first.md").read_text().count("| ddpm100-w") == 2 and (tmp_path / "first.png").exists()

    from lightning_modules import DDPMModule

    def no_sampling(*_, **__):
        raise AssertionError("saved samples should be re-scored, not drawn again")

    monkeypatch.setattr(DDPMModule, "generate", no_sampling)
    run_benchmark(monkeypatch, *args, "--out", "again.json")
    again = {row["setting"]: row for row in json.loads((tmp_path / "again.json").read_text())["rows"]}
    for tag in ("ddpm100-w0", "ddpm100-w1"):
        assert again[tag]["classifier"] == rows[tag]["classifier"] and again[tag]["legible"] == rows[tag]["legible"]


def test_a_checkpoint_with_other_run_metadata_keeps_its_weights_hash(tiny_mnist_models, tmp_path, monkeypatch):
    """A retrained checkpoint's file differs in run metadata (the trainer's elapsed time), so reproduction is checked
    by the weights' hash: equal for the same weights under other metadata, different for other weights."""
    config, ckpt, features = tiny_mnist_models
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved["genlab_test_metadata"] = "elapsed 12.3 s"
    torch.save(saved, tmp_path / "same_weights.ckpt")
    key = next(k for k, v in saved["state_dict"].items() if v.is_floating_point() and k.startswith("denoiser."))
    saved["state_dict"][key] = saved["state_dict"][key] + 1e-3  # state_dict holds the EMA weights that sample
    torch.save(saved, tmp_path / "other_weights.ckpt")
    hashes = {}
    for name, path in (("orig", ckpt), ("same", tmp_path / "same_weights.ckpt"), ("other", tmp_path / "other_weights.ckpt")):
        run_benchmark(monkeypatch, "--config", str(config), "--ckpt", str(path), "--features", str(features),
                      "--num-samples", "10", "--batch-size", "10", "--groups", "ancestral", "--only", "ddpm100-w0",
                      "--out", f"{name}.json")
        hashes[name] = json.loads((tmp_path / f"{name}.json").read_text())["checkpoint"]
    assert hashes["orig"]["sha256"] != hashes["same"]["sha256"]
    assert hashes["orig"]["weights_sha256"] == hashes["same"]["weights_sha256"] != hashes["other"]["weights_sha256"]


def test_an_unknown_row_tag_is_refused_before_sampling(tiny_mnist_models, tmp_path, monkeypatch):
    config, ckpt, features = tiny_mnist_models
    with pytest.raises(SystemExit, match="ddpm100-w7.*ddpm100-w1"):
        run_benchmark(monkeypatch, "--config", str(config), "--ckpt", str(ckpt), "--features", str(features),
                      "--num-samples", "20", "--groups", "ancestral", "--only", "ddpm100-w1,ddpm100-w7",
                      "--out", "typo.json")
    assert not (tmp_path / "typo.json").exists()


def test_autoguided_interval_rows_guide_only_inside_the_interval(tiny_mnist_models, tmp_path, monkeypatch):
    """Autoguidance limited to σ in (0.28, 5]: the guide runs at some steps, not all, and the row records both."""
    config, ckpt, features = tiny_mnist_models
    run_benchmark(monkeypatch, "--config", str(config), "--ckpt", str(ckpt), "--features", str(features),
                  "--guide", str(ckpt), "--num-samples", "10", "--groups", "autoguidance",
                  "--only", "ddpm100-w2-autoguide-int0.28-5", "--out", "interval.json")
    row = json.loads((tmp_path / "interval.json").read_text())["rows"][1]
    assert row["sampling"]["autoguide"] is True and row["guidance_interval"] == [0.28, 5.0] and row["guide_sha256"]
    assert row["nfe"] == 100 and 100 < row["network_passes"] < 200  # T = 100, β up to 0.2: σ spans 0.01 to ~150


def test_spacing_rows_sample_on_their_own_grid_and_are_saved_apart(tiny_mnist_models, tmp_path, monkeypatch):
    """The trailing-spacing interval row draws other samples than the leading one from the same noise, records its
    spacing, and keeps its own saved-samples file (the cache key includes the sampler's arguments)."""
    _, ckpt, features = tiny_mnist_models
    config = on_mnist(TINY, tmp_path / "ddpm200.yaml", num_timesteps=200)  # T > 100: DDPM-100 respaces
    shutil.rmtree(ckpt.parents[1])  # the fixture's T = 100 run; its last.ckpt would survive beside last-v1.ckpt
    run_cli("fit", "--config", str(config), "--trainer.enable_progress_bar", "false")
    run_benchmark(monkeypatch, "--config", str(config), "--ckpt", str(ckpt), "--features", str(features),
                  "--num-samples", "10", "--groups", "interval", "--w", "1", "--samples-dir", "samples",
                  "--only", "ddpm100-w1-int0.28-2.9,ddpm100-w1-int0.28-2.9-trailing", "--out", "spacing.json")
    leading, trailing = json.loads((tmp_path / "spacing.json").read_text())["rows"][1:]
    assert leading["sampling"]["sampler"]["spacing"] == "leading" and trailing["sampling"]["sampler"]["spacing"] == "trailing"
    assert trailing["guidance_interval"] == [0.28, 2.9] and leading["samples_file"] != trailing["samples_file"]
    first, second = (torch.load(row["samples_file"], weights_only=True)["samples"] for row in (leading, trailing))
    assert first.shape == second.shape and not torch.equal(first, second)
