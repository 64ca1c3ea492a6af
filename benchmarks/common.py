"""Helpers shared by the benchmark scripts: hardware description and result files."""

from __future__ import annotations

import json
from pathlib import Path

from metrics.provenance import hardware

__all__ = ["hardware", "write_result"]


def write_result(path: str | None, result: dict) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
