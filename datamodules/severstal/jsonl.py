"""Line-JSON data sets with a byte-offset index (the seed's text mode), read by index, slice or list.

A data set folder holds ``dataset.jsonl`` (one JSON record per line), ``index`` (the byte offset where each
record starts, one decimal number per line), ``params.json`` (how it was made) and usually ``data/`` (the
images that records name in ``img``, relative to the folder). Readers open their file handle lazily in the
process that reads, so every DataLoader worker has its own handle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def write_jsonl(folder: Path, records: Iterable[dict[str, Any]], params: dict[str, Any] | None = None) -> int:
    """Write ``records`` and their offset index into ``folder``; return the number of records."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets = []
    with open(folder / "dataset.jsonl.tmp", "wb") as f:
        for record in records:
            offsets.append(f.tell())
            f.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    (folder / "index.tmp").write_text("".join(f"{o}\n" for o in offsets))
    os.replace(folder / "dataset.jsonl.tmp", folder / "dataset.jsonl")
    os.replace(folder / "index.tmp", folder / "index")
    (folder / "params.json").write_text(json.dumps({**(params or {}), "length": len(offsets)}, indent=2))
    return len(offsets)


class JsonLineDataset:
    """Random access to a line-JSON data set: ``ds[i]``, ``ds[a:b]``, ``ds[[i, j]]`` return dicts."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "dataset.jsonl").is_file() or not (self.folder / "index").is_file():
            raise FileNotFoundError(f"{self.folder} is not a prepared line-JSON data set (dataset.jsonl + index missing). "
                                    "Run `python -m datamodules.severstal prepare` first.")
        text = (self.folder / "index").read_text().split()
        self.offsets = np.asarray([int(t) for t in text], dtype=np.int64)
        self._handle = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        # File handles do not travel to worker processes; each opens its own.
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.folder / "dataset.jsonl", "rb")
            self._pid = os.getpid()
        return self._handle

    def record(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.folder} ({len(self)} records)")
        f = self._file()
        f.seek(int(self.offsets[i]))
        return json.loads(f.readline())

    def __getitem__(self, key: int | slice | list[int]) -> Any:
        if isinstance(key, slice):
            return [self.record(i) for i in range(*key.indices(len(self)))]
        if isinstance(key, (list, tuple, np.ndarray)):
            return [self.record(int(i)) for i in key]
        return self.record(int(key))

    def path(self, record: dict[str, Any]) -> Path:
        """Absolute path of the image a record names."""
        return self.folder / record["img"]

    def params(self) -> dict[str, Any]:
        return json.loads((self.folder / "params.json").read_text())
