"""In-domain FID/KID against NFE and wall-clock time for every sampler family on one DDPM and one NCSN.

Rows: DDPM ancestral at 1000 steps; DDIM (η = 0) at 10, 20, 50, 100 steps; Euler–Maruyama and predictor–
corrector (reverse diffusion + 1 Langevin step, 2 NFE per step) at matched NFE 10, 20, 50, 100; Heun's
probability-flow ODE (2N − 1 NFE); the adaptive dopri5 ODE at two tolerances; NCSN with annealed Langevin
(the seed's ε = 2e-5, T = 100 per level, U[−1, 1] start, 1000 NFE; and T = 10). Reference: the test split;
floor: n real training images. Extractors: the in-domain classifier, plus the FID Inception when
``--inception-weights`` is given. Writes a JSON table, a Markdown table and a FID-vs-NFE plot.

    python cli.py fit --config sweeps/ddpm_fashion_mnist_cpu.yaml          # ~10 min on 2 cores
    python cli.py fit --config sweeps/ncsn_fashion_mnist_cpu.yaml          # ~10 min
    python cli.py fit --config sweeps/features_fashion_mnist.yaml          # the in-domain extractor
    python benchmarks/sampler_nfe_study.py --config sweeps/ddpm_fashion_mnist_cpu.yaml \
        --ddpm-ckpt runs/ddpm_fashion_mnist_cpu/checkpoints/last.ckpt \
        --ncsn-ckpt runs/ncsn_fashion_mnist_cpu/checkpoints/last.ckpt \
        --features runs/features_fashion_mnist/checkpoints/last.ckpt --num-samples 500 \
        --out docs/benchmarks/sampler_nfe_study.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import data_module, hardware, score, write_result  # noqa: E402
from callbacks.sample_grid import to_unit_range  # noqa: E402
from diffusion import AdaptiveODE, AnnealedLangevin, DDIMSampler, DDPMSampler, EulerMaruyama, HeunODE, PredictorCorrector, Sampler  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from lightning_modules.contract import Sampling  # noqa: E402
from metrics import ClassifierFeatures, InceptionV3Features, reference_features  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402


def settings() -> list[tuple[str, str, str, Sampler]]:
    """(tag, family, model, sampler) of every row; model is ``ddpm`` or ``ncsn``."""
    rows: list[tuple[str, str, str, Sampler]] = [("ddpm-1000", "DDPM ancestral", "ddpm", DDPMSampler(None))]
    rows += [(f"ddim-{s}", "DDIM η=0", "ddpm", DDIMSampler(s, eta=0.0)) for s in (10, 20, 50, 100)]
    rows += [(f"em-{n}", "Euler–Maruyama", "ddpm", EulerMaruyama(n)) for n in (10, 20, 50, 100)]
    rows += [(f"pc-{n}", "PC (reverse diffusion + Langevin)", "ddpm", PredictorCorrector(n // 2)) for n in (10, 20, 50, 100)]
    rows += [(f"heun-{s}", "Heun PF-ODE", "ddpm", HeunODE(s)) for s in (5, 10, 25, 50)]
    rows += [(f"ode-{tol:g}", "adaptive PF-ODE (dopri5)", "ddpm", AdaptiveODE(rtol=tol, atol=tol)) for tol in (1e-3, 1e-5)]
    al = dict(sigma_1=1.0, sigma_L=0.01, levels=10, epsilon=2e-5, uniform_init=True, init_range=(-1.0, 1.0))
    rows += [(f"ncsn-al-{t}", "NCSN annealed Langevin", "ncsn", AnnealedLangevin(steps_per_level=t, **al)) for t in (10, 100)]
    return rows


def plot(rows: list[dict], extractor: str, path: Path) -> None:
    """FID against NFE (log x), one line per sampler family; the real-data floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    families: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("nfe") and extractor in row:
            families.setdefault(row["family"], []).append((row["nfe"], row[extractor]["fid"]))
    for family, points in families.items():
        points.sort()
        ax.plot(*zip(*points), marker="o", label=family)
    floor = next((r[extractor]["fid"] for r in rows if r["setting"].startswith("real")), None)
    if floor is not None:
        ax.axhline(floor, ls="--", c="grey", label="real train images (floor)")
    ax.set_xscale("log")
    ax.set_xlabel("network function evaluations per sample (NFE)")
    ax.set_ylabel(f"FID ({extractor} features)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(rows: list[dict], extractors: list[str]) -> str:
    head = "| setting | model | NFE | s / image | " + " | ".join(f"FID ({e}) | KID ({e})" for e in extractors) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(extractors))]
    for r in rows:
        cells = [r["setting"], r.get("model", "—"), str(r.get("nfe", "—")), f"{r['sec_per_image']:.3f}"]
        cells += [f"{r[e]['fid']:.2f} | {r[e]['kid']:.4f}" for e in extractors]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="config whose data section gives the data set")
    ap.add_argument("--ddpm-ckpt")
    ap.add_argument("--ncsn-ckpt", default=None,
                    help="NCSN checkpoint (sweeps/ncsn_fashion_mnist_cpu.yaml); omitted: no NCSN rows")
    ap.add_argument("--features", help="FeatureClassifierModule checkpoint (in-domain extractor)")
    ap.add_argument("--inception-weights", default=None, help="local FID Inception weights; omitted: skip Inception")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--guidance", type=float, default=0.0, help="CFG weight for the class-conditional DDPM")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma list of tags (ddim-10,pc-20,ncsn-al-100,...) to run a subset")
    ap.add_argument("--cache-dir", default="runs/feature_cache")
    ap.add_argument("--out", default="docs/benchmarks/sampler_nfe_study.json")
    ap.add_argument("--merge", nargs="+", default=None,
                    help="instead of sampling: combine the JSON results of runs that each did an --only subset")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if not (args.config and args.ddpm_ckpt and args.features):
        ap.error("--config, --ddpm-ckpt and --features are required (unless --merge)")
    torch.manual_seed(args.seed)

    dm = data_module(args.config)
    models = {"ddpm": DDPMModule.load_from_checkpoint(args.ddpm_ckpt, map_location="cpu", weights_only=True).eval()}
    if args.ncsn_ckpt:
        models["ncsn"] = DDPMModule.load_from_checkpoint(args.ncsn_ckpt, map_location="cpu", weights_only=True).eval()
    n = args.num_samples

    extractors = {"classifier": ClassifierFeatures(args.features)}
    if args.inception_weights:
        extractors["inception"] = InceptionV3Features(args.inception_weights)
    refs = {name: reference_features(ex, dm.dataset("test").images, args.cache_dir, {"dataset": dm.name, "split": "test"})[0]
            for name, ex in extractors.items()}
    train = dm.dataset("train").images
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:n]
    rows = [{"setting": f"real train images (n={n}) — floor", "sec_per_image": 0.0,
             **{name: score(ex, refs[name], train[pick].float() / 255, args.seed) for name, ex in extractors.items()}}]
    print(rows[-1], flush=True)

    header = {
        "what": "in-domain FID/KID vs NFE and wall-clock, DDPM under every sampler family + NCSN annealed Langevin",
        "command": " ".join(sys.argv), "num_samples": n,
        "checkpoints": {k: {"path": p, "sha256": sha256_of(p), "ema": models[k].weights_are_ema,
                            "process": models[k].provenance()["process"]}
                        for k, p in (("ddpm", args.ddpm_ckpt), ("ncsn", args.ncsn_ckpt)) if p},
        "labels": "DDPM: i mod 10 (balanced) when class-conditional; NCSN: unconditional",
        "guidance_scale": args.guidance,
        "reference": {name: {k: v for k, v in r.info.items() if k != "extractor"} for name, r in refs.items()},
        "extractors": {name: ex.describe() for name, ex in extractors.items()},
        "kid_protocol": "100 subsets of min(256, n), cubic kernel (x.y/d + 1)^3",
        "software": software(),
    }
    wanted = set(args.only.split(",")) if args.only else None
    index = torch.arange(n)
    for tag, family, which, sampler in settings():
        if (wanted and tag not in wanted) or which not in models:
            continue
        model = models[which]
        labels = index % model.num_classes if model.num_classes else None
        cfg = Sampling(sampler=sampler, guidance_scale=args.guidance if model.num_classes else 0.0, seed=args.seed)
        model.check_sampling(cfg)
        start, nfe = time.perf_counter(), []
        with torch.no_grad():
            chunks = []
            for idx in index.split(args.batch_size):
                chunks.append(model.generate(idx, None if labels is None else labels[idx], sampling=cfg))
                nfe.append(model.last_nfe)
        seconds = (time.perf_counter() - start) / n
        unit = to_unit_range(torch.cat(chunks), model.value_range)
        rows.append({"setting": tag, "family": family, "model": which, "sampling": cfg.describe(),
                     "nfe": float(sum(nfe)) / len(nfe), "sec_per_image": seconds,
                     **{name: score(ex, refs[name], unit, args.seed) for name, ex in extractors.items()}})
        print(tag, {k: v for k, v in rows[-1].items() if k != "sampling"}, flush=True)
        save(Path(args.out), header, rows, list(extractors), complete=False)  # a stopped run keeps its rows
    save(Path(args.out), header, rows, list(extractors), complete=True)


def save(out: Path, header: dict, rows: list[dict], extractors: list[str], complete: bool) -> None:
    """The JSON result, its Markdown table and the FID-vs-NFE plot."""
    write_result(str(out), {**header, "complete": complete, "rows": rows, "hardware": hardware()}, echo=False)
    out.with_suffix(".md").write_text(markdown(rows, extractors))
    plot(rows, "classifier", out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


def merge(parts: list[str], out: str) -> None:
    """One result from runs that each did a subset of the rows (``--only``) side by side, in settings() order."""
    results = [json.loads(Path(p).read_text()) for p in parts]
    order = {tag: i for i, (tag, *_rest) in enumerate(settings())}
    rows = {r["setting"]: r for res in results for r in res["rows"] if r["setting"] in order}
    floor = [r for r in results[0]["rows"] if r["setting"] not in order]
    header = {k: v for k, v in results[0].items() if k not in ("rows", "hardware", "complete", "command")}
    header["commands"] = [res.get("command") for res in results]
    header["hardware_of_parts"] = [res.get("hardware") for res in results]
    save(Path(out), header, floor + sorted(rows.values(), key=lambda r: order[r["setting"]]),
         [k for k in floor[0] if k not in ("setting", "sec_per_image")], complete=all(r.get("complete", True) for r in results))


if __name__ == "__main__":
    main()
