"""Timing in the shape of seed 002's Tables 6.2/6.3: training time per epoch and sampling ms per image,
for the VAE and the DiffuseVAE of the shipped configs (sweeps/vae_mnist.yaml, sweeps/diffuse_vae_mnist.yaml).

Epoch time = median measured step time × steps per MNIST epoch (54,000 training images / batch 64).
Sampling: VAE prior decoding and DiffuseVAE prior sampling (decode + DDIM refinement) at 1000, 100 and 10
steps, as ms per image at ``--sample-batch`` (the thesis used batch 128 on a GPU).

    python benchmarks/vae_diffusevae_timing.py --out docs/benchmarks/vae_diffusevae_timing_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from benchmarks.common import sampling as make_sampling  # noqa: E402
from lightning_modules import DDPMModule, VAEModule  # noqa: E402
from networks import VAE, UNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _init_args(config: str) -> dict:
    return yaml.safe_load((ROOT / config).read_text())["model"]["init_args"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_time(module, opt, batch_fn, steps: int, device: str) -> float:
    times = []
    for i in range(steps + 2):
        x = batch_fn()
        _sync(device)
        t0 = time.perf_counter()
        loss = module.training_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--sample-batch", type=int, default=4)
    p.add_argument("--sample-steps", type=int, nargs="+", default=[1000, 100, 10])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dev, b = args.device, args.batch_size
    steps_per_epoch = 54_000 // b

    vae_args = _init_args("sweeps/vae_mnist.yaml")
    vae = VAEModule(VAE(**vae_args["vae"]["init_args"]), kl_weight=vae_args["kl_weight"]).to(dev)
    vae.training_loss = lambda x: vae.loss(x)["loss"]
    dvae_args = _init_args("sweeps/diffuse_vae_mnist.yaml")
    ddpm = DDPMModule(UNet(**dvae_args["denoiser"]["init_args"]), beta_end=dvae_args["beta_end"]).to(dev)

    def dvae_loss(x):  # the DiffuseVAE step: frozen-VAE condition, then the DDPM loss
        return ddpm.diffusion_loss(x, None, cond=vae.reconstruct(x))

    ddpm.training_loss = dvae_loss
    batch = lambda: torch.rand(b, 1, 32, 32, device=dev)  # noqa: E731
    vae_step = step_time(vae, torch.optim.Adam(vae.parameters()), batch, args.train_steps, dev)
    dvae_step = step_time(ddpm, torch.optim.Adam(ddpm.denoiser.parameters()), batch, args.train_steps, dev)

    idx = torch.arange(args.sample_batch)
    vae.eval(), ddpm.eval()
    _sync(dev)
    t0 = time.perf_counter()
    vae.generate(idx)
    _sync(dev)
    vae_ms = (time.perf_counter() - t0) / len(idx) * 1000
    dvae_ms = {}
    for steps in args.sample_steps:
        _sync(dev)
        t0 = time.perf_counter()
        ddpm.generate(idx, cond=vae.generate(idx), sampling=make_sampling("ddim", steps))
        _sync(dev)
        dvae_ms[steps] = (time.perf_counter() - t0) / len(idx) * 1000
    result = {
        "benchmark": "vae_diffusevae_timing", "command": "python " + " ".join(sys.argv), "hardware": hardware(),
        "batch_size": b, "steps_per_epoch": steps_per_epoch, "image_size": 32,
        "vae": {"step_s": vae_step, "epoch_min": vae_step * steps_per_epoch / 60, "sample_ms_per_image": vae_ms,
                "parameters": sum(p.numel() for p in vae.vae.parameters())},
        "diffuse_vae": {"step_s": dvae_step, "epoch_min": dvae_step * steps_per_epoch / 60,
                        "sample_ms_per_image_by_steps": dvae_ms, "sample_batch": args.sample_batch,
                        "parameters": sum(p.numel() for p in ddpm.denoiser.parameters())},
        "note": "epoch time extrapolated from the median step time; DDIM eta=0; prior sampling",
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
