"""DDPM speed: Lightning's overhead against a bare PyTorch loop, and DDIM sampling cost.

Both training loops do the same work on the same U-Net, batch and data (in memory): sample t and ε,
noise the batch, predict, MSE, backward, clip to 1.0, Adam step. They are interleaved (bare, Lightning,
bare, ...) and the ratio is taken per round, so machine noise hits both alike. Throughput is the batch
size over the median per-step interval (end of one step to the end of the next, so data fetching and
every hook are included), which resists the spikes of a shared machine.

    python benchmarks/ddpm_speed.py --out docs/benchmarks/ddpm_speed_cpu.json            # CPU preset
    python benchmarks/ddpm_speed.py --preset mnist --device cuda --batch-size 64 --out docs/benchmarks/ddpm_speed_gpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, Trainer
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from callbacks.ema import WarmupEMAFn  # noqa: E402
from diffusion import DDIMSampler  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402
from networks.unet import UNet, count_parameters  # noqa: E402

CPU_MODEL_BLOCK = Path(__file__).resolve().parents[1] / "sweeps" / "blocks" / "model_ddpm_cpu.yaml"


def recipe_unet_args(block: Path = CPU_MODEL_BLOCK) -> dict:
    """The CPU recipes' U-Net arguments, read from their model block so the timed network is what users train."""
    return dict(yaml.safe_load(block.read_text())["init_args"]["denoiser"]["init_args"])


PRESETS = {  # the denoisers of sweeps/ddpm_mnist_cpu.yaml and sweeps/ddpm_mnist.yaml
    "cpu": recipe_unet_args(),
    "mnist": dict(channels=(32, 64, 128, 256), down_sample=(True, True, False), attention=(False, True, True),
                  num_layers=2, num_heads=4, t_emb_dim=128, num_classes=10),
}


def make_net(preset: str | dict, device: str) -> UNet:
    """The U-Net of a named preset, or of explicit UNet keyword arguments."""
    torch.manual_seed(0)
    return UNet(**(PRESETS[preset] if isinstance(preset, str) else preset)).to(device)


def bare_loop(preset, data, steps, warmup, device, ema: bool = False, optimizer: type = torch.optim.Adam) -> float:
    """images/s of a hand-written loop doing DDPMModule's training step; ``ema`` adds the CPU recipes' per-step
    EMA update (callbacks.EMA's warm-up average), a cost per step rather than per image; ``optimizer`` is the
    class that steps (built with lr only)."""
    net = make_net(preset, device)
    average = AveragedModel(net, avg_fn=WarmupEMAFn(0.999, 2 / 3)) if ema else None
    module = DDPMModule(net, num_timesteps=1000)  # only for its schedule and loss maths
    module.to(device)
    opt = optimizer(net.parameters(), lr=1e-4)
    x_all, y_all = data
    b = x_all.shape[0] // (steps + warmup)
    stamps = []
    for i in range(steps + warmup):
        x0, y = x_all[i * b:(i + 1) * b].to(device), y_all[i * b:(i + 1) * b].to(device)
        t = torch.randint(0, 1000, (b,), device=device)
        noise = torch.randn_like(x0)
        xt = module.process.add_noise(x0, noise, t)
        y = torch.where(torch.rand(b, device=device) < 0.1, torch.full_like(y, -1), y)
        loss = F.mse_loss(net(xt, t, y), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if average is not None:
            average.update_parameters(net)
        _sync(device)
        stamps.append(time.perf_counter())
    return b / statistics.median(_intervals(stamps[warmup - 1:]))


def _intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


class _Timer(Callback):
    """Time stamps at the end of every training batch: intervals cover the whole loop iteration."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(pl_module.device)
        self.stamps.append(time.perf_counter())


def lightning_loop(preset, data, steps, warmup, device) -> float:
    """images/s of DDPMModule under the Lightning Trainer (no logger, checkpoints or progress bar)."""
    net = make_net(preset, device)
    module = DDPMModule(net, num_timesteps=1000, optimizer=lambda p: torch.optim.Adam(p, lr=1e-4))
    b = data[0].shape[0] // (steps + warmup)
    loader = DataLoader(TensorDataset(*data), batch_size=b, shuffle=False)
    timer = _Timer()
    trainer = Trainer(
        max_steps=steps + warmup, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
        limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    return b / statistics.median(_intervals(timer.stamps[warmup - 1:]))


@torch.no_grad()
def sampling_times(preset, image_size, batch, step_counts, device) -> dict:
    net = make_net(preset, device).eval()
    module = DDPMModule(net, num_timesteps=1000, image_size=image_size).to(device).eval()
    x = torch.randn(batch, 1, image_size, image_size, device=device)
    t = torch.full((batch,), 500, device=device)
    y = torch.arange(batch, device=device) % 10
    for _ in range(3):
        net(x, t, y)
    _sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        net(x, t, y)
    _sync(device)
    forward_ms = (time.perf_counter() - t0) / reps / batch * 1000
    out = {"batch": batch, "forward_ms_per_image": forward_ms, "ddim": {}}
    for steps in step_counts:
        _sync(device)
        t0 = time.perf_counter()
        module.sample(batch, DDIMSampler(steps), labels=y, generator=torch.Generator(device).manual_seed(0))
        _sync(device)
        ms = (time.perf_counter() - t0) / batch * 1000
        out["ddim"][steps] = {"ms_per_image": ms, "overhead_vs_forward": ms / (steps * forward_ms)}
    return out


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--sample-steps", type=int, nargs="+", default=[10, 50, 100, 1000])
    p.add_argument("--out", default=None)
    args = p.parse_args()

    n = args.batch_size * (args.steps + args.warmup)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(n, 1, args.image_size, args.image_size, generator=g), torch.randint(0, 10, (n,), generator=g))
    rounds = []
    for _ in range(args.rounds):
        bare = bare_loop(args.preset, data, args.steps, args.warmup, args.device)
        light = lightning_loop(args.preset, data, args.steps, args.warmup, args.device)
        rounds.append({"bare_images_per_s": bare, "lightning_images_per_s": light, "overhead": bare / light - 1})
    result = {
        "benchmark": "ddpm_speed",
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "preset": args.preset,
        "parameters": count_parameters(make_net(args.preset, "cpu")),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "training_rounds": rounds,
        "lightning_overhead_median": statistics.median(r["overhead"] for r in rounds),
        "sampling": sampling_times(args.preset, args.image_size, args.sample_batch, args.sample_steps, args.device),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
