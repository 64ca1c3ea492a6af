"""Training throughput of candidate denoisers against the CPU recipe's U-Net, as ratios measured in one run.

The issue's capacity rule is "images/s on 2 cores within 10 % of today's". Each variant overrides some of the
U-Net arguments of `sweeps/blocks/model_ddpm_cpu.yaml`; all variants run the same bare training step
(`ddpm_speed.bare_loop`: t, ε, noising, forward, MSE, backward, clip, Adam or an `--optimizer-variant`'s class;
with `--ema` also the recipe's EMA update) on the same in-memory data, interleaved round by round so the
machine's noise hits them alike. The ratio to the baseline is taken per round and its median reported.

    python benchmarks/denoiser_throughput.py --variant full_res_24 '{"channels": [24, 32, 64]}' \\
        --variant two_layers '{"num_layers": 2}' --out docs/benchmarks/denoiser_throughput_cpu.json

(docs/benchmarks.md, "Capacity at full resolution", has the full command of the committed result.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from benchmarks.ddpm_speed import CPU_MODEL_BLOCK, bare_loop, make_net, recipe_unet_args  # noqa: E402
from cli import import_object  # noqa: E402
from networks.unet import count_parameters  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                   help="a candidate: a name and a JSON object of U-Net arguments that override the recipe's")
    p.add_argument("--batch-variant", nargs=2, action="append", default=[], metavar=("NAME", "BATCH"),
                   help="a candidate: the recipe's U-Net trained at another batch size (same images per budget "
                        "means more, smaller steps)")
    p.add_argument("--optimizer-variant", nargs=2, action="append", default=[], metavar=("NAME", "CLASS"),
                   help="a candidate: the recipe's U-Net stepped by another optimizer class, e.g. networks.MuonAdamW")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per round and variant")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ema", action="store_true",
                   help="add the recipe's EMA update to every step: a per-step cost that matters when batch sizes differ")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not args.variant and not args.batch_variant and not args.optimizer_variant:
        p.error("name at least one --variant, --batch-variant or --optimizer-variant to compare with the baseline")
    torch.set_num_threads(args.threads)

    base = recipe_unet_args()
    variants = {"baseline": base}
    batches = {"baseline": args.batch_size}
    for name, overrides in args.variant:
        try:
            variants[name] = {**base, **json.loads(overrides)}
        except json.JSONDecodeError as err:
            p.error(f"--variant {name}: the overrides are not a JSON object ({err}); quote them, e.g. '{{\"num_layers\": 2}}'")
        batches[name] = args.batch_size
    for name, batch in args.batch_variant:
        if not batch.isdigit() or int(batch) < 1:
            p.error(f"--batch-variant {name}: the batch size must be a positive integer, got {batch!r}")
        variants[name], batches[name] = base, int(batch)
    optimizers = dict.fromkeys(variants, torch.optim.Adam)
    for name, dotted in args.optimizer_variant:
        try:
            optimizers[name] = import_object(dotted)
        except (ImportError, AttributeError, ValueError) as err:
            p.error(f"--optimizer-variant {name}: cannot import {dotted!r} ({err}); give a dotted class path")
        variants[name], batches[name] = base, args.batch_size
    for name, kwargs in variants.items():
        try:
            make_net(kwargs, "cpu")  # a bad argument fails here, before any timing
        except (TypeError, ValueError) as err:
            p.error(f"--variant {name}: networks.UNet refuses these arguments: {err}")

    n = max(batches.values()) * (args.steps + args.warmup)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(n, 1, args.image_size, args.image_size, generator=g) * 2 - 1,
            torch.randint(0, 10, (n,), generator=g))

    def timed(name: str) -> float:
        m = batches[name] * (args.steps + args.warmup)  # bare_loop's batch is the data's size over the step count
        return bare_loop(variants[name], (data[0][:m], data[1][:m]), args.steps, args.warmup, "cpu", ema=args.ema,
                         optimizer=optimizers[name])

    rounds = []
    for _ in range(args.rounds):
        rounds.append({name: timed(name) for name in variants})
    result = {
        "benchmark": "denoiser_throughput",
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "threads": args.threads,
        "ema_update_per_step": args.ema,
        "image_size": args.image_size,
        "baseline_block": str(CPU_MODEL_BLOCK.relative_to(CPU_MODEL_BLOCK.parents[2])),
        "variants": {
            name: {
                "unet": kwargs,
                "batch_size": batches[name],
                "optimizer": f"{optimizers[name].__module__}.{optimizers[name].__name__}",
                "parameters": count_parameters(make_net(kwargs, "cpu")),
                "images_per_s_median": statistics.median(r[name] for r in rounds),
                "ratio_to_baseline_median": statistics.median(r[name] / r["baseline"] for r in rounds),
            }
            for name, kwargs in variants.items()
        },
        "rounds": rounds,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
