"""COIGANModule: the optimizer-step sequence (and its resume), the non-finite guard, inpainting, predict round trip,
generation for the metrics, both configs under fast_dev_run and a 2-process CPU DDP fit.

Tiny settings throughout: 32x32 tiles (64 for the synthetic config), ngf 8, one FFC block, SWAGANs of ~40k weights,
a 12-image fixture of 64x400 strips.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SWEEPS, run_cli, run_cli_subprocess
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.coigan_writer import COIGANPredictionWriter
from callbacks.ema import EMA
from datamodules.severstal import SeverstalCOIGANDataModule, make_fixture, prepare_severstal, rle_decode
from datamodules.severstal.jsonl import JsonLineDataset
from datamodules.severstal.source import KaggleSource
from datamodules.severstal_predict import SeverstalCOIGANPredictDataModule
from lightning_modules.coigan import COIGANModule
from lightning_modules.coigan_inference import inpaint, load_coigan
from lightning_modules.contract import NonFiniteLossError

TINY_G = {"ngf": 8, "n_blocks": 1}
TINY_D = {"channel_multiplier": 1, "channel_base": 512, "low_res_channels": 16}
NOISE = {"class_path": "datamodules.severstal.noise.MultiscaleNoise", "init_args": {"smooth": 9}}
R1_EVERY, PL_EVERY = 4, 3  # shorter than the seed's 16 / 4 so 32 iterations show several of each


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("coigan") / "raw", images=12, num_classes=4, seed=0, height=64, width=400)


def _prepared(raw: Path, size: int) -> Path:
    out = raw.parent / f"prep{size}"
    if not (out / "steps" / "report.json").is_file():
        prepare_severstal(str(raw), str(out), num_workers=1, tile_size=size, num_classes=4, progress=False, plots=False)
    return out


@pytest.fixture(scope="module")
def prep32(raw):
    return _prepared(raw, 32)


def tiny_model(**kwargs) -> COIGANModule:
    weights = {"perceptual_smooth": 0.0, "smooth_kernel_size": 9, "r1_interval": R1_EVERY, "ref_r1_interval": R1_EVERY,
               "path_length_interval": PL_EVERY, **kwargs.pop("loss_weights", {})}
    return COIGANModule(generator=TINY_G, discriminator=TINY_D, loss_weights=weights, image_size=32, num_classes=4, **kwargs)


def tiny_data(prep: Path, cls=SeverstalCOIGANDataModule, **kwargs) -> SeverstalCOIGANDataModule:
    args = dict(root="unused", prepared_dir=str(prep), image_size=32, num_classes=4, batch_size=2, num_workers=0,
                samples_per_epoch=32, noise=NOISE, force_non_empty=True)
    return cls(**{**args, **kwargs})


class StepRecorder(Callback):
    """(iteration, step kind, optimizer index) of every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str, int]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        index = [o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers].index(optimizer)
        self.steps.append((pl_module.iterations, pl_module.step_kind, index))


def expected_steps(first: int, last: int) -> list[tuple[int, str, int]]:
    """The seed's order (§2.7) for iterations first..last: D turns on odd iterations, G turns on even ones."""
    out = []
    for k in range(first, last + 1):
        turn = (k - 1) // 2  # D-turn index on odd k, G-turn index on even k
        if k % 2:
            out += [(k, "d", 1)] + ([(k, "d_r1", 1)] if turn % R1_EVERY == 0 else [])
            out += [(k, "ref_d", 2)] + ([(k, "ref_d_r1", 2)] if turn % R1_EVERY == 0 else [])
        else:
            out += [(k, "g", 0)] + ([(k, "g_pl", 0)] if turn % PL_EVERY == 0 else [])
    return out


def _trainer(tmp_path: Path, epochs: int, callbacks: list, **kwargs) -> Trainer:
    return Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
                   default_root_dir=str(tmp_path), **kwargs)


ONE = {"batch_size": 1, "samples_per_epoch": 16}


def test_optimizer_step_sequence_and_exact_resume(tmp_path, prep32):
    # Iterations 1..16 (epoch 0, batch 1 to keep it cheap), a checkpoint, then a resume that must run iterations 17..32 exactly as
    # an uninterrupted run would (the analytic schedule); max_iterations=32 stops it although max_epochs is 3.
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    rec = StepRecorder()
    first = tiny_model(max_iterations=32)
    _trainer(tmp_path, 1, [rec, EMA(decay=0.999, submodule="generator"), ckpt]).fit(first, tiny_data(prep32, **ONE))
    assert rec.steps == expected_steps(1, 16)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["genlab_iterations"] == 16 and saved["coigan"]["d_turns"] == 8 and saved["coigan"]["g_turns"] == 8
    assert {"current_model_state", "averaging_state"} <= set(saved)  # the EMA generator is in the checkpoint
    assert len(saved["optimizer_states"]) == 3
    assert saved["state_dict"]["path_length.mean_path_length"] > 0  # the path-length target travels too

    rec2 = StepRecorder()
    resumed = tiny_model(max_iterations=32)
    trainer = _trainer(tmp_path, 3, [rec2, EMA(decay=0.999, submodule="generator"), ckpt])
    trainer.fit(resumed, tiny_data(prep32, **ONE), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert rec2.steps == expected_steps(17, 32)
    steps = rec.steps + rec2.steps
    counts = [sum(1 for s in steps if s[2] == i) for i in range(3)]
    assert counts == [16 + 6, 16 + 4, 16 + 4]  # G: 16 turns + path length at G turns 0,3,..,15; D, refD: + R1 at 0,4,8,12
    assert (resumed.iterations, resumed.d_turns, resumed.g_turns) == (32, 16, 16)
    assert trainer.global_step == sum(counts)  # Lightning's global_step counts optimizer steps, not iterations
    logged = {k.removeprefix("train/") for k in trainer.callback_metrics}
    assert {"d_loss", "d_real_score", "d_fake_score", "d_r1", "ref_d_loss", "ref_d_real_score", "ref_d_fake_score",
            "ref_d_r1", "g_loss", "g_adversarial", "g_ref_adversarial", "g_l1_smooth", "path_length",
            "path_length_loss", "mean_path_length", "iterations"} <= logged


def test_non_finite_guard_stops_before_the_update(tmp_path, prep32):
    class Poison(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.iterations == 2:  # the third iteration is a D turn
                batch["disc_input"][0, 0, 0, 0] = float("nan")

    model = tiny_model()
    snapshot = {}

    class Snapshot(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            snapshot.update({k: v.detach().clone() for k, v in pl_module.discriminator.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match="iteration 3"):
        _trainer(tmp_path, 1, [Snapshot(), Poison()], enable_checkpointing=False).fit(model, tiny_data(prep32))
    after = model.discriminator.state_dict()
    assert all(torch.equal(snapshot[k], after[k]) for k in snapshot)  # D was not updated by the bad step


def _image_and_masks(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
    masks = np.zeros((size, size, 4), dtype=np.uint8)
    masks[8:20, 10:22, 1] = 1
    masks[24:28, 2:30, 3] = 255
    return image, masks


def test_inpaint_keeps_the_outside_and_is_deterministic():
    torch.manual_seed(0)
    model = tiny_model().eval()
    image, masks = _image_and_masks()
    outside = ~(masks > 0).any(-1)
    out = inpaint(model, image, masks, seed=3)
    assert out.dtype == np.uint8 and out.shape == image.shape
    # Tolerance 0 grey levels outside the union mask with blend="hard" (the input pixels are copied back).
    assert np.array_equal(out[outside], image[outside])
    assert np.abs(out[~outside].astype(int) - image[~outside]).mean() > 1  # the generator painted inside
    assert np.array_equal(out, inpaint(model, image, masks, seed=3))
    raw = inpaint(model, image, masks, seed=3, blend="none")
    assert np.array_equal(raw, inpaint(model, image, masks, seed=3, blend="none"))
    # Tensors: sample i uses seed + i, whatever the batch.
    base = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    m = torch.from_numpy((masks > 0).astype(np.float32)).permute(2, 0, 1)[None]
    batch = inpaint(model, base.repeat(2, 1, 1, 1), m.repeat(2, 1, 1, 1), seed=10)
    assert torch.allclose(batch[1:], inpaint(model, base, m, seed=11), atol=1e-5)
    assert not torch.equal(batch[0], batch[1])  # the mask noise follows the seed
    assert torch.equal(batch[:, :, torch.from_numpy(outside)], base.repeat(2, 1, 1, 1)[:, :, torch.from_numpy(outside)])


def test_generate_is_seeded_per_index(prep32):
    model = tiny_model().eval()
    dm = tiny_data(prep32)
    model.sample_source = dm.dataset("val")
    x = model.generate(torch.arange(3))
    assert x.shape == (3, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.allclose(model.generate(torch.tensor([2]))[0], x[2], atol=1e-5)
    assert model.provenance()["model"] == "COIGANModule"


def test_fid_kid_through_generation_metrics(tmp_path, prep32):
    from torch import nn

    from callbacks.generation_metrics import GenerationMetricsCallback

    metrics = GenerationMetricsCallback(nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()), metrics=("fid", "kid"),
                                        test_num_samples=6, reference_split="test", kid_subsets=2, kid_subset_size=3,
                                        batch_size=4, cache_dir=str(tmp_path / "cache"),
                                        report_path=str(tmp_path / "report.json"))
    dm = tiny_data(prep32, cls=SeverstalCOIGANPredictDataModule, reference_tiles=12)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[metrics],
                      default_root_dir=str(tmp_path))
    trainer.test(tiny_model(), datamodule=dm)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["results"]["num_generated"] == 6 and np.isfinite(report["results"]["fid"])
    assert report["model"]["model"] == "COIGANModule" and report["reference"]["count"] == 12


def test_missing_perceptual_weights_names_the_key():
    with pytest.raises(FileNotFoundError, match="model.init_args.perceptual_weights_path"):
        tiny_model(loss_weights={"perceptual_smooth": 0.3}, perceptual_weights_path=None)


def test_predict_round_trips_through_the_severstal_reader(tmp_path, prep32):
    # A short fit with EMA gives a checkpoint whose state_dict holds the EMA generator.
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    _trainer(tmp_path, 1, [EMA(decay=0.9, submodule="generator"), ckpt]).fit(tiny_model(max_iterations=2), tiny_data(prep32))
    model = load_coigan(tmp_path / "ckpt" / "last.ckpt")
    assert model.weights_are_ema and model.noise_spec == NOISE

    out = tmp_path / "generated"
    dm = tiny_data(prep32, cls=SeverstalCOIGANPredictDataModule, predict_num_samples=5, predict_seed=7)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      callbacks=[COIGANPredictionWriter(str(out))], default_root_dir=str(tmp_path))
    trainer.predict(model, datamodule=dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), return_predictions=False)
    expected = [dm.predict_dataloader().dataset[i] for i in range(5)]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tiles"] == 5 and manifest["classes"] == [1, 2, 3, 4] and manifest["ema"] is True
    assert manifest["checkpoint"].endswith("last.ckpt") and manifest["checkpoint_sha256"]
    source = KaggleSource(str(out))
    ids = source.image_ids()
    assert len(ids) == 5
    decoded = {i: np.zeros((4, 32, 32), dtype=np.uint8) for i in ids}
    for row in source.rows():
        decoded[row.image_id][int(row.class_id) - 1] = rle_decode(row.rle, (32, 32))
    for image_id, sample in zip(ids, expected):
        assert source.read_image(image_id).shape == (32, 32, 3)
        assert np.array_equal(decoded[image_id], sample["masks"].numpy().astype(np.uint8))
        labels = cv2.imread(str(out / "masks" / image_id.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(labels, (sample["masks"].numpy() * np.arange(1, 5)[:, None, None]).sum(0))

    # The folder is a Kaggle root for the Severstal data module: every tile and defect comes back.
    back = SeverstalCOIGANDataModule(root=str(out), prepared_dir=str(tmp_path / "back"), image_size=32, num_classes=4,
                                     prepare_workers=1, num_workers=0, train_ratio=1.0)
    back.prepare_data()
    records = JsonLineDataset(tmp_path / "back" / "images")[:]
    assert len(records) == 5 and sum(sum(r["counts"]) for r in records) >= sum(int(s["masks"].any()) for s in expected)

    # Files in, files out: the written tiles and label maps are a valid predict input with the same masks.
    again = tmp_path / "again"
    dm2 = tiny_data(prep32, cls=SeverstalCOIGANPredictDataModule, predict_base_dir=str(out / "train_images"),
                    predict_mask_dir=str(out / "masks"))
    Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
            callbacks=[COIGANPredictionWriter(str(again))]).predict(model, datamodule=dm2, return_predictions=False)
    assert (again / "train.csv").read_text().count("\n") == (out / "train.csv").read_text().count("\n")


# fast_dev_run=N caps Lightning's optimizer steps (max_steps), not batches: the first D turn takes 4 steps (logistic
# and R1 for both discriminators), the first G turn 2 (loss and path length), so N=6 runs exactly one turn of each.
FAST_DEV_RUN = "6"


def test_fast_dev_run_synthetic_config(raw):
    prep64 = _prepared(raw, 64)
    cli = run_cli("fit", "--config", str(SWEEPS / "coigan_synthetic.yaml"), "--trainer.fast_dev_run", FAST_DEV_RUN,
                  "--data.init_args.root", str(raw), "--data.init_args.prepared_dir", str(prep64),
                  "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0")
    assert cli.model.iterations == 2 and (cli.model.d_turns, cli.model.g_turns) == (1, 1)
    assert list(Path("runs/coigan_synthetic/grids").glob("iter_*.png"))


def test_fast_dev_run_severstal_config(raw, prep32, tmp_path):
    from networks.gan_losses import ResNet50DilatedEncoder

    weights = tmp_path / "encoder_random.pth"  # the ADE20k encoder's exact layout with random weights (no download)
    torch.save(ResNet50DilatedEncoder().state_dict(), weights)
    cli = run_cli("fit", "--config", str(SWEEPS / "coigan_severstal.yaml"), "--trainer.fast_dev_run", FAST_DEV_RUN,
                  "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
                  "--data.init_args.root", str(raw), "--data.init_args.prepared_dir", str(prep32),
                  "--data.init_args.image_size", "32", "--data.init_args.batch_size", "2",
                  "--data.init_args.num_workers", "0", "--model.init_args.generator", json.dumps(TINY_G),
                  "--model.init_args.discriminator", json.dumps(TINY_D),
                  "--model.init_args.perceptual_weights_path", str(weights))
    model = cli.model
    assert model.image_shape == (3, 32, 32) and model.weights.perceptual_smooth == 0.3 and model.perceptual is not None
    assert (model.d_turns, model.g_turns) == (1, 1)


def test_severstal_config_without_data_names_the_key(tmp_path):
    from datamodules.idx import DataError

    with pytest.raises(DataError, match="data.init_args.root"):
        run_cli("fit", "--config", str(SWEEPS / "coigan_severstal.yaml"), "--trainer.accelerator", "cpu",
                "--trainer.devices", "1", "--trainer.strategy", "auto", "--data.init_args.root", str(tmp_path / "none"),
                "--data.init_args.prepared_dir", str(tmp_path / "prep"), "--model.init_args.generator", json.dumps(TINY_G),
                "--model.init_args.discriminator", json.dumps(TINY_D), "--model.init_args.loss_weights",
                '{"perceptual_smooth": 0.0}')


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_process_cpu_fit(raw, prep32, tmp_path):
    result = run_cli_subprocess(
        "fit", "--config", str(SWEEPS / "coigan_synthetic.yaml"), "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.strategy", "ddp_find_unused_parameters_true",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1",
        "--data.init_args.root", str(raw), "--data.init_args.prepared_dir", str(prep32),
        "--data.init_args.image_size", "32", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
        "--data.init_args.samples_per_epoch", "8", "--model.init_args.generator", json.dumps(TINY_G),
        "--model.init_args.discriminator", json.dumps(TINY_D), "--model.init_args.max_iterations", "4",
        timeout=300, env={"WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["genlab_iterations"] == 4 and saved["coigan"] == {**saved["coigan"], "d_turns": 2, "g_turns": 2}
