"""Statistics of the prepared Severstal data: JSON, markdown and histogram PNGs in ``<prepared_dir>/reports/``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.severstal.jsonl import JsonLineDataset
from datamodules.severstal.polygons import polygon_area, polygon_bbox


def _hist(values: list[float], bins: int = 20) -> dict[str, list]:
    if not values:
        return {"counts": [], "edges": []}
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.tolist(), "edges": [round(float(e), 3) for e in edges]}


def polygon_stats(records: list[dict], num_classes: int) -> dict[str, Any]:
    """Polygons per class and per image, areas (px²) and bounding-box aspect ratios (log2 of w / h) per class."""
    areas: list[list[float]] = [[] for _ in range(num_classes)]
    ratios: list[list[float]] = [[] for _ in range(num_classes)]
    for r in records:
        for entry in r["polygons"]:
            c, pts = int(entry["label"]), np.asarray(entry["points"][0])
            x0, y0, x1, y1 = polygon_bbox(pts)
            areas[c].append(polygon_area(pts))
            ratios[c].append((x1 - x0 + 1) / (y1 - y0 + 1))
    per_image = [sum(r["counts"]) for r in records]
    return {
        "images": len(records),
        "images_with_defects": sum(1 for r in records if r["rle"]),
        "images_without_defects": sum(1 for r in records if not r["rle"]),
        "polygons_per_class": [len(a) for a in areas],
        "polygons_per_image": {str(k): int(v) for k, v in zip(*np.unique(per_image, return_counts=True))} if records else {},
        "polygons_per_image_per_class": [
            {str(k): int(v) for k, v in zip(*np.unique([r["counts"][c] for r in records], return_counts=True))}
            for c in range(num_classes)] if records else [],
        "area_histogram_per_class": [_hist(a) for a in areas],
        "aspect_ratio_log2_histogram_per_class": [_hist(np.log2(x).tolist()) if x else _hist([]) for x in ratios],
        "area_mean_per_class": [float(np.mean(a)) if a else None for a in areas],
    }, areas, ratios


def _plots(folder: Path, stats: dict[str, Any], areas: list[list[float]], ratios: list[list[float]]) -> list[str]:
    try:
        import matplotlib
    except ImportError:  # the JSON and markdown report still get written
        warnings.warn("matplotlib is not installed: the report has no PNG plots (pip install matplotlib).", stacklevel=2)
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(areas)
    files = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        files.append(name)

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].bar(["with defects", "without"], [stats["images_with_defects"], stats["images_without_defects"]])
    ax[0].set_title("images")
    ax[1].bar([f"class {c + 1}" for c in range(n)], stats["polygons_per_class"])
    ax[1].set_title("polygons per class")
    save(fig, "images_and_polygons.png")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    keys = sorted(stats["polygons_per_image"], key=int)
    ax.bar(keys, [stats["polygons_per_image"][k] for k in keys])
    ax.set(title="polygons per image", xlabel="polygons", ylabel="images")
    save(fig, "polygons_per_image.png")
    for name, values, label in (("polygon_area.png", areas, "area (px², log10)"), ("aspect_ratio.png", ratios, "w / h (log2)")):
        fig, ax = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
        for c in range(n):
            data = np.log10(np.maximum(values[c], 1)) if "area" in name else np.log2(values[c]) if values[c] else []
            ax[0, c].hist(data, bins=20)
            ax[0, c].set(title=f"class {c + 1}", xlabel=label)
        save(fig, name)
    return files


def write_report(out: Path, num_classes: int, plots: bool = True) -> dict[str, Any]:
    """Write ``reports/report.json``, ``report.md`` and (if ``plots``) the histogram PNGs; return a brief summary."""
    folder = out / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    records = JsonLineDataset(out / "images")[:]
    stats, areas, ratios = polygon_stats(records, num_classes)
    split = json.loads((out / "split.json").read_text())
    skipped = json.loads((out / "skipped.json").read_text())
    steps = {p.stem: json.loads(p.read_text())["info"] for p in (out / "steps").glob("*.json")}
    report = {
        "dataset": stats,
        "split": {"mode": split["mode"], "seed": split["seed"], "ratios": split["ratios"], "train_images": len(split["train"]),
                  "test_images": len(split["test"]), "polygons_per_class": split["polygons_per_class"]},
        "tiles": {"train": steps.get("tiles_train"), "test": steps.get("tiles_test"), "base": steps.get("base"),
                  "objects": steps.get("objects")},
        "skipped": {"rows": sum(1 for s in skipped if s["line"] is not None),
                    "images": sum(1 for s in skipped if s["line"] is None), "entries": skipped},
    }
    report["plots"] = _plots(folder, stats, areas, ratios) if plots else []
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    classes = [f"class {c + 1}" for c in range(num_classes)]
    lines = [
        "# Severstal data report", "",
        f"Images: {stats['images']} kept ({stats['images_with_defects']} with defects, {stats['images_without_defects']} "
        f"without); skipped csv rows: {report['skipped']['rows']}, skipped images: {stats and report['skipped']['images']}.", "",
        "| | " + " | ".join(classes) + " |", "|---" * (num_classes + 1) + "|",
        "| polygons | " + " | ".join(map(str, stats["polygons_per_class"])) + " |",
    ]
    for mode, sets in split["polygons_per_class"].items():
        for name, counts in sets.items():
            used = " (used)" if mode == split["mode"] else ""
            lines.append(f"| {mode} split, {name}{used} | " + " | ".join(map(str, counts)) + " |")
    objects = (steps.get("objects") or {}).get("objects_per_class", [])
    lines.append("| objects (train) | " + " | ".join(map(str, objects)) + " |")
    t_train, t_test = steps.get("tiles_train") or {}, steps.get("tiles_test") or {}
    lines += ["", f"Split: {split['mode']}, seed {split['seed']}, {len(split['train'])} train / {len(split['test'])} test "
              "images.",
              f"Tiles: train {t_train.get('tiles')} kept of {t_train.get('tiles_cut')} (black filter dropped "
              f"{t_train.get('black_filtered')}), base (defect-free) {(steps.get('base') or {}).get('tiles')}, "
              f"test {t_test.get('tiles')}.", ""]
    lines += [f"![{p}]({p})" for p in report["plots"]]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return {"images": stats["images"], "polygons_per_class": stats["polygons_per_class"], "plots": report["plots"]}
