"""Helpers shared by the benchmark scripts: hardware description, result files, data and scoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from datamodules import FashionMNISTDataModule, MNISTDataModule
from diffusion import DDIMSampler, DDPMSampler
from lightning_modules.contract import Sampling
from metrics import GenerationMetrics
from metrics.provenance import hardware

__all__ = ["hardware", "write_result", "sampling", "data_module", "score"]


def sampling(sampler: str = "ddim", steps: int = 50, eta: float = 0.0, spacing: str = "leading",
             guidance_scale: float = 0.0, seed: int = 0) -> Sampling:
    """A ``Sampling`` from the flat flags the benchmark scripts take (``ddim`` or ``ddpm``)."""
    if sampler == "ddpm":
        return Sampling(DDPMSampler(steps, spacing=spacing), guidance_scale, seed)
    return Sampling(DDIMSampler(steps, eta=eta, spacing=spacing), guidance_scale, seed)


def write_result(path: str | None, result: dict, echo: bool = True) -> None:
    """Write ``result`` as JSON to ``path`` (if given); ``echo`` also prints it."""
    text = json.dumps(result, indent=2)
    if echo:
        print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def data_module(config_path: str) -> Any:
    """The (Fashion-)MNIST data module of a config's data section, set up, without loader workers."""
    config = yaml.safe_load(Path(config_path).read_text())
    data_args = {k: v for k, v in config["data"]["init_args"].items() if k != "num_workers"}
    dm = (FashionMNISTDataModule if "Fashion" in config["data"]["class_path"] else MNISTDataModule)(**data_args)
    dm.setup()
    return dm


def score(extractor: Any, reference: Any, images_unit: torch.Tensor, seed: int,
          metrics: Sequence[str] = ("fid", "kid")) -> dict:
    """Generation metrics of images in [0, 1] against ``reference``; sample i keeps index i (seeded subsets)."""
    metric = GenerationMetrics(extractor, reference, list(metrics), seed=seed)
    for idx in torch.arange(len(images_unit)).split(250):
        metric.update(images_unit[idx], idx)
    return metric.compute()
