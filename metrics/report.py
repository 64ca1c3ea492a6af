"""Evaluation reports: JSON plus a markdown table beside seed 002's Tables 7.1/7.2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metrics.reconstruction import DIRECTIONS

# Seed 002, Tables 7.1 (Fashion-MNIST) and 7.2 (MNIST), verbatim. LPIPS magnitudes there (~1e-6) are
# implausible for standard LPIPS (typically 0.01-0.5); see the spec's §9.4.
THESIS = {
    "fashion_mnist": {
        "VAE": {"mse": 0.0102, "psnr": 20.37, "ssim": 0.686, "lpips": 7.38e-6, "mae": 0.059, "edge_sim": 2.323,
                "hist_sim": 0.377},
        "DiffuseVAE": {"mse": 0.0142, "psnr": 19.01, "ssim": 0.730, "lpips": 7.96e-6, "mae": 0.062, "edge_sim": 2.644,
                       "hist_sim": 0.036},
    },
    "mnist": {
        "VAE": {"mse": 0.0069, "psnr": 23.42, "ssim": 0.823, "lpips": 6.90e-6, "mae": 0.038, "edge_sim": 1.80, "hist_sim": 0.070},
        "DiffuseVAE": {"mse": 0.0085, "psnr": 22.50, "ssim": 0.858, "lpips": 6.50e-6, "mae": 0.045, "edge_sim": 1.95,
                       "hist_sim": 0.055},
    },
}
LABELS = {"mse": "MSE", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "mae": "MAE", "edge_sim": "EdgeSim",
          "hist_sim": "HistSim"}


def markdown_table(model: str, dataset: str, values: dict[str, float], skipped: dict[str, str]) -> str:
    arrows = {"lower": "↓", "higher": "↑"}
    cols = list(DIRECTIONS)
    lines = ["| model | " + " | ".join(f"{LABELS[c]} {arrows[DIRECTIONS[c]]}" for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    ours = [f"{values[c]:.4g}" if c in values else "skipped" for c in cols]
    lines.append(f"| {model} (genlab) | " + " | ".join(ours) + " |")
    for name, row in THESIS.get(dataset, {}).items():
        lines.append(f"| {name} (seed 002) | " + " | ".join(f"{row[c]:.4g}" for c in cols) + " |")
    notes = [f"- {LABELS[k]} skipped: {v}" for k, v in skipped.items()]
    return "\n".join(lines + [""] + notes) + "\n"


def write_report(out_dir: str | Path, name: str, model: str, dataset: str, values: dict[str, float],
                 provenance: dict[str, Any], skipped: dict[str, str]) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": model, "dataset": dataset,
        "metrics": {k: {"value": v, "better": DIRECTIONS[k]} for k, v in values.items()},
        "skipped": skipped, "thesis": THESIS.get(dataset), "provenance": provenance,
    }
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(f"# {model} on {dataset}\n\n" + markdown_table(model, dataset, values, skipped)
                       + "\n```json\n" + json.dumps(provenance, indent=2, default=str) + "\n```\n")
    return json_path, md_path
