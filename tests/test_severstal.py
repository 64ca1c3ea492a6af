"""Severstal / COIGAN data pipeline: RLE, polygons, tiling, split, filter, placement, noise, preparation, samples."""

from __future__ import annotations

import csv
import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.idx import DataError
from datamodules.severstal import SeverstalCOIGANDataModule, make_fixture, prepare_severstal
from datamodules.severstal.__main__ import main as severstal_main
from datamodules.severstal.augment import DEFAULT_BASE_AUGMENTATIONS, PickK, build_pipeline
from datamodules.severstal.dataset import COIGANSamples
from datamodules.severstal.jsonl import JsonLineDataset
from datamodules.severstal.noise import gaussian_blur, gaussian_kernel1d, gaussian_noise, multiscale_noise
from datamodules.severstal.placement import draw_count, place_object
from datamodules.severstal.polygons import mask_to_polygons, polygons_to_mask
from datamodules.severstal.rle import RLEError, rle_decode, rle_encode
from datamodules.severstal.split import fair_split, random_split
from datamodules.severstal.tiling import passes_black_filter, tile_offsets

SMALL = dict(height=64, width=400)  # same formulas as 256×1600, 16× fewer pixels


def _prepare(root, out, n_classes, images=12, seed=0, plots=False):
    make_fixture(root, images=images, num_classes=n_classes, seed=seed, **SMALL)
    prepare_severstal(str(root), str(out), num_workers=1, tile_size=64, num_classes=n_classes, progress=False, plots=plots)
    return out


@pytest.fixture(scope="module")
def prepared4(tmp_path_factory):
    d = tmp_path_factory.mktemp("sev4")
    return _prepare(d / "raw", d / "prep", 4, plots=True)


@pytest.fixture(scope="module")
def prepared2(tmp_path_factory):
    d = tmp_path_factory.mktemp("sev2")
    return _prepare(d / "raw", d / "prep", 2, images=8, seed=1)


# ---- RLE -----------------------------------------------------------------------------------------------

def test_rle_is_one_based_column_major_on_a_hand_made_mask():
    mask = np.zeros((4, 3), dtype=np.uint8)  # H = 4, W = 3: pixel (y, x) has 1-based position x·4 + y + 1
    mask[1:3, 0] = 1  # positions 2, 3
    mask[0, 1] = 1  # position 5
    mask[3, 2] = 1  # position 12, the last pixel
    assert rle_encode(mask) == "2 2 5 1 12 1"
    assert np.array_equal(rle_decode("2 2 5 1 12 1", (4, 3)), mask)
    assert rle_encode(np.zeros((4, 3))) == "" and not rle_decode("", (4, 3)).any()


def test_rle_round_trip_at_severstal_size():
    rng = np.random.default_rng(0)
    mask = (rng.random((256, 1600)) < 0.02).astype(np.uint8)
    mask[10:200, 300:700] = 1
    assert np.array_equal(rle_decode(rle_encode(mask), (256, 1600)), mask)


@pytest.mark.parametrize("bad, message", [("1 2 3", "odd number"), ("1 x", "non-integer"), ("0 5", "1-based"),
                                          ("5 0", "length below 1"), ("11 3", "out of bounds")])
def test_rle_rejects_bad_strings(bad, message):
    with pytest.raises(RLEError, match=message):
        rle_decode(bad, (4, 3))


# ---- polygons, tiling, black filter ---------------------------------------------------------------------

def test_polygon_round_trip_keeps_the_mask():
    import cv2

    mask = np.zeros((256, 400), dtype=np.uint8)
    cv2.ellipse(mask, (100, 120), (60, 30), 20, 0, 360, 1, -1)
    cv2.fillPoly(mask, [np.array([[250, 20], [380, 60], [300, 200]])], 1)
    polys = mask_to_polygons(mask)
    assert len(polys) == 2 and all(p.shape[1] == 2 and p.dtype == np.int32 for p in polys)
    back = polygons_to_mask(polys, mask.shape)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.97


def test_polygon_rules_drop_small_and_subsample_long_contours():
    tiny = np.zeros((20, 20), np.uint8)
    tiny[5:7, 5:7] = 1  # a 2×2 square: a 4-point contour, dropped
    assert mask_to_polygons(tiny) == []
    line = np.zeros((20, 20), np.uint8)
    line[5, 2:15] = 1  # all y equal: degenerate, dropped
    assert mask_to_polygons(line) == []
    big = np.zeros((100, 100), np.uint8)
    big[10:60, 10:40] = 1  # contour of 156 points > 25 → every 4th point is kept
    (poly,) = mask_to_polygons(big)
    assert len(poly) == 39


def test_tile_offsets_seed_values_and_general_formula():
    assert tile_offsets(1600, 256) == [0, 224, 448, 672, 896, 1120, 1344]
    assert tile_offsets(256, 256) == [0]
    assert tile_offsets(1000, 256) == [0, 248, 496, 744]  # n = 4, stride = floor(744 / 3)
    off = tile_offsets(1001, 256)  # floor leaves a column: the last tile still ends at the border
    assert len(off) == 4 and off[-1] == 1001 - 256
    assert tile_offsets(400, 64) == [0, 56, 112, 168, 224, 280, 336]
    with pytest.raises(ValueError):
        tile_offsets(100, 256)


def test_black_tile_filter_threshold_and_coverage():
    tile = np.full((100, 100, 3), 120, np.uint8)
    tile[:9] = 9  # 9 % below 10
    assert passes_black_filter(tile)
    tile[:11] = 5  # 11 %
    assert not passes_black_filter(tile)
    tile[:11] = 10  # 10 is not below the threshold 10
    assert passes_black_filter(tile)


# ---- split ---------------------------------------------------------------------------------------------

def test_fair_split_balances_every_class_including_rare_ones():
    rng = np.random.default_rng(3)
    n = 400
    counts = np.stack([rng.poisson(1.0, n), rng.random(n) < 0.05, rng.poisson(3.0, n), rng.random(n) < 0.2], 1)
    counts[rng.random(n) < 0.45] = 0  # defect-free images
    fair = fair_split(counts, (0.5, 0.5), seed=42)
    assert (fair == 0).sum() == (fair == 1).sum() == n // 2
    target = counts.sum(0) // 2
    fair_err = np.abs(counts[fair == 0].sum(0) - target)
    # The seed's score sums the gaps over classes, so it balances the total tightly and each class loosely.
    assert (fair_err <= np.maximum(5, 0.03 * target)).all() and fair_err.sum() <= 0.03 * target.sum(), (fair_err, target)
    worse = [np.abs(counts[random_split(n, (0.5, 0.5), s) == 0].sum(0) - target).sum() for s in range(20)]
    assert fair_err.sum() < 0.5 * np.mean(worse)
    assert np.array_equal(fair, fair_split(counts, (0.5, 0.5), seed=42))
    uneven = fair_split(counts, (0.8, 0.2), seed=1)
    assert (uneven == 0).sum() == 320


# ---- placement -----------------------------------------------------------------------------------------

def test_count_distribution_matches_the_probabilities():
    rng = np.random.default_rng(0)
    draws = np.array([draw_count(rng) for _ in range(20000)])
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.allclose(freq, [0.4, 0.475, 0.1, 0.025], atol=0.015), freq
    forced = np.array([draw_count(rng, force_non_empty=True) for _ in range(3000)])
    assert forced.min() == 1 and abs((forced == 1).mean() - 0.475 / 0.6) < 0.03


def test_placement_never_overlaps_and_crops_oversize_objects():
    rng = np.random.default_rng(1)
    for _ in range(200):
        canvas, avoid = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool)
        masks = np.zeros((3, 64, 64), bool)
        for c in range(3):
            for _ in range(int(rng.integers(0, 4))):
                h, w = rng.integers(3, 40, 2)
                obj_mask = (rng.random((h, w)) < 0.8).astype(np.uint8)
                obj = np.full((h, w, 3), 50 * (c + 1), np.uint8)
                place_object(canvas, masks[c], avoid, obj, obj_mask, rng)
        assert masks.sum(0).max() <= 1
        assert np.array_equal(masks.any(0), avoid)
        for c in range(3):  # pixels are written exactly under the masks
            assert (canvas[masks[c]] == 50 * (c + 1)).all()
    big_canvas, avoid, mask = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    assert place_object(big_canvas, mask, avoid, np.full((150, 20, 3), 9, np.uint8), np.ones((150, 20), np.uint8), rng)
    assert mask.sum() == 64 * 20


# ---- noise and augmentations ---------------------------------------------------------------------------

def test_gaussian_noise_strategies():
    masks = torch.zeros(2, 32, 32)
    masks[0, 8:20, 8:20] = 1
    g = torch.Generator().manual_seed(0)
    for strategy in ("additive", "multiplicative", "replace"):
        out = gaussian_noise(masks, 0.5, 0.1, strategy, g)
        assert (out[masks == 0] == 0).all() and out[masks == 1].std() > 0.05
    assert abs(gaussian_noise(masks, 0.5, 0.1, "replace", g)[masks == 1].mean() - 0.5) < 0.03
    assert abs(gaussian_noise(masks, 0.5, 0.1, "additive", g)[masks == 1].mean() - 1.5) < 0.03


def test_blur_kernel_is_torchvision_default():
    k = gaussian_kernel1d(41)
    assert len(k) == 41 and torch.isclose(k.sum(), torch.tensor(1.0))
    x = torch.arange(41) - 20.0
    assert torch.allclose(k, torch.exp(-0.5 * (x / 6.5) ** 2) / torch.exp(-0.5 * (x / 6.5) ** 2).sum())  # σ = 0.3·19 + 0.8
    delta = torch.zeros(1, 101, 101)
    delta[0, 50, 50] = 1
    blurred = gaussian_blur(delta, 41)
    assert torch.allclose(blurred[0, 30:71, 30:71], torch.outer(k, k), atol=1e-7)
    assert gaussian_blur(delta, 40).shape == delta.shape  # even sizes are made odd
    tvf = pytest.importorskip("torchvision.transforms.functional")
    masks = (torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    assert torch.allclose(gaussian_blur(masks, 41), tvf.gaussian_blur(masks, [41, 41]), atol=1e-5)


def test_multiscale_noise_range_fade_and_empty_channels():
    masks = torch.zeros(2, 3, 128, 128)
    masks[:, 0, 40:80, 40:90] = 1
    masks[1, 1, 10:20, 100:120] = 1
    out = multiscale_noise(masks, generator=torch.Generator().manual_seed(0))
    assert out.shape == masks.shape and out.min() >= 0 and out.max() <= 1
    assert (out[:, 2] == 0).all() and (out[0, 1] == 0).all()  # empty channels stay empty
    inside, edge, far = out[0, 0, 55:65, 60:70].mean(), out[0, 0, 60, 90:95].mean(), out[0, 0, 0:5, 0:5].abs().max()
    assert inside > edge > 0 and far < 1e-4  # the blurred mask fades the noise away from the object
    assert out[0, 0, 40:80, 40:90].std() > 0.01
    assert torch.equal(out, multiscale_noise(masks, generator=torch.Generator().manual_seed(0)))


def test_pick_k_upper_bound_is_inclusive_and_base_preset_flips_both_ways():
    import albumentations as A

    pick = PickK([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], k=[0, 2])
    pick.set_random_seed(0)
    sizes = [len(pick._get_idx()) for _ in range(300)]
    assert set(sizes) == {0, 1, 2}
    names = [type(t).__name__ for t in build_pipeline(DEFAULT_BASE_AUGMENTATIONS).transforms]
    assert names == ["HorizontalFlip", "VerticalFlip"]


# ---- preparation ---------------------------------------------------------------------------------------

def test_prepared_sets_have_the_documented_layout(prepared4):
    tiles = JsonLineDataset(prepared4 / "tile_train_set")
    records = tiles[:]
    assert records and tiles[[0, 1]] == records[:2] and tiles[0:2] == records[:2]
    assert {r["offset"][1] for r in records} <= {0, 56, 112, 168, 224, 280, 336}
    assert all(r["black_ok"] for r in records)
    test_tiles = JsonLineDataset(prepared4 / "tile_test_set")[:]
    assert len(test_tiles) % 7 == 0  # the test tiles are not filtered
    base = JsonLineDataset(prepared4 / "base_dataset")
    assert len(base) and all(r["img"].startswith("../tile_train_set/data/") for r in base[:])
    assert all(base.path(r).is_file() for r in base[:])
    for c in range(4):
        objects = JsonLineDataset(prepared4 / "object_datasets" / f"object_dataset_{c}")
        assert len(objects) >= 1
        for r in objects[:]:
            pts = np.asarray(r["points"][0])
            assert pts.min(0).tolist() == [0, 0] and pts[:, 0].max() == r["shape"][1] - 1 and pts[:, 1].max() == r["shape"][0] - 1
    report = json.loads((prepared4 / "reports" / "report.json").read_text())
    assert report["dataset"]["images"] == 12 and sum(report["split"]["polygons_per_class"]["fair"]["train"]) > 0
    assert all((prepared4 / "reports" / p).is_file() for p in report["plots"])
    assert len(report["plots"]) == (4 if importlib.util.find_spec("matplotlib") else 0)
    assert "| polygons |" in (prepared4 / "reports" / "report.md").read_text()


def test_full_size_fixture_matches_kaggle_format(tmp_path):
    import cv2

    make_fixture(tmp_path / "raw", images=2, num_classes=4, seed=5)
    rows = list(csv.DictReader(open(tmp_path / "raw" / "train.csv")))
    assert rows and set(rows[0]) == {"ImageId", "ClassId", "EncodedPixels"}
    image = cv2.imread(str(tmp_path / "raw" / "train_images" / rows[0]["ImageId"]))
    assert image.shape == (256, 1600, 3)
    assert rle_decode(rows[0]["EncodedPixels"], (256, 1600)).sum() > 20
    prepare_severstal(str(tmp_path / "raw"), str(tmp_path / "prep"), num_workers=1, train_ratio=1.0, progress=False, plots=False)
    offsets = sorted({r["offset"][1] for r in JsonLineDataset(tmp_path / "prep" / "tile_train_set")[:]})
    assert offsets == [0, 224, 448, 672, 896, 1120, 1344]


def test_bad_rows_and_corrupt_images_are_reported_and_skipped(tmp_path):
    raw = make_fixture(tmp_path / "raw", images=6, num_classes=4, seed=2, **SMALL)
    ids = sorted(p.name for p in (raw / "train_images").iterdir())
    (raw / "train_images" / ids[5]).write_bytes(b"not a jpeg")
    with open(raw / "train.csv", "a", newline="") as f:
        w = csv.writer(f)
        w.writerow([ids[4], 2, "1 2 3"])  # odd count
        w.writerow([ids[4], 1, f"{64 * 400 - 2} 10"])  # runs past the image: out of bounds
        w.writerow([ids[1], 7, "1 5"])  # unknown class
        w.writerow(["missing.jpg", 1, "1 5"])
    summary = prepare_severstal(str(raw), str(tmp_path / "prep"), num_workers=2, tile_size=64, progress=False, plots=False)
    info = summary["info"]["convert"]
    assert info["skipped_rows"] == 4 and info["skipped_images"] == 3
    skipped = json.loads((tmp_path / "prep" / "skipped.json").read_text())
    reasons = {(s["image_id"], s["reason"].split(":")[0]) for s in skipped}
    assert (ids[4], "bad RLE") in reasons and ("missing.jpg", "image not found in train_images; row skipped") in reasons
    assert any("out of bounds" in s["reason"] for s in skipped)
    assert any(s["image_id"] == ids[5] and "corrupt" in s["reason"] for s in skipped)
    kept = {r["img"] for r in JsonLineDataset(tmp_path / "prep" / "images")[:]}
    assert kept == set(ids) - {ids[1], ids[4], ids[5]}  # never turned into empty masks
    report = json.loads((tmp_path / "prep" / "reports" / "report.json").read_text())
    assert report["skipped"]["rows"] == 4


def test_prepare_command_is_idempotent_and_force_redoes(tmp_path, capsys):
    assert severstal_main(["fixture", "--out", str(tmp_path / "raw"), "--images", "6", "--height", "64", "--width", "400"]) == 0
    args = ["prepare", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "prep"), "--num-workers", "1",
            "--tile-size", "64", "--no-plots"]
    assert severstal_main(args) == 0
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "prep").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert severstal_main(args) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") >= 7 and " ran" not in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "prep").rglob("*") if p.is_file()} == files
    assert severstal_main([*args, "--force"]) == 0
    assert capsys.readouterr().out.count(" ran") == 7
    with pytest.raises(DataError, match="other settings"):
        prepare_severstal(str(tmp_path / "raw"), str(tmp_path / "prep"), num_workers=1, tile_size=32, progress=False)


def test_prepare_reads_the_competition_zip(tmp_path, prepared2):
    raw = make_fixture(tmp_path / "raw", images=4, num_classes=2, seed=1, **SMALL)
    with zipfile.ZipFile(tmp_path / "severstal-steel-defect-detection.zip", "w") as z:
        z.write(raw / "train.csv", "train.csv")
        for p in (raw / "train_images").iterdir():
            z.write(p, f"train_images/{p.name}")
    prepare_severstal(str(tmp_path / "severstal-steel-defect-detection.zip"), str(tmp_path / "prep"), num_workers=2,
                      tile_size=64, num_classes=2, progress=False, plots=False)
    zipped = JsonLineDataset(tmp_path / "prep" / "images")[:]
    assert len(zipped) == 4 and zipped == JsonLineDataset(prepared2 / "images")[:4]


# ---- samples and the datamodule ------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [4, 2])
def test_sample_dict_keys_shapes_and_ranges(n_classes, prepared4, prepared2):
    prepared = prepared4 if n_classes == 4 else prepared2
    dm = SeverstalCOIGANDataModule(root="unused", prepared_dir=str(prepared), image_size=64, num_classes=n_classes,
                                   batch_size=3, num_workers=0, samples_per_epoch=6, force_non_empty=True)
    dm.setup("fit")
    assert (dm.image_size, dm.channels, dm.value_range, dm.num_classes) == (64, 3, (0.0, 1.0), n_classes)
    batch = next(iter(dm.train_dataloader()))
    shapes = {k: tuple(v.shape) for k, v in batch.items()}
    assert shapes == {"base": (3, 3, 64, 64), "ref": (3, 3, 64, 64), "gen_input": (3, 3 + n_classes, 64, 64),
                      "disc_input": (3, 3 * n_classes, 64, 64), "orig_gen_input_masks": (3, n_classes, 64, 64),
                      "gen_input_union_mask": (3, 64, 64)}
    for v in batch.values():
        assert v.dtype == torch.float32 and v.min() >= 0 and v.max() <= 1
    masks, union = batch["orig_gen_input_masks"], batch["gen_input_union_mask"]
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and torch.equal(union, masks.amax(1))
    assert (masks.sum(1) <= 1).all() and (union.flatten(1).sum(1) > 0).all()  # no overlap; force_non_empty
    assert torch.equal(batch["gen_input"][:, :3], batch["base"])
    noise, present = batch["gen_input"][:, 3:], masks.flatten(2).amax(2) > 0
    assert (noise[~present] == 0).all() and (noise[present].flatten(1).amax(1) > 0).all()  # noise only for placed classes
    assert noise[masks == 1].mean() > noise[masks == 0].mean()  # strongest under the masks, fading outside
    disc = batch["disc_input"].view(3, n_classes, 3, 64, 64)
    assert (disc.amax(2)[masks == 0] == 0).all()  # defects on black, only under their class mask
    val = [next(iter(dm.val_dataloader()))["base"] for _ in range(2)]
    assert torch.equal(val[0], val[1])  # the fixed stream


def _first(dataset, worker=0):
    return dataset.sample(dataset.start(worker))


def test_streams_differ_per_worker_rank_and_epoch_and_repeat_otherwise(prepared4):
    kwargs = dict(image_size=64, num_classes=4, length=4, force_non_empty=True)
    a = COIGANSamples(prepared4, rank=0, **kwargs)
    b = COIGANSamples(prepared4, rank=1, **kwargs)
    same = lambda x, y: all(torch.equal(x[k], y[k]) for k in x)  # noqa: E731
    assert same(_first(a), _first(a))
    assert not same(_first(a), _first(b))
    assert not same(_first(a, 0), _first(a, 1))
    a.epoch = 1
    assert not same(_first(a), _first(COIGANSamples(prepared4, rank=0, **kwargs)))
    loader = DataLoader(COIGANSamples(prepared4, rank=0, **kwargs), batch_size=1, num_workers=2)
    first, second = list(loader)[:2]  # sample 0 from worker 0, sample 1 from worker 1
    assert not same(first, second)
    assert same({k: v[0] for k, v in first.items()}, _first(COIGANSamples(prepared4, rank=0, **kwargs), 0))


def test_datamodule_seeds_by_rank_and_epoch(prepared4):
    def batch(rank, epochs=1):
        dm = SeverstalCOIGANDataModule(prepared_dir=str(prepared4), image_size=64, batch_size=2, num_workers=0,
                                       samples_per_epoch=2, rank=rank)
        loader = dm.train_dataloader()
        return [next(iter(loader))["base"] for _ in range(epochs)]

    r0, r1 = batch(0, epochs=2), batch(1)
    assert not torch.equal(r0[0], r1[0]) and not torch.equal(r0[0], r0[1]) and torch.equal(r0[0], batch(0)[0])


def test_missing_data_errors_name_the_path_and_the_config_key(tmp_path):
    dm = SeverstalCOIGANDataModule(root=str(tmp_path / "nowhere"), prepared_dir=str(tmp_path / "prep"), num_workers=0)
    with pytest.raises(DataError, match="data.init_args.root"):
        dm.prepare_data()
    with pytest.raises(DataError, match=r"data.init_args.prepared_dir"):
        dm.setup()


@pytest.mark.filterwarnings("ignore:.*IterableDataset.*has .__len__. defined")
@pytest.mark.filterwarnings("ignore:.*no .validation_step.")
def test_fit_sees_a_new_stream_each_epoch_and_the_trainers_rank(prepared4):
    from types import SimpleNamespace

    import lightning.pytorch as L

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, i):
            self.seen.append((self.current_epoch, batch["base"].clone()))
            return (self.w * batch["gen_input"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = SeverstalCOIGANDataModule(prepared_dir=str(prepared4), image_size=64, batch_size=2, num_workers=0, samples_per_epoch=2)
    model = Probe()
    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(model, datamodule=dm)
    assert [e for e, _ in model.seen] == [0, 1] and not torch.equal(model.seen[0][1], model.seen[1][1])
    other = SeverstalCOIGANDataModule(prepared_dir=str(prepared4), image_size=64, batch_size=2, num_workers=0,
                                      samples_per_epoch=2)
    other.trainer = SimpleNamespace(global_rank=1, current_epoch=0)
    assert other.train_dataloader().dataset.rank == 1
    assert not torch.equal(next(iter(other.train_dataloader()))["base"], model.seen[0][1])


def test_mask_base_img_and_different_shapes(prepared4):
    kwargs = dict(image_size=64, num_classes=4, length=4, force_non_empty=True)
    masked = COIGANSamples(prepared4, mask_base_img=True, **kwargs)
    s = _first(masked)
    assert (s["gen_input"][:3][:, s["gen_input_union_mask"] == 1] == 0).all() and s["base"].sum() > 0
    shapes = COIGANSamples(prepared4, different_shapes=True, use_ref=False, **kwargs)
    differ = 0
    for w in range(6):
        s = _first(shapes, w)
        assert "ref" not in s
        disc_masks = s["disc_input"].view(4, 3, 64, 64).amax(1) > 0
        differ += not torch.equal(disc_masks.float() * s["orig_gen_input_masks"], disc_masks.float())
    assert differ > 0  # the generator's shapes are not the defects shown to the discriminator


def test_yaml_config_with_class_path_specs_parses_and_runs(prepared2, tmp_path):
    """The augmentations and the noise are plain dicts that jsonargparse (LightningCLI) passes through untouched."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    config = {"data": {"class_path": "datamodules.severstal.SeverstalCOIGANDataModule", "init_args": {
        "prepared_dir": str(prepared2), "image_size": 64, "num_classes": 2, "batch_size": 2, "num_workers": 0,
        "samples_per_epoch": 2,
        "noise": {"class_path": "datamodules.severstal.noise.GaussianNoise", "init_args": {"mean": 0.5, "std": 0.1}},
        "object_augmentations": [{"transform": "PickK", "args": {"k": [1, 2], "transforms": [
            {"transform": "RotateExpand", "args": {"limit": 90}},
            {"transform": "albumentations.RandomCrop", "args": {"height": 4, "width": 4, "pad_if_needed": True}},
            {"transform": "Resize", "args": {"height": 12, "width": 12}}]}}],
        "base_augmentations": [{"transform": "VerticalFlip", "args": {"p": 1.0}}]}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    dm = parser.instantiate(parser.parse_path(str(tmp_path / "c.yaml"))).data
    assert isinstance(dm, SeverstalCOIGANDataModule) and dm.hparams["noise"]["init_args"]["std"] == 0.1
    assert dm.hparams["object_augmentations"] == config["data"]["init_args"]["object_augmentations"]  # plain data
    batch = next(iter(dm.train_dataloader()))
    assert batch["gen_input"].shape == (2, 5, 64, 64) and type(dm.dataset("train").noise).__name__ == "GaussianNoise"
