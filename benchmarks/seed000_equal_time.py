"""Seed 000's comparison on data we ship: U-Net against U-ViT at equal training time on Fashion-MNIST 32x32.

Both CPU configs (``sweeps/unet2d_fashion_mnist_cpu.yaml``, ``sweeps/uvit_fashion_mnist_cpu.yaml``) train
*at the same time*, one process each pinned to one thread, for the same wall-clock budget
(``--trainer.max_time``, no step limit, no validation), so a busy machine slows both alike. Then each
EMA checkpoint draws ``--num-samples`` images with DDIM (labels i mod 10) and is scored with in-domain
FID/KID (the shipped Fashion-MNIST feature classifier) against the test split, and its sampling time per
image is measured on the same machine, one model after the other.

    python cli.py fit --config sweeps/features_fashion_mnist.yaml     # the in-domain extractor, once
    python benchmarks/seed000_equal_time.py --minutes 12 \\
        --features runs/features_fashion_mnist/checkpoints/last.ckpt \\
        --out docs/benchmarks/seed000_equal_time_cpu.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware, sampling, write_result  # noqa: E402
from callbacks.sample_grid import to_unit_range  # noqa: E402
from datamodules import FashionMNISTDataModule  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from metrics import ClassifierFeatures, GenerationMetrics, reference_features  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402
from networks.unet import count_parameters  # noqa: E402

CONFIGS = {"unet2d": "sweeps/unet2d_fashion_mnist_cpu.yaml", "uvit": "sweeps/uvit_fashion_mnist_cpu.yaml"}


def train(minutes: int, runs_dir: Path, skip: bool) -> dict[str, Path]:
    """Both configs concurrently, one thread each, for ``minutes`` of wall clock; returns their last.ckpt."""
    ckpts = {name: runs_dir / f"equal_time_{name}" / "checkpoints" / "last.ckpt" for name in CONFIGS}
    if skip:
        return ckpts
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    procs = {}
    for name, config in CONFIGS.items():
        cmd = [sys.executable, "cli.py", "fit", "--config", config, "--run_name", f"equal_time_{name}",
               "--trainer.default_root_dir", str(runs_dir / f"equal_time_{name}"),
               "--trainer.max_steps", "-1", "--trainer.max_epochs", "-1",
               "--trainer.max_time", f"00:00:{minutes:02d}:00", "--trainer.check_val_every_n_epoch", "100000",
               "--trainer.enable_progress_bar", "false", "--data.init_args.num_workers", "0"]
        log = open(runs_dir / f"equal_time_{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (proc, log) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"training {name} failed; see {log.name}")
        log.close()
    return ckpts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=12, help="wall-clock training budget of each model")
    ap.add_argument("--features", required=True, help="FeatureClassifierModule checkpoint (in-domain extractor)")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--timing-batch", type=int, default=100)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--skip-training", action="store_true", help="reuse the checkpoints of an earlier run")
    ap.add_argument("--cache-dir", default="runs/feature_cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/benchmarks/seed000_equal_time_cpu.json")
    args = ap.parse_args()

    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    ckpts = train(args.minutes, runs_dir, args.skip_training)

    dm = FashionMNISTDataModule(data_dir="data", image_size=32, value_range=(-1.0, 1.0))
    dm.setup()
    extractor = ClassifierFeatures(args.features)
    ref, _ = reference_features(extractor, dm.dataset("test").images, args.cache_dir,
                                {"dataset": dm.name, "split": "test", "image_size": 32})
    cfg = sampling("ddim", args.steps, guidance_scale=args.guidance, seed=args.seed)
    index = torch.arange(args.num_samples)
    rows = []
    for name, path in ckpts.items():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = DDPMModule.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
        model.check_sampling(cfg)
        metric = GenerationMetrics(extractor, ref, ["fid", "kid"], seed=args.seed)
        with torch.no_grad():
            for idx in index.split(250):
                x = model.generate(idx, idx % model.num_classes, sampling=cfg)
                metric.update(to_unit_range(x, model.value_range), idx)
            timing_idx = torch.arange(args.timing_batch)
            start = time.perf_counter()
            model.generate(timing_idx, timing_idx % model.num_classes, sampling=cfg)
            sec = (time.perf_counter() - start) / args.timing_batch
        rows.append({"model": name, "config": CONFIGS[name], "checkpoint": str(path), "sha256": sha256_of(path),
                     "params": count_parameters(model.denoiser), "trained_steps": int(blob["global_step"]),
                     "trained_images": int(blob["global_step"]) * 64, "ema": model.weights_are_ema,
                     "sec_per_image": sec, "nfe": model.last_nfe, **metric.compute()})
        print(rows[-1], flush=True)

    write_result(args.out, {
        "what": "U-Net vs U-ViT (seed 000's comparison) at equal wall-clock training time, Fashion-MNIST 32x32",
        "command": " ".join(sys.argv), "training_minutes_each": args.minutes,
        "training": "both trained concurrently, one thread each, same max_time, no validation; batch 64",
        "sampling": cfg.describe(), "num_samples": args.num_samples, "labels": "i mod 10",
        "timing": f"one batch of {args.timing_batch}, after the scoring pass, torch threads {torch.get_num_threads()}",
        "reference": {k: v for k, v in ref.info.items() if k != "extractor"}, "extractor": extractor.describe(),
        "kid_protocol": "100 subsets of min(256, n), cubic kernel (x.y/d + 1)^3",
        "rows": rows, "software": software(), "hardware": hardware(),
    })


if __name__ == "__main__":
    main()
