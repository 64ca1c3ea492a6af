"""Helpers shared by the benchmark scripts: hardware description and result files."""

from __future__ import annotations

import json
from pathlib import Path

from diffusion import DDIMSampler, DDPMSampler
from lightning_modules.contract import Sampling
from metrics.provenance import hardware

__all__ = ["hardware", "write_result", "sampling"]


def sampling(sampler: str = "ddim", steps: int = 50, eta: float = 0.0, spacing: str = "leading",
             guidance_scale: float = 0.0, seed: int = 0) -> Sampling:
    """A ``Sampling`` from the flat flags the benchmark scripts take (``ddim`` or ``ddpm``)."""
    if sampler == "ddpm":
        return Sampling(DDPMSampler(steps, spacing=spacing), guidance_scale, seed)
    return Sampling(DDIMSampler(steps, eta=eta, spacing=spacing), guidance_scale, seed)


def write_result(path: str | None, result: dict) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
