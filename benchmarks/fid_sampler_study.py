"""FID/KID of one DDPM under DDPM-ancestral and DDIM samplers at several step counts (DDIM paper Table 1's shape).

Reference: the test split. Floor: the same number of real *training* images scored against it. Extractors:
the in-domain classifier (always) and, when ``--inception-weights`` is given (or cached), the FID Inception.

    python benchmarks/fid_sampler_study.py --config sweeps/ddpm_fashion_mnist_cpu.yaml \
        --ckpt runs/ddpm_fashion_mnist_cpu/checkpoints/last.ckpt \
        --features runs/features_fashion_mnist/checkpoints/last.ckpt --num-samples 500 \
        --out docs/benchmarks/fid_sampler_study.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import data_module, hardware, score, write_result  # noqa: E402
from benchmarks.common import sampling as make_sampling  # noqa: E402
from callbacks.sample_grid import to_unit_range  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from metrics import ClassifierFeatures, InceptionV3Features, reference_features  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402

SETTINGS = [("ddpm", 1000, 1.0)] + [("ddim", s, eta) for eta in (0.0, 1.0) for s in (10, 20, 50, 100)]


METRICS = ("fid", "kid", "precision_recall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--features", required=True, help="FeatureClassifierModule checkpoint (in-domain extractor)")
    ap.add_argument("--inception-weights", default=None, help="local FID Inception weights; omitted: skip Inception")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma list like ddpm-1000,ddim-10-0 to run a subset")
    ap.add_argument("--cache-dir", default="runs/feature_cache")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    dm = data_module(args.config)
    model = DDPMModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
    n = args.num_samples

    extractors = {"classifier": ClassifierFeatures(args.features)}
    if args.inception_weights:
        extractors["inception"] = InceptionV3Features(args.inception_weights)
    test_images = dm.dataset("test").images
    refs = {name: reference_features(ex, test_images, args.cache_dir, {"dataset": dm.name, "split": "test"})[0]
            for name, ex in extractors.items()}

    # Floor: n real training images (seeded choice) against the same reference.
    train = dm.dataset("train").images
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:n]
    real_unit = train[pick].float() / 255
    rows = [{"setting": f"real train images (n={n}) — floor", "sec_per_image": 0.0,
             **{name: score(ex, refs[name], real_unit, args.seed, METRICS) for name, ex in extractors.items()}}]
    print(rows[-1])

    index = torch.arange(n)
    labels = index % 10 if model.num_classes else None
    wanted = set(args.only.split(",")) if args.only else None
    for sampler, steps, eta in SETTINGS:
        tag = f"{sampler}-{steps}" + (f"-{eta:g}" if sampler == "ddim" else "")
        if wanted and tag not in wanted:
            continue
        cfg = make_sampling(sampler, steps, eta, guidance_scale=args.guidance, seed=args.seed)
        start = time.perf_counter()
        with torch.no_grad():
            samples = torch.cat([model.generate(idx, None if labels is None else labels[idx], sampling=cfg)
                                 for idx in index.split(args.batch_size)])
        seconds = (time.perf_counter() - start) / n
        unit = to_unit_range(samples, model.value_range)
        rows.append({"setting": tag, "sampling": cfg.describe(), "sec_per_image": seconds,
                     **{name: score(ex, refs[name], unit, args.seed, METRICS) for name, ex in extractors.items()}})
        print(tag, {k: (v if not isinstance(v, dict) else {m: round(x, 4) for m, x in v.items()}) for k, v in rows[-1].items()
                    if k != "sampling"}, flush=True)

    write_result(args.out, {
        "what": "FID/KID/precision/recall vs sampler and steps, one DDPM",
        "command": " ".join(sys.argv),
        "checkpoint": args.ckpt, "checkpoint_sha256": sha256_of(args.ckpt), "ema": model.weights_are_ema,
        "num_samples": n, "labels": "i mod 10 (balanced)" if labels is not None else "unconditional",
        "guidance_scale": args.guidance,
        "reference": {name: {k: v for k, v in r.info.items() if k != "extractor"} for name, r in refs.items()},
        "extractors": {name: ex.describe() for name, ex in extractors.items()},
        "kid_protocol": "100 subsets of min(256, n), cubic kernel (x.y/d + 1)^3",
        "rows": rows, "software": software(), "hardware": hardware(),
    })


if __name__ == "__main__":
    main()
