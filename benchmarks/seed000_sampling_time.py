"""Seconds per generated image of seed 000's six denoisers under DDIM (the shape of the thesis' Table 3.1).

Random weights (timing does not depend on them). Each measurement is a loop of ``steps`` network forwards
plus the deterministic DDIM update (spec §1.3, Eq. 1.17, η = 0; linear β 1e-4 → 0.02, T = 1000, "leading"
spacing), run by the project's ``diffusion.DDIMSampler``. Timing: one warm-up loop,
then the median of ``--repeats`` rounds, with CUDA synchronisation; seconds per image = loop time / batch.
Rounds are interleaved (each model and step count once per round) so a busy machine slows all alike.
FLOPs per step are counted once per model at the benchmark size and at 256×256 with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no memory, no compute).

    # CPU (minutes): smaller images, a subset of the step counts
    python benchmarks/seed000_sampling_time.py --out docs/benchmarks/seed000_sampling_time_cpu.json
    # GPU: the thesis' grid at 256×256, fp32 vs bf16 autocast, channels_last, torch.compile, batch 1 vs 32
    python benchmarks/seed000_sampling_time.py --device cuda --batch-sizes 1 32 \\
        --variants fp32 bf16 bf16+cl bf16+cl+compile --out docs/benchmarks/seed000_sampling_time_gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from diffusion import DDIMSampler, DenoiseFn  # noqa: E402
from diffusion.processes import DiscreteVPProcess  # noqa: E402
from networks.unet2d import UNet2D  # noqa: E402
from networks.uvit import UViT  # noqa: E402

MODELS = ["uvit-small", "uvit-large", "unet-small", "unet-small-attn", "unet-large", "unet-large-attn"]
THESIS_STEPS = [10, 20, 30, 50, 80, 100, 150, 300, 500, 800, 1000]
# Seed 000 Table 3.1 (spec §5.3): seconds per image on one NVIDIA L40; batch, precision and repeats not stated.
THESIS_L40 = {
    "uvit-small": [0.066, 0.125, 0.188, 0.314, 0.505, 0.628, 0.942, 1.888, 3.165, 5.084, 6.366],
    "uvit-large": [0.068, 0.123, 0.185, 0.308, 0.495, 0.621, 0.939, 1.877, 3.140, 5.020, 6.288],
    "unet-small": [0.146, 0.248, 0.372, 0.623, 0.994, 1.242, 1.860, 3.713, 6.173, 9.973, 12.366],
    "unet-small-attn": [0.175, 0.284, 0.424, 0.711, 1.149, 1.428, 2.133, 4.270, 7.149, 11.458, 14.287],
    "unet-large": [0.169, 0.292, 0.436, 0.733, 1.156, 1.443, 2.190, 4.408, 7.297, 11.658, 14.610],
    "unet-large-attn": [0.227, 0.333, 0.499, 0.840, 1.337, 1.673, 2.520, 5.048, 8.416, 13.457, 16.806],
}
SHARED_NOTE = ("CPU runs share the machine's 2 cores with other developers' jobs, so absolute times scatter "
               "and are upper bounds; compare models within one run.")


def build(name: str, image_size: int) -> nn.Module:
    """A preset with random weights; U-ViTs keep patch 16 and get the positional embedding of ``image_size``."""
    if name.startswith("uvit"):
        return UViT.from_preset(name, image_size=image_size)
    return UNet2D.from_preset(name)


def flops_per_step(name: str, image_size: int) -> int:
    """FLOPs of one denoiser forward on one image (FlopCounterMode, meta device)."""
    with torch.device("meta"):
        net = build(name, image_size)
        x, t = torch.zeros(1, 1, image_size, image_size), torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            net(x, t)
    return counter.get_total_flops()


def uvit_flops_analytic(d: int, tokens: int, depth: int = 12, patch: int = 16, channels: int = 1) -> int:
    """Matmul FLOPs of one U-ViT forward: per block 24·N·d² (qkv, proj, MLP 4d) + 4·N²·d (QKᵀ, AV); skips 4·N·d²."""
    n = tokens + 1
    blocks = (depth + 1) * (24 * n * d * d + 4 * n * n * d)
    skips = depth // 2 * 4 * n * d * d
    patch_io = 2 * tokens * d * patch * patch * channels + 2 * n * d * patch * patch * channels
    time_mlp = 2 * (d * 4 * d + 4 * d * d)
    return blocks + skips + patch_io + time_mlp + 2 * 9 * channels * channels * tokens * patch * patch


PROCESS = DiscreteVPProcess("linear", 1000, 1e-4, 0.02)


@torch.no_grad()
def ddim_loop(net: nn.Module, x: torch.Tensor, steps: int, autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """x_T → x_0 with the project's DDIM sampler (η = 0, leading spacing), the network under ``autocast``."""
    def net_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast:
            return net(xt, t).float()

    return DDIMSampler(steps).sample(DenoiseFn(net_fn, PROCESS.to(x.device)), x).x


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Timer:
    """One (model, variant, batch) cell: built and warmed up once, then timed loop by loop.

    variant = fp32 | bf16 (autocast), optionally +cl (channels_last) and/or +compile.
    """

    def __init__(self, name: str, variant: str, batch: int, args: argparse.Namespace) -> None:
        parts = variant.split("+")
        self.name, self.variant, self.batch, self.device = name, variant, batch, args.device
        torch.manual_seed(0)
        memory_format = torch.channels_last if "cl" in parts else torch.contiguous_format
        net = build(name, args.image_size).to(args.device).eval().to(memory_format=memory_format)
        self.net = torch.compile(net) if "compile" in parts else net
        self.autocast = (torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16) if "bf16" in parts
                         else contextlib.nullcontext())
        self.x = torch.randn(batch, 1, args.image_size, args.image_size, device=args.device).to(
            memory_format=memory_format)
        self.times: dict[int, list[float]] = {s: [] for s in args.steps}
        ddim_loop(self.net, self.x, min(args.steps), self.autocast)  # warm-up (and compilation)
        _sync(self.device)

    def run(self, steps: int) -> None:
        _sync(self.device)
        start = time.perf_counter()
        ddim_loop(self.net, self.x, steps, self.autocast)
        _sync(self.device)
        self.times[steps].append(time.perf_counter() - start)

    def seconds_per_image(self) -> dict[int, float]:
        return {s: statistics.median(v) / self.batch for s, v in self.times.items()}


def fit_ms_per_step(per_image: dict[int, float]) -> float:
    """Least-squares slope through the origin of seconds per image against steps, in ms per step."""
    return 1000 * sum(s * v for s, v in per_image.items()) / sum(s * s for s in per_image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--steps", nargs="+", type=int, help="DDIM step counts (default: CPU 10 20; GPU Table 3.1's)")
    parser.add_argument("--image-size", type=int, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--variants", nargs="+", default=["fp32"],
                        help="fp32 | bf16 (autocast), each optionally +cl (channels_last) and/or +compile")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds; the median is reported")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on CPU, where spinning thread "
                        "pools on shared cores ran 5-10x slower than one thread; torch's default on GPU)")
    parser.add_argument("--out", help="JSON result file")
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.steps = args.steps or (THESIS_STEPS if on_gpu else [10, 20])
    args.image_size = args.image_size or (256 if on_gpu else 32)
    if args.image_size % 16:
        parser.error(f"--image-size must be a multiple of 16 (U-ViT patch 16, U-Net 4 downsamplings), got {args.image_size}")
    for variant in args.variants:
        unknown = set(variant.split("+")) - {"fp32", "bf16", "cl", "compile"}
        if unknown or not {"fp32", "bf16"} & set(variant.split("+")):
            parser.error(f"variant {variant!r}: write fp32 or bf16, optionally +cl and/or +compile")

    if args.threads or not on_gpu:
        torch.set_num_threads(args.threads or 1)
    hw = hardware()
    load_before = os.getloadavg()
    flops = {m: {"at_benchmark_size": flops_per_step(m, args.image_size), "at_256": flops_per_step(m, 256)}
             for m in args.models}
    params = {}
    for m in args.models:
        with torch.device("meta"):
            params[m] = sum(p.numel() for p in build(m, 256).parameters())
    uvit_check = {m: uvit_flops_analytic(512 if m == "uvit-small" else 768, (args.image_size // 16) ** 2)
                  for m in args.models if m.startswith("uvit")}

    # Interleaved rounds (every cell once per round), so load spikes on a shared machine hit all models alike.
    timers = [Timer(m, v, b, args) for m in args.models for v in args.variants for b in args.batch_sizes]
    for round_ in range(args.repeats):
        for timer in timers:
            for steps in args.steps:
                timer.run(steps)
            cells = " ".join(f"{s}:{v[-1] / timer.batch:.3f}s" for s, v in timer.times.items())
            print(f"round {round_ + 1} {timer.name:16s} {timer.variant:16s} batch {timer.batch:3d}  {cells}", flush=True)
    results = []
    for timer in timers:
        per_image = timer.seconds_per_image()
        results.append({"model": timer.name, "variant": timer.variant, "batch": timer.batch,
                        "seconds_per_image": per_image, "ms_per_step_fit": fit_ms_per_step(per_image),
                        "loop_seconds_all_rounds": timer.times})

    thesis_fit = {m: fit_ms_per_step(dict(zip(THESIS_STEPS, v))) for m, v in THESIS_L40.items()}
    where = hw.get("gpu") or f"{hw['cpu']} ({hw['cpu_count']} cores, torch threads: {hw['torch_threads']})"
    lines = [f"Seconds per image, DDIM η=0, {args.image_size}×{args.image_size}, {where}; thesis: 256×256 on an L40",
             "| model | params | GFLOP/step here | GFLOP/step @256 | variant | batch | "
             + " | ".join(f"{s} steps (here / L40)" for s in args.steps) + " | ms/step here | ms/step L40 |",
             "|" + "---|" * (8 + len(args.steps))]
    for r in results:
        m = r["model"]
        thesis = dict(zip(THESIS_STEPS, THESIS_L40[m]))
        cells = " | ".join(f"{r['seconds_per_image'][s]:.3f} / " + (f"{thesis[s]:.3f}" if s in thesis else "–")
                           for s in args.steps)
        lines.append(f"| {m} | {params[m] / 1e6:.2f} M | {flops[m]['at_benchmark_size'] / 1e9:.2f} | "
                     f"{flops[m]['at_256'] / 1e9:.1f} | {r['variant']} | {r['batch']} | {cells} | "
                     f"{r['ms_per_step_fit']:.1f} | {thesis_fit[m]:.2f} |")
    print("\n".join(lines))

    write_result(args.out, {
        "benchmark": "seed000_sampling_time", "command": "python " + " ".join(sys.argv), "hardware": hw,
        "date": hw["date"], "torch": torch.__version__,
        "settings": {"image_size": args.image_size, "steps": args.steps, "batch_sizes": args.batch_sizes,
                     "variants": args.variants, "repeats": args.repeats, "warmup_loops": 1,
                     "sampler": "diffusion.DDIMSampler eta=0, leading spacing, linear beta 1e-4..0.02, T=1000",
                     "weights": "random", "uvit_patch": 16},
        "parameters": params, "flops_per_step": flops, "uvit_flops_analytic_at_benchmark_size": uvit_check,
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        "results": results, "table_markdown": "\n".join(lines),
        "thesis_l40_seconds_per_image": {"steps": THESIS_STEPS, **THESIS_L40},
        "thesis_l40_ms_per_step_fit": thesis_fit,
        "note": (SHARED_NOTE if not on_gpu else "GPU run.") + " FLOPs count one denoiser forward (multiply-add = 2 "
                "FLOPs); the DDIM update adds ~5 element-wise ops per pixel.",
    })


if __name__ == "__main__":
    main()
