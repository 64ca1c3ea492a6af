"""U-Net against U-ViT at equal training time on Fashion-MNIST 32×32 (seed 000's comparison, on data we have).

Both shipped configs (``sweeps/unet2d_fashion_mnist_cpu.yaml``, ``sweeps/uvit_fashion_mnist_cpu.yaml``) train
*at the same time*, each for the same wall-clock budget, so both see the same machine load. Each EMA
checkpoint then draws ``--num-samples`` images (DDIM, seed 0, labels i mod 10) scored by the in-domain
feature network (``sweeps/features_fashion_mnist.yaml``, trained first if its checkpoint is missing)
against the Fashion-MNIST test split; sampling time per image is measured on the same batches.

    python benchmarks/denoiser_comparison.py --minutes 10 --out docs/benchmarks/denoiser_comparison_cpu.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware, sampling, write_result  # noqa: E402
from datamodules import FashionMNISTDataModule  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from metrics.extractors import ClassifierFeatures  # noqa: E402
from metrics.generation import GenerationMetrics, reference_features  # noqa: E402
from networks.unet import count_parameters  # noqa: E402

MODELS = {"unet2d": "sweeps/unet2d_fashion_mnist_cpu.yaml", "uvit": "sweeps/uvit_fashion_mnist_cpu.yaml"}


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget of each model")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=0.0)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    features = ROOT / "runs/features_fashion_mnist/checkpoints/last.ckpt"
    if not features.is_file():
        cli("fit", "--config", "sweeps/features_fashion_mnist.yaml").wait()
    budget = time.strftime("00:%H:%M:%S", time.gmtime(args.minutes * 60))
    procs = {name: cli("fit", "--config", cfg, "--trainer.max_steps", "-1", "--trainer.max_time", budget)
             for name, cfg in MODELS.items()}
    for proc in procs.values():
        proc.wait()

    dm = FashionMNISTDataModule(image_size=32, value_range=(-1.0, 1.0), num_workers=0)
    extractor = ClassifierFeatures(str(features))
    reference, _ = reference_features(extractor, dm.dataset("test").images, str(ROOT / "runs/feature_cache"),
                                      {"dataset": "fashion_mnist", "split": "test"}, torch.device("cpu"), 250)
    rows = {}
    for name, cfg in MODELS.items():
        ckpt = ROOT / f"runs/{Path(cfg).stem}/checkpoints/last.ckpt"
        model = DDPMModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
        cfg_sampling = sampling("ddim", args.steps, guidance_scale=args.guidance, seed=0)
        metric = GenerationMetrics(extractor, reference, ("fid", "kid"), 100, 256, seed=0)
        start = time.perf_counter()
        for idx in torch.arange(args.num_samples).split(250):
            with torch.no_grad():
                x = model.generate(idx, idx % 10, sampling=cfg_sampling)
            metric.update(model.to_unit(x).clamp(0, 1), idx)
        seconds = (time.perf_counter() - start) / args.num_samples
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        rows[name] = {"config": cfg, "parameters": count_parameters(model.denoiser), "steps_trained": ck["global_step"],
                      "epochs": ck["epoch"], "results": metric.compute(), "sampling_sec_per_image": seconds}
    write_result(args.out, {
        "benchmark": "denoiser_comparison", "command": "python " + " ".join(sys.argv),
        "hardware": hardware(), "training": f"both configs trained concurrently for {args.minutes} min of wall clock each",
        "evaluation": {"samples": args.num_samples, "sampler": f"DDIM-{args.steps}, eta 0, leading", "guidance": args.guidance,
                       "ema": True, "labels": "i mod 10", "seed": 0, "reference": "Fashion-MNIST test split (10,000)",
                       "features": "in-domain classifier (sweeps/features_fashion_mnist.yaml)"},
        "models": rows,
    })


if __name__ == "__main__":
    main()
