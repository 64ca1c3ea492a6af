"""Build the COIGAN data sets from the Kaggle Severstal data, once (``prepare_data`` and the ``prepare`` command).

Steps, each skipped when its marker in ``<out>/steps/`` says it already ran with the same settings
(``force=True`` redoes everything; a step that runs makes every later step run too):

1. ``convert``: read ``train.csv`` and the images, decode and check every RLE row, masks → polygons.
   Bad rows and corrupt images are reported by id in ``skipped.json`` and their images left out.
   Output ``images/``: one record per image with its checked RLE, polygons and per-class counts.
2. ``split``: fair greedy split by per-class polygon counts (seeded), and a random split for comparison.
3. ``tiles_train``, ``tiles_test``: every image cut into square tiles (7 × 256² at stride 224 for 256×1600),
   polygons re-derived per tile from the exact masks. Train tiles must pass the black-tile filter; test
   tiles are all kept. ``tile_train_set/`` is also the reference set.
4. ``base``: the train tiles without a single defect pixel (``base_dataset/``, pointing into the tiles).
5. ``objects``: one data set per class (``object_datasets/object_dataset_{c}/``): the bounding-box crop of
   every train polygon with the polygon moved to the origin and its ``shape`` = [h, w].
6. ``report``: ``reports/report.json``, ``report.md`` and histogram PNGs.

Every data set is line-JSON with an offsets index (see ``jsonl.py``); images are JPEG files beside it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datamodules.idx import DataError
from datamodules.severstal.jsonl import JsonLineDataset, write_jsonl
from datamodules.severstal.polygons import mask_to_polygons, polygon_bbox
from datamodules.severstal.rle import RLEError, rle_decode
from datamodules.severstal.source import KaggleSource, write_jpeg
from datamodules.severstal.split import fair_split, random_split
from datamodules.severstal.tiling import passes_black_filter, tile_grid

STEPS = ("convert", "split", "tiles_train", "tiles_test", "base", "objects", "report")
FORMAT_VERSION = 1


def resolve_workers(num_workers: int) -> int:
    """−1 means every CPU this process may use."""
    if num_workers == -1:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers < 1:
        raise ValueError(f"num_workers must be ≥ 1 or −1 (all CPUs), got {num_workers}.")
    return num_workers


# ---- per-process worker state and jobs ---------------------------------------------------------------

_SOURCE: KaggleSource | None = None


def _init_worker(source: KaggleSource) -> None:
    global _SOURCE
    _SOURCE = source


def _polygon_records(masks: np.ndarray) -> tuple[list[dict[str, Any]], list[int]]:
    """Line-JSON polygon entries and per-class counts of (N, H, W) masks."""
    entries, counts = [], []
    for c, mask in enumerate(masks):
        polys = mask_to_polygons(mask) if mask.any() else []
        counts.append(len(polys))
        entries += [{"label": str(c), "points": [p.tolist()]} for p in polys]
    return entries, counts


def _convert_job(job: tuple[str, list[tuple[str, str, int]], int]) -> tuple[dict | None, list[dict]]:
    """Check one image and its csv rows; return its record (or None) and the skipped entries."""
    image_id, rows, num_classes = job
    image = _SOURCE.read_image(image_id)
    if image is None or image.ndim != 3:
        return None, [{"image_id": image_id, "line": None, "reason": "corrupt or unreadable image; image skipped"}]
    h, w = image.shape[:2]
    masks = np.zeros((num_classes, h, w), dtype=np.uint8)
    rles: dict[str, str] = {}
    skipped = []
    for class_id, rle, line in rows:
        try:
            c = int(class_id) - 1
        except ValueError:
            c = -1
        if not 0 <= c < num_classes:
            skipped.append({"image_id": image_id, "line": line, "reason": f"ClassId {class_id!r} not in 1..{num_classes}"})
            continue
        if not rle.strip():
            continue  # the 2019 csv lists empty classes with an empty EncodedPixels
        try:
            masks[c] |= rle_decode(rle, (h, w))
        except RLEError as err:
            skipped.append({"image_id": image_id, "line": line, "reason": f"bad RLE: {err}"})
            continue
        rles[str(c)] = (rles.get(str(c), "") + " " + rle.strip()).strip()
    if skipped:
        # An image with an unreadable annotation may hold defects we cannot locate: keep it out entirely.
        skipped.append({"image_id": image_id, "line": None, "reason": f"image left out: {len(skipped)} bad csv row(s)"})
        return None, skipped
    polygons, counts = _polygon_records(masks)
    return {"img": image_id, "shape": [h, w], "rle": rles, "polygons": polygons, "counts": counts}, []


def _record_masks(record: dict, num_classes: int) -> np.ndarray:
    h, w = record["shape"]
    masks = np.zeros((num_classes, h, w), dtype=np.uint8)
    for c, rle in record["rle"].items():
        masks[int(c)] = rle_decode(rle, (h, w))
    return masks


def _tile_job(job: tuple[dict, str, int, int, int, float, bool, int]) -> list[dict]:
    """Cut one image into tiles, write the kept ones, return their records."""
    record, out_dir, num_classes, tile, threshold, coverage, keep_black, quality = job
    image = _SOURCE.read_image(record["img"])
    if image is None:
        raise DataError(f"{record['img']} became unreadable between steps; rerun prepare with --force.")
    masks = _record_masks(record, num_classes)
    stem = Path(record["img"]).stem
    out = []
    for i, (y, x) in enumerate(tile_grid(image.shape[0], image.shape[1], tile)):
        crop = np.ascontiguousarray(image[y:y + tile, x:x + tile])
        black_ok = passes_black_filter(crop, threshold, coverage)
        if not (black_ok or keep_black):
            continue
        tile_masks = masks[:, y:y + tile, x:x + tile]
        polygons, counts = _polygon_records(tile_masks)
        name = f"data/{stem}_{i}.jpg"
        write_jpeg(Path(out_dir) / name, crop, quality)
        out.append({"img": name, "source": record["img"], "offset": [y, x], "polygons": polygons, "counts": counts,
                    "defect_free": not bool(tile_masks.any()), "black_ok": black_ok})
    return out


def _object_job(job: tuple[dict, str, int]) -> list[tuple[int, dict]]:
    """Bounding-box crops of every polygon of one image, with the polygon moved to the crop's origin."""
    record, out_root, quality = job
    image = _SOURCE.read_image(record["img"])
    if image is None:
        raise DataError(f"{record['img']} became unreadable between steps; rerun prepare with --force.")
    stem = Path(record["img"]).stem
    out = []
    for k, entry in enumerate(record["polygons"]):
        c = int(entry["label"])
        points = np.asarray(entry["points"][0], dtype=np.int32)
        x0, y0, x1, y1 = polygon_bbox(points)
        name = f"data/{stem}_{k}.jpg"
        write_jpeg(Path(out_root) / f"object_dataset_{c}" / name, np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1]), quality)
        # shape = [h, w] of the inclusive box, so the polygon's last row and column stay inside the mask.
        out.append((c, {"img": name, "points": [(points - [x0, y0]).tolist()], "shape": [y1 - y0 + 1, x1 - x0 + 1],
                        "source": record["img"]}))
    return out


def _parallel(fn: Callable, jobs: list, workers: int, source: KaggleSource, desc: str, progress: bool) -> Iterable:
    """Ordered results of ``fn`` over ``jobs`` with a progress bar, in a process pool when workers > 1."""
    bar = dict(total=len(jobs), desc=desc, disable=not progress, unit="img", leave=False)
    if workers == 1 or len(jobs) < 2:
        _init_worker(source)
        yield from tqdm(map(fn, jobs), **bar)
        return
    with mp.get_context("fork").Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(source,)) as pool:
        yield from tqdm(pool.imap(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))), **bar)


# ---- the steps ---------------------------------------------------------------------------------------


class Preparer:
    """Runs the steps into ``out``; ``settings`` decide whether an existing step can be reused."""

    def __init__(self, root: str, out: str, num_workers: int = -1, force: bool = False, tile_size: int = 256,
                 num_classes: int = 4, split_mode: str = "fair", train_ratio: float = 0.5, split_seed: int = 42,
                 black_threshold: int = 10, black_max_coverage: float = 0.1, jpeg_quality: int = 95,
                 progress: bool = True, plots: bool = True) -> None:
        if split_mode not in ("fair", "random"):
            raise ValueError(f"split_mode must be 'fair' or 'random', got {split_mode!r}.")
        if not 0 < train_ratio <= 1:
            raise ValueError(f"train_ratio must be in (0, 1], got {train_ratio}.")
        self.root, self.out = root, Path(out).expanduser()
        self.workers, self.force, self.progress, self.plots = resolve_workers(num_workers), force, progress, plots
        self.settings = {"format": FORMAT_VERSION, "tile_size": tile_size, "num_classes": num_classes,
                         "split_mode": split_mode, "train_ratio": train_ratio, "split_seed": split_seed,
                         "black_threshold": black_threshold, "black_max_coverage": black_max_coverage,
                         "jpeg_quality": jpeg_quality}
        self.timings: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self._source: KaggleSource | None = None

    @property
    def source(self) -> KaggleSource:
        if self._source is None:
            self._source = KaggleSource(self.root)
        return self._source

    def _marker(self, step: str) -> Path:
        return self.out / "steps" / f"{step}.json"

    def _done(self, step: str) -> bool:
        marker = self._marker(step)
        if not marker.is_file():
            return False
        previous = json.loads(marker.read_text()).get("settings")
        if previous != self.settings:
            changed = {k: (previous.get(k), v) for k, v in self.settings.items() if (previous or {}).get(k) != v}
            raise DataError(f"{self.out} was prepared with other settings (old, new): {changed}. Pass --force "
                            "(data.init_args.force_prepare: true) to rebuild it, or choose another prepared_dir.")
        return True

    def run(self) -> dict[str, Any]:
        """Run (or skip) every step; return a summary with the step status, timings and counts."""
        if self.force and self.out.exists():
            for name in ("steps", "images", "tile_train_set", "tile_test_set", "base_dataset", "object_datasets", "reports"):
                shutil.rmtree(self.out / name, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        rerun = False
        for step in STEPS:
            if not rerun and self._done(step):
                self.status[step] = "skipped"
                continue
            rerun = True
            t0 = time.perf_counter()
            info = getattr(self, f"_step_{step}")()
            self.timings[step] = time.perf_counter() - t0
            self.status[step] = "ran"
            self._marker(step).parent.mkdir(exist_ok=True)
            self._marker(step).write_text(json.dumps({"settings": self.settings, "root": str(self.root),
                                                      "seconds": self.timings[step], "info": info}, indent=2))
        return self.summary()

    def summary(self) -> dict[str, Any]:
        info = {s: json.loads(self._marker(s).read_text())["info"] for s in STEPS if self._marker(s).is_file()}
        return {"out": str(self.out), "steps": dict(self.status), "seconds": dict(self.timings), "info": info}

    # convert ----------------------------------------------------------------------------------------
    def _step_convert(self) -> dict[str, Any]:
        n = self.settings["num_classes"]
        ids = self.source.image_ids()
        if not ids:
            raise DataError(f"No .jpg images in train_images of {self.source.path}.")
        known = set(ids)
        rows: dict[str, list] = defaultdict(list)
        skipped = []
        csv_rows = self.source.rows()
        n_rows = len(csv_rows)
        for r in csv_rows:
            if r.image_id in known:
                rows[r.image_id].append((r.class_id, r.rle, r.line))
            else:
                skipped.append({"image_id": r.image_id, "line": r.line, "reason": "image not found in train_images; row skipped"})
        jobs = [(i, rows.get(i, []), n) for i in ids]
        records = []
        for record, bad in _parallel(_convert_job, jobs, self.workers, self.source, "convert", self.progress):
            skipped += bad
            if record is not None:
                records.append(record)
        write_jsonl(self.out / "images", records, {"source": str(self.root), **self.settings})
        (self.out / "skipped.json").write_text(json.dumps(skipped, indent=1))
        bad_rows = sum(1 for s in skipped if s["line"] is not None)
        if self.progress:
            for s in skipped:
                tqdm.write(f"skipped {s['image_id']} (csv line {s['line']}): {s['reason']}")
        return {"images": len(ids), "kept_images": len(records), "csv_rows": n_rows,
                "skipped_rows": bad_rows, "skipped_images": len(ids) - len(records)}

    # split ------------------------------------------------------------------------------------------
    def _step_split(self) -> dict[str, Any]:
        images = JsonLineDataset(self.out / "images")
        records = images[:]
        counts = np.asarray([r["counts"] for r in records], dtype=np.int64).reshape(len(records), self.settings["num_classes"])
        ratio = self.settings["train_ratio"]
        ratios = (ratio, 1.0 - ratio)
        seed = self.settings["split_seed"]
        splits = {"fair": fair_split(counts, ratios, seed), "random": random_split(len(records), ratios, seed)}
        chosen = splits[self.settings["split_mode"]]
        result = {"mode": self.settings["split_mode"], "seed": seed, "ratios": list(ratios),
                  "train": [r["img"] for r, s in zip(records, chosen) if s == 0],
                  "test": [r["img"] for r, s in zip(records, chosen) if s == 1],
                  "polygons_per_class": {m: {name: counts[a == k].sum(0).tolist() for k, name in enumerate(("train", "test"))}
                                         for m, a in splits.items()}}
        (self.out / "split.json").write_text(json.dumps(result, indent=1))
        return {"train": len(result["train"]), "test": len(result["test"]), "polygons_per_class": result["polygons_per_class"]}

    def _split_records(self, name: str) -> list[dict]:
        wanted = set(json.loads((self.out / "split.json").read_text())[name])
        return [r for r in JsonLineDataset(self.out / "images")[:] if r["img"] in wanted]

    # tiles ------------------------------------------------------------------------------------------
    def _tiles(self, split: str) -> dict[str, Any]:
        s = self.settings
        folder = self.out / f"tile_{split}_set"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "data").mkdir(parents=True)
        jobs = [(r, str(folder), s["num_classes"], s["tile_size"], s["black_threshold"], s["black_max_coverage"],
                 split == "test", s["jpeg_quality"]) for r in self._split_records(split)]
        records = [t for tiles in _parallel(_tile_job, jobs, self.workers, self.source, f"tiles {split}", self.progress)
                   for t in tiles]
        n = write_jsonl(folder, records, {"kind": f"tile_{split}_set", **s})
        grid = len(tile_grid(*jobs[0][0]["shape"], s["tile_size"])) if jobs else 0
        return {"images": len(jobs), "tiles": n, "tiles_cut": grid * len(jobs),
                "defect_free": sum(r["defect_free"] for r in records), "black_filtered": grid * len(jobs) - n}

    def _step_tiles_train(self) -> dict[str, Any]:
        return self._tiles("train")

    def _step_tiles_test(self) -> dict[str, Any]:
        return self._tiles("test")

    # base -------------------------------------------------------------------------------------------
    def _step_base(self) -> dict[str, Any]:
        tiles = JsonLineDataset(self.out / "tile_train_set")
        base = [{"img": "../tile_train_set/" + r["img"], "source": r["source"], "offset": r["offset"]}
                for r in tiles[:] if r["defect_free"] and r["black_ok"]]
        n = write_jsonl(self.out / "base_dataset", base, {"kind": "base_dataset", **self.settings})
        return {"tiles": n}

    # objects ----------------------------------------------------------------------------------------
    def _step_objects(self) -> dict[str, Any]:
        root = self.out / "object_datasets"
        shutil.rmtree(root, ignore_errors=True)
        n = self.settings["num_classes"]
        for c in range(n):
            (root / f"object_dataset_{c}" / "data").mkdir(parents=True)
        jobs = [(r, str(root), self.settings["jpeg_quality"]) for r in self._split_records("train") if r["polygons"]]
        per_class: list[list[dict]] = [[] for _ in range(n)]
        for objects in _parallel(_object_job, jobs, self.workers, self.source, "objects", self.progress):
            for c, record in objects:
                per_class[c].append(record)
        sizes = [write_jsonl(root / f"object_dataset_{c}", per_class[c], {"kind": "object_dataset", "class": c, **self.settings})
                 for c in range(n)]
        return {"objects_per_class": sizes}

    # report -----------------------------------------------------------------------------------------
    def _step_report(self) -> dict[str, Any]:
        from datamodules.severstal.report import write_report

        return write_report(self.out, self.settings["num_classes"], plots=self.plots)


def prepare_severstal(root: str, out: str, **kwargs: Any) -> dict[str, Any]:
    """Build every data set under ``out`` from the Kaggle folder or zip ``root``; see ``Preparer`` for options."""
    return Preparer(root, out, **kwargs).run()
