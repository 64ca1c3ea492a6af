"""Reading the Kaggle Severstal layout (``train.csv`` + ``train_images/*.jpg``) from a folder or the zip."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datamodules.idx import DataError


@dataclass
class CsvRow:
    """One ``train.csv`` row: image id, 1-based class id as text, RLE text, 1-based line number."""

    image_id: str
    class_id: str
    rle: str
    line: int


@dataclass
class KaggleSource:
    """The competition data: a folder or the competition zip (the csv and images may sit in a sub-folder).

    Each process opens its own zip handle (``ZipFile`` objects are not shared across processes).
    """

    root: str
    _zip: zipfile.ZipFile | None = field(default=None, repr=False)
    _members: dict[str, str] = field(default_factory=dict, repr=False)
    _pid: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        path = Path(self.root).expanduser()
        if not path.exists():
            raise DataError(f"Severstal data not found at {str(path)!r}. Set data.init_args.root (or --root) to the Kaggle "
                            "folder holding train.csv and train_images/, or to severstal-steel-defect-detection.zip "
                            "(`kaggle competitions download -c severstal-steel-defect-detection`).")
        self.path = path
        self.is_zip = path.is_file() and zipfile.is_zipfile(path)
        if not self.is_zip and not path.is_dir():
            raise DataError(f"{path} is neither a folder nor a zip file. Point data.init_args.root at the Kaggle folder or zip.")
        self._index()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}

    def _index(self) -> None:
        if self.is_zip:
            names = self._open().namelist()
            csvs = [n for n in names if n.rsplit("/", 1)[-1] == "train.csv"]
            if not csvs:
                raise DataError(f"{self.path} has no train.csv. Is it the severstal-steel-defect-detection zip?")
            prefix = csvs[0][: -len("train.csv")]
            self.csv_name = csvs[0]
            img_prefix = prefix + "train_images/"
            self._members = {n[len(img_prefix):]: n for n in names if n.startswith(img_prefix) and n.lower().endswith(".jpg")}
        else:
            if not (self.path / "train.csv").is_file():
                raise DataError(f"{self.path / 'train.csv'} is missing. data.init_args.root must hold train.csv and "
                                "train_images/.")
            folder = self.path / "train_images"
            if not folder.is_dir():
                raise DataError(f"{folder} is missing. data.init_args.root must hold train.csv and train_images/.")
            self._members = {p.name: str(p) for p in folder.iterdir() if p.suffix.lower() == ".jpg"}

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():  # a forked process must not share the parent's file offset
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def image_ids(self) -> list[str]:
        """All image file names in train_images, sorted (images without csv rows are defect-free)."""
        return sorted(self._members)

    def rows(self) -> list[CsvRow]:
        """The csv rows; the header must name ImageId, ClassId and EncodedPixels."""
        text = self._open().read(self.csv_name).decode() if self.is_zip else (self.path / "train.csv").read_text()
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            raise DataError(f"train.csv in {self.path} is empty.")
        header = [h.strip() for h in header]
        if header[:1] == ["ImageId_ClassId"]:  # the 2019 layout: "id.jpg_1", EncodedPixels
            rows = []
            for n, r in enumerate(reader, start=2):
                image_id, _, class_id = (r[0] if r else "").rpartition("_")
                rows.append(CsvRow(image_id, class_id, r[1] if len(r) > 1 else "", n))
            return rows
        try:
            i, c, e = header.index("ImageId"), header.index("ClassId"), header.index("EncodedPixels")
        except ValueError:
            raise DataError(f"train.csv header {header} lacks ImageId, ClassId or EncodedPixels.") from None
        return [CsvRow(r[i] if len(r) > i else "", r[c] if len(r) > c else "", r[e] if len(r) > e else "", n)
                for n, r in enumerate(reader, start=2)]

    def read_bytes(self, image_id: str) -> bytes:
        member = self._members[image_id]
        if self.is_zip:
            return self._open().read(member)
        return Path(member).read_bytes()

    def read_image(self, image_id: str) -> np.ndarray | None:
        """RGB uint8 (H, W, 3), or None if the file cannot be decoded."""
        try:
            data = np.frombuffer(self.read_bytes(image_id), dtype=np.uint8)
        except (OSError, KeyError, zipfile.BadZipFile):
            return None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 image from disk; raises DataError naming the file if it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"Cannot read image {path}. The prepared data looks damaged: rerun prepare with --force.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DataError(f"Cannot encode {path} as JPEG.")
    path.write_bytes(buf.tobytes())
