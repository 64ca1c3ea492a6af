"""Memorisation check of one checkpoint (seed 001 §5.5, Figs. 20–23): each generated image next to its K = 5
nearest training images in a feature space, and generated→train vs test→train nearest-neighbour distances.

Features: the in-domain classifier (``--features``) or the FID Inception (``--inception-weights``). Generated
images come from the checkpoint (``--sampler``/``--steps``) or from a ``predict`` output (``--samples``
samples_rank0.npz). Writes ``<out>/memorisation.json`` (report), ``panel.png`` (rows: generated | 5 nearest)
and ``distances.png`` (histograms); ``--wandb`` also logs the panel, histogram and report to W&B.

    python benchmarks/memorisation.py --config sweeps/ddpm_fashion_mnist_cpu.yaml \
        --ckpt runs/ddpm_fashion_mnist_cpu/checkpoints/last.ckpt \
        --features runs/features_fashion_mnist/checkpoints/last.ckpt --num-samples 500 \
        --out docs/benchmarks/memorisation_ddpm_fashion_mnist_cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware  # noqa: E402
from datamodules import FashionMNISTDataModule, MNISTDataModule  # noqa: E402
from diffusion import AnnealedLangevin, DDIMSampler, DDPMSampler, HeunODE, PredictorCorrector  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from lightning_modules.contract import Sampling  # noqa: E402
from metrics import ClassifierFeatures, InceptionV3Features  # noqa: E402
from metrics.memorisation import distance_histogram, memorisation_report, neighbour_panel, write_panel, write_report  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402

SAMPLERS = {"ddim": lambda s: DDIMSampler(s), "ddpm": lambda s: DDPMSampler(None), "pc": lambda s: PredictorCorrector(s),
            "heun": lambda s: HeunODE(s),
            "annealed_langevin": lambda s: AnnealedLangevin(steps_per_level=s, uniform_init=True, init_range=(-1.0, 1.0))}


@torch.no_grad()
def features(extractor, images_unit: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([extractor(x)[0].double() for x in images_unit.split(batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config whose data section gives the data set")
    ap.add_argument("--ckpt", default=None, help="checkpoint to sample (or give --samples)")
    ap.add_argument("--samples", default=None, help="a predict output (samples_rank0.npz) instead of sampling here")
    ap.add_argument("--features", default=None, help="FeatureClassifierModule checkpoint (in-domain extractor)")
    ap.add_argument("--inception-weights", default=None, help="FID Inception weights (used when --features is not given)")
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default="ddim")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--max-train", type=int, default=None, help="use a seeded subset of the training split")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--percentile", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=16, help="generated images shown in the panel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/benchmarks/memorisation")
    ap.add_argument("--wandb", action="store_true", help="log panel, histogram and report to W&B (project genlab)")
    args = ap.parse_args()
    if not (args.ckpt or args.samples):
        ap.error("give --ckpt (sample here) or --samples (a predict output)")
    if not (args.features or args.inception_weights):
        ap.error("give --features (in-domain classifier) or --inception-weights")

    config = yaml.safe_load(Path(args.config).read_text())
    data_args = {k: v for k, v in config["data"]["init_args"].items() if k != "num_workers"}
    dm = (FashionMNISTDataModule if "Fashion" in config["data"]["class_path"] else MNISTDataModule)(**data_args)
    dm.setup()
    low, high = dm.value_range
    train_u8, test_u8 = dm.dataset("train").images, dm.dataset("test").images
    if args.max_train and args.max_train < len(train_u8):
        train_u8 = train_u8[torch.randperm(len(train_u8), generator=torch.Generator().manual_seed(args.seed))[:args.max_train]]

    provenance: dict = {}
    if args.samples:
        data = np.load(args.samples)
        generated = torch.from_numpy(data["samples"][: args.num_samples]).float()
        provenance = {"samples": args.samples, "sha256": sha256_of(args.samples), "provenance": str(data["provenance"])}
    else:
        model = DDPMModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
        sampling = Sampling(sampler=SAMPLERS[args.sampler](args.steps), seed=args.seed,
                            guidance_scale=args.guidance if model.num_classes else 0.0)
        model.check_sampling(sampling)
        index = torch.arange(args.num_samples)
        labels = index % model.num_classes if model.num_classes else None
        generated = torch.cat([model.generate(i, None if labels is None else labels[i], sampling=sampling)
                               for i in index.split(250)])
        provenance = {"checkpoint": args.ckpt, "sha256": sha256_of(args.ckpt), **model.provenance()}
    gen_unit = ((generated - low) / (high - low)).clamp(0, 1)

    extractor = ClassifierFeatures(args.features) if args.features else InceptionV3Features(args.inception_weights)
    f_train = features(extractor, train_u8.float() / 255)
    f_test = features(extractor, test_u8.float() / 255)
    f_gen = features(extractor, gen_unit)
    report, _, idx = memorisation_report(f_gen, f_train, f_test, k=args.k, percentile=args.percentile)

    out = Path(args.out)
    panel = neighbour_panel(gen_unit, train_u8.float() / 255, idx, (0.0, 1.0), max_rows=args.rows)
    write_panel(panel, out / "panel.png")
    from metrics.memorisation import nearest_neighbours

    nn_gen = nearest_neighbours(f_gen, f_train, 1)[0][:, 0]
    nn_test = nearest_neighbours(f_test, f_train, 1)[0][:, 0]
    distance_histogram(nn_gen, nn_test, out / "distances.png")
    extra = {"what": "memorisation check: K nearest training images in feature space (seed 001 §5.5)",
             "command": " ".join(sys.argv), "extractor": extractor.describe(), "generated": provenance,
             "software": software(), "hardware": hardware()}
    write_report(report, out / "memorisation.json", extra)
    print(report)
    if args.wandb:
        import wandb

        run = wandb.init(project="genlab", job_type="memorisation", config=extra)
        run.log({"memorisation/panel": wandb.Image(panel.permute(1, 2, 0).numpy()),
                 "memorisation/distances": wandb.Image(str(out / "distances.png")),
                 **{f"memorisation/{k}": v for k, v in report.to_dict().items() if isinstance(v, (int, float))}})
        run.finish()
    print(f"wrote {out}/memorisation.json, panel.png, distances.png")


if __name__ == "__main__":
    main()
