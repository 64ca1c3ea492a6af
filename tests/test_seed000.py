"""Seed 000 denoisers (diffusers-layout U-Nets, U-ViTs) and the flat scan-folder data module."""

from __future__ import annotations

import warnings

import albumentations as A
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datamodules.idx import DataError
from datamodules.scan_folder import ScanFolderDataModule
from networks.denoiser import check_denoiser
from networks.unet2d import UNET2D_PRESETS, UNET2D_TABLE_PARAMS, UNet2D
from networks.uvit import UVIT_PRESETS, UVIT_TABLE_PARAMS, UViT

TABLE = {**UNET2D_TABLE_PARAMS, **UVIT_TABLE_PARAMS}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on shared cores, spinning thread pools made these forwards 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str, **overrides):
    cls = UNet2D if name in UNET2D_PRESETS else UViT
    return cls.from_preset(name, **overrides)


def _small_uvit(**kw) -> UViT:
    torch.manual_seed(0)
    return UViT(**{"image_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 4, **kw}).eval()


# ---- networks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_parameter_counts_match_tables_2_1_and_2_2(name):
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        net = _build(name)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count / TABLE[name] - 1) < 0.01, f"{name}: {count:,} vs table {TABLE[name]:,.0f}"


def test_mid_block_and_time_mlp_switches_give_the_spec_alternatives():
    """Spec §2.2/§2.4: without mid attention U-Net Small is 19.75 M; without the time MLP U-ViT Small is 44.51 M."""
    with torch.device("meta"):
        unet = UNet2D.from_preset("unet-small", mid_block_attention=False)
        uvit = UViT.from_preset("uvit-small", mlp_time_embed=False)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e4) == 1975
    assert round(sum(p.numel() for p in uvit.parameters()) / 1e4) == 4451


def test_state_dict_keys_follow_diffusers_and_the_reference_uvit():
    """Checked once against diffusers.UNet2DModel and baofff/U-ViT libs/uvit.py (same keys, outputs within 3e-6)."""
    with torch.device("meta"):
        unet = UNet2D.from_preset("unet-small-attn").state_dict()
        uvit = UViT.from_preset("uvit-small").state_dict()
    for key in ("time_embedding.linear_1.weight", "down_blocks.2.attentions.1.to_q.weight",
                "down_blocks.0.downsamplers.0.conv.weight", "mid_block.attentions.0.group_norm.weight",
                "up_blocks.1.attentions.2.to_out.0.weight", "up_blocks.0.resnets.2.conv_shortcut.weight",
                "up_blocks.2.upsamplers.0.conv.weight", "conv_norm_out.weight"):
        assert key in unet, key
    assert "down_blocks.3.downsamplers.0.conv.weight" not in unet and "up_blocks.3.upsamplers.0.conv.weight" not in unet
    assert unet["up_blocks.1.attentions.0.to_k.weight"].shape == (192, 192)
    for key in ("patch_embed.proj.weight", "time_embed.2.weight", "pos_embed", "in_blocks.5.attn.qkv.weight",
                "mid_block.mlp.fc1.weight", "out_blocks.0.skip_linear.weight", "decoder_pred.weight",
                "final_layer.weight"):
        assert key in uvit, key
    assert "in_blocks.0.attn.qkv.bias" not in uvit and uvit["pos_embed"].shape == (1, 257, 512)


@pytest.mark.parametrize("name", sorted(UNET2D_PRESETS))
def test_unet_presets_keep_shape_at_32px(name):
    """Preset widths unchanged; only the image is small (32×32) so the forward pass is quick on CPU."""
    torch.manual_seed(0)
    net = UNet2D.from_preset(name).eval()
    check_denoiser(net)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        out = net(x, torch.tensor([999]))
        out_float_t = net(x, torch.tensor([998.7]))
    assert out.shape == x.shape and out_float_t.shape == x.shape
    assert torch.isfinite(out).all() and net.num_classes == 0 and net.in_channels == 1


@pytest.mark.parametrize("name", sorted(UVIT_PRESETS))
def test_uvit_presets_keep_shape_at_32px_patch_4(name):
    """Preset widths and depth; image 32×32 with patch 4 (64 tokens) instead of 256 with patch 16."""
    torch.manual_seed(0)
    net = UViT.from_preset(name, image_size=32, patch_size=4).eval()
    check_denoiser(net)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        out = net(x, torch.tensor([500]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_uvit_runs_fashion_mnist_shapes_with_patch_2_and_rgb():
    net = _small_uvit(image_size=32, patch_size=2, in_channels=3)
    assert net(torch.randn(2, 3, 32, 32), torch.tensor([1, 2])).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("make", [lambda: _small_uvit(num_classes=10),
                                  lambda: UNet2D(block_out_channels=(32, 64), num_classes=10).eval()],
                         ids=["uvit", "unet2d"])
def test_null_label_is_the_guidance_token(make):
    net = make()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        null = net(x, t, torch.tensor([-1, -1]))
        assert torch.equal(null, net(x, t, torch.tensor([10, 10])))  # −1 → index num_classes (∅)
        assert torch.equal(null, net(x, t, None))
        cond = net(x, t, torch.tensor([3, 3]))
    assert not torch.allclose(null, cond)


def test_guidance_w0_is_the_conditional_output():
    """ε̃ = (1 + w)·ε(x, y) − w·ε(x, ∅) from one batched forward pass (as the DDPM modules run it); w = 0 → ε(x, y)."""
    net = _small_uvit(num_classes=10)
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([3, 7])
    with torch.no_grad():
        cond, uncond = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, -1)])).chunk(2)
        torch.testing.assert_close(cond, net(x, t, y), atol=1e-5, rtol=1e-4)  # batching does not mix samples
        torch.testing.assert_close(uncond, net(x, t, None), atol=1e-5, rtol=1e-4)
    w = 0.0
    torch.testing.assert_close((1 + w) * cond - w * uncond, cond)
    assert not torch.allclose(cond, uncond)


def test_uvit_long_skips_are_used():
    net = _small_uvit()
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([100])
    with torch.no_grad():
        before = net(x, t)
        skip = net.out_blocks[0].skip_linear
        half = skip.weight.shape[1] // 2
        skip.weight[:, half:] = 0  # drop the skip half of [x, skip] in one out-block
        after = net(x, t)
    assert not torch.allclose(before, after)


def test_uvit_rejects_wrong_image_size_and_unused_conditions():
    net = _small_uvit()
    with pytest.raises(ValueError, match="image_size"):
        net(torch.randn(1, 1, 32, 32), torch.tensor([1]))
    with pytest.raises(TypeError, match="no image conditions"):
        net(torch.randn(1, 1, 16, 16), torch.tensor([1]), cond=torch.randn(1, 1, 16, 16))
    with pytest.raises(KeyError, match="uvit-small"):
        UViT.from_preset("uvit-huge")


def test_unet2d_rejects_sizes_not_divisible_by_its_downsampling():
    net = UNet2D(block_out_channels=(32, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 18, 18), torch.tensor([1]))


# ---- data ----------------------------------------------------------------------------------------------


def _write_scans(folder, n, size=24, mode="L", start=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(n):
        arr = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(arr, mode=mode).save(folder / f"slice_{start + i:04d}.png")


def _asymmetric(size=16):
    """A bright top-left quadrant on a ramp: any rotation or flip changes it."""
    arr = np.tile(np.linspace(0, 120, size, dtype=np.float32), (size, 1))
    arr[: size // 2, : size // 2] = 255
    return arr.astype(np.uint8)


def test_missing_root_names_the_config_key(tmp_path):
    with pytest.raises(DataError, match=r"data\.init_args\.root"):
        ScanFolderDataModule(root=str(tmp_path / "nowhere"))


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    dm = ScanFolderDataModule(root=str(tmp_path / "empty"), image_size=16, num_workers=0)
    with pytest.raises(DataError, match="empty"):
        dm.setup()


def test_unreadable_files_are_skipped_reported_and_counted(tmp_path):
    root = tmp_path / "scans"
    _write_scans(root, 10)
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "cut.png").write_bytes((root / "slice_0000.png").read_bytes()[:40])
    dm = ScanFolderDataModule(root=str(root), image_size=16, num_workers=0, test_fraction=0.0)
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable file\(s\) of 12") as record:
        dm.setup()
    assert "broken.png" in str(record[0].message) and "cut.png" in str(record[0].message)
    assert dm.info["skipped_files"] == 2 and len(dm.skipped) == 2
    assert len(dm.dataset("all")) == 10


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scans_scale_correctly(tmp_path, suffix):
    root = tmp_path / "ct"
    root.mkdir()
    arr = np.full((16, 16), 1000, dtype=np.uint16)
    arr[:, 8:] = 3000
    arr[0, 0] = 2000
    for name in ("a", "b"):
        Image.fromarray(arr).save(root / f"{name}{suffix}")  # mode I;16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bits in (8, 16):
            dm = ScanFolderDataModule(root=str(root), image_size=16, bits=bits, num_workers=0, val_fraction=0.5,
                                      test_fraction=0.0)
            x = dm.reference_images()
            assert x.dtype == torch.uint8 and x.shape == (2, 1, 16, 16)
            data = dm.dataset("all")
            img, label = data[0]
            # min-max per image: 1000 → −1, 3000 → +1, 2000 → 0 (exactly 0 at 16 bits, one uint8 step at 8)
            assert img[0, 0, 1].item() == -1.0 and img[0, 0, 15].item() == 1.0
            assert abs(img[0, 0, 0].item()) <= (2 / 255 if bits == 8 else 1e-4)
            assert label.item() == 0
        dm = ScanFolderDataModule(root=str(root), image_size=16, bits=16, scaling="full_scale", num_workers=0,
                                  val_fraction=0.5, test_fraction=0.0)
        img, _ = dm.dataset("all")[0]
        torch.testing.assert_close(img[0, 0, 15], torch.tensor(-1 + 2 * 3000 / 65535), atol=1e-4, rtol=0)


def test_train_test_folders_reference_set_limit_and_batches(tmp_path):
    _write_scans(tmp_path / "mayo" / "train", 20, size=32)
    _write_scans(tmp_path / "mayo" / "test", 5, size=32, start=100)
    (tmp_path / "mayo" / "notes.txt").write_text("ignored")
    dm = ScanFolderDataModule(root=str(tmp_path / "mayo"), image_size=16, batch_size=4, num_workers=0,
                              val_fraction=0.25)
    dm.setup()
    assert (len(dm.dataset("train")), len(dm.dataset("val")), len(dm.dataset("test"))) == (15, 5, 5)
    assert dm.reference_images().shape == (25, 1, 16, 16)  # seed 000: train + test = 3,634
    assert dm.reference_images(("train", "val")).shape[0] == 20
    assert (dm.image_size, dm.channels, dm.value_range, dm.num_classes) == (16, 1, (-1.0, 1.0), 0)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 16, 16) and x.min() >= -1 and x.max() <= 1 and y.tolist() == [0, 0, 0, 0]
    idx, label = next(iter(dm.predict_dataloader()))
    assert idx.tolist() == [0, 1, 2, 3] and label.tolist() == [0, 0, 0, 0]
    again = ScanFolderDataModule(root=str(tmp_path / "mayo"), image_size=16, num_workers=0, val_fraction=0.25)
    assert torch.equal(again.dataset("val").data, dm.dataset("val").data)  # seeded split
    limited = ScanFolderDataModule(root=str(tmp_path / "mayo"), image_size=16, channels=3, limit=8, num_workers=0)
    assert len(limited.dataset("all")) == 8 + 5 and limited.dataset("all").data.shape[1] == 3


def test_rotation_is_applied_in_training_only(tmp_path):
    root = tmp_path / "scans"
    root.mkdir()
    for i in range(4):
        Image.fromarray(_asymmetric()).save(root / f"s{i}.png")
    augmentations = yaml.safe_load("""
    - class_path: albumentations.Rotate
      init_args: {limit: [90, 90], p: 1.0}
    """)
    dm = ScanFolderDataModule(root=str(root), image_size=16, num_workers=0, val_fraction=0.5, test_fraction=0.0,
                              augmentations=augmentations, augment_seed=0)
    for split, augmented in (("train", True), ("val", False), ("all", False)):
        data = dm.dataset(split)
        plain = data.data[0].float() / 255 * 2 - 1
        x, _ = data[0]
        assert x.shape == plain.shape and x.min() >= -1 and x.max() <= 1
        assert torch.allclose(x, plain) is not augmented, split
    x, _ = dm.dataset("train")[0]
    assert x[0, -1, 0] > 0.9 and x[0, 0, 0] < 0.9  # 90° counter-clockwise: the bright corner moves down


def test_albumentations_own_serialisation_and_bad_names(tmp_path):
    root = tmp_path / "scans"
    root.mkdir()
    Image.fromarray(_asymmetric()).save(root / "s.png")
    Image.fromarray(_asymmetric()).save(root / "t.png")
    spec = A.to_dict(A.Compose([A.HorizontalFlip(p=1.0)]))
    dm = ScanFolderDataModule(root=str(root), image_size=16, num_workers=0, val_fraction=0.5, test_fraction=0.0,
                              augmentations=spec)
    data = dm.dataset("train")
    torch.testing.assert_close(data[0][0], (data.data[0].float() / 255 * 2 - 1).flip(-1))
    with pytest.raises(ValueError, match="unknown augmentation"):
        ScanFolderDataModule(root=str(root), augmentations=[{"class_path": "NoSuchTransform"}])


def test_trainer_fits_a_uvit_on_scan_batches(tmp_path):
    """The data module and a U-ViT run under a Trainer: ε-prediction MSE (spec §1.2, Eq. 1.10), one step."""
    from lightning.pytorch import LightningModule, Trainer

    class EpsilonMSE(LightningModule):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            self.alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

        def training_step(self, batch, batch_idx):
            x0, y = batch
            t = torch.randint(0, 1000, (x0.shape[0],))
            a = self.alpha_bar[t].view(-1, 1, 1, 1)
            eps = torch.randn_like(x0)
            return torch.nn.functional.mse_loss(self.net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, y), eps)

        def validation_step(self, batch, batch_idx):
            return self.training_step(batch, batch_idx)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    _write_scans(tmp_path / "scans", 12, size=32)
    dm = ScanFolderDataModule(root=str(tmp_path / "scans"), image_size=16, batch_size=4, num_workers=0,
                              augmentations=[{"class_path": "Rotate", "init_args": {"limit": 10}}])
    trainer = Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(EpsilonMSE(_small_uvit().train()), datamodule=dm)
    assert trainer.state.finished and trainer.global_step == 1
