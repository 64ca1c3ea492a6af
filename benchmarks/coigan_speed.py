"""COIGAN training-step speed: iterations/s of ``COIGANModule`` under Lightning vs the same computation as a plain
PyTorch loop, in alternating rounds (one run gives the ratio; the rounds show the noise of a shared machine).

An iteration is one turn (D, G, D, G, …) with the seed's lazy schedule (R1 every 16 D turns, path length every
4 G turns), so a mean over 2·k iterations covers whole D+G pairs. Batches are pre-built random tensors (data
loading is excluded: this measures the training step).

    python benchmarks/coigan_speed.py --out docs/benchmarks/coigan_speed_cpu.json              # 64², small nets
    python benchmarks/coigan_speed.py --device cuda --preset seed --size 256 --batch 8 \\
        --out docs/benchmarks/coigan_speed_cuda.json                                         # the seed's recipe

``--preset small`` uses the networks of ``sweeps/coigan_synthetic.yaml`` (no perceptual loss); ``--preset seed`` the
seed's (24.4 M-parameter generator, two SWAGANs with multiplier 3, the ResNet-PL loss on a randomly initialised
ADE20k encoder: the weights do not change the cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from lightning_modules.coigan import COIGANModule  # noqa: E402
from lightning_modules.coigan_inference import extract_defects  # noqa: E402
from networks.gan_losses import combine_losses, d_logistic_loss, g_nonsaturating_loss  # noqa: E402

PRESETS = {
    "small": dict(generator={"ngf": 8, "n_blocks": 2},
                  discriminator={"channel_multiplier": 1, "channel_base": 1024, "low_res_channels": 32},
                  loss_weights={"perceptual_smooth": 0.0, "smooth_kernel_size": 9}),
    "seed": dict(),
}


class FixedBatches(Dataset):
    """``n`` pre-built random COIGAN batches (already collated), served without copying."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def random_batches(n: int, batch: int, size: int, classes: int, device: str) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        masks = (torch.rand(batch, classes, size, size, generator=g) > 0.9).float()
        base = torch.rand(batch, 3, size, size, generator=g)
        out.append({k: v.to(device) for k, v in {
            "base": base, "ref": torch.rand(batch, 3, size, size, generator=g),
            "gen_input": torch.cat([base, masks * torch.rand(masks.shape, generator=g)], 1),
            "disc_input": extract_defects(torch.rand(batch, 3, size, size, generator=g), masks),
            "orig_gen_input_masks": masks, "gen_input_union_mask": masks.amax(1)}.items()})
    return out


def build(preset: str, size: int, weights: str | None) -> COIGANModule:
    kwargs = dict(PRESETS[preset])
    if preset == "seed":
        kwargs["perceptual_weights_path"] = weights
    torch.manual_seed(0)
    return COIGANModule(image_size=size, num_classes=4, **kwargs)


class Clock(Callback):
    """Wall time of iterations after ``warmup`` (synchronised on CUDA)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.count = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            _sync()
            self.end, self.count = time.perf_counter(), batch_idx + 1 - self.warmup


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def lightning_its(model: COIGANModule, batches: list, warmup: int, device: str) -> float:
    clock = Clock(warmup)
    loader = DataLoader(FixedBatches(batches), batch_size=None, shuffle=False)
    trainer = Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock])
    trainer.fit(model, loader)
    return clock.count / (clock.end - clock.start)


def plain_its(model: COIGANModule, batches: list, warmup: int, device: str) -> float:
    """The same turns written as a plain PyTorch loop (the seed's trainer structure), on the same networks."""
    model = model.to(device).train()
    w = model.weights
    G, D, R = model.generator, model.discriminator, model.ref_discriminator
    opts = model.configure_optimizers()
    d_turns = g_turns = 0

    def step(opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def freeze(train: torch.nn.Module) -> None:
        for net in (G, D, R):
            net.requires_grad_(net is train)

    start = 0.0
    for k, batch in enumerate(batches, start=1):
        if k == warmup + 1:
            _sync()
            start = time.perf_counter()
        masks = batch["orig_gen_input_masks"]
        if (k - 1) % 2 == 0:
            with torch.no_grad():
                fake = G(batch["gen_input"])
            freeze(D)
            step(opts[1], w.d_logistic * d_logistic_loss(D(batch["disc_input"]), D(extract_defects(fake, masks))))
            if model.r1.applies(d_turns):
                real = batch["disc_input"].detach().requires_grad_(True)
                step(opts[1], model.r1(D(real), real))
            freeze(R)
            step(opts[2], w.ref_d_logistic * d_logistic_loss(R(batch["ref"]), R(fake)))
            if model.ref_r1.applies(d_turns):
                real = batch["ref"].detach().requires_grad_(True)
                step(opts[2], model.ref_r1(R(real), real))
            d_turns += 1
        else:
            freeze(G)
            fake = G(batch["gen_input"])
            base = batch["gen_input"][:, :3]
            terms = {"adversarial": g_nonsaturating_loss(D(extract_defects(fake, masks))),
                     "ref_adversarial": g_nonsaturating_loss(R(fake)), "l1_smooth": model.l1_smooth(fake, base, masks)}
            if model.perceptual is not None:
                terms["perceptual_smooth"] = model.perceptual(fake, base, masks)
            step(opts[0], combine_losses(terms, vars(w), w.reduction))
            if model.path_length.applies(g_turns):
                x = batch["gen_input"].detach().requires_grad_(True)
                step(opts[0], model.path_length(G(x), x)[0])
            g_turns += 1
    _sync()
    return (len(batches) - warmup) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None, help="default: small on cpu, seed on cuda")
    parser.add_argument("--size", type=int, default=None, help="tile side (default 64 on cpu, 256 on cuda)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=16, help="timed iterations per round (even)")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    preset = args.preset or ("seed" if args.device == "cuda" else "small")
    size = args.size or (256 if args.device == "cuda" else 64)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible.")
    weights = None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if preset == "seed":
            from networks.gan_losses import ResNet50DilatedEncoder

            weights = str(Path(tmp) / "encoder_random.pth")
            torch.save(ResNet50DilatedEncoder().state_dict(), weights)
        batches = random_batches(args.warmup + args.iterations, args.batch, size, 4, args.device)
        rounds = []
        for _ in range(args.rounds):
            plain = plain_its(build(preset, size, weights), batches, args.warmup, args.device)
            light = lightning_its(build(preset, size, weights), batches, args.warmup, args.device)
            rounds.append({"plain_its_per_s": plain, "lightning_its_per_s": light, "lightning_over_plain": light / plain})
            print(rounds[-1])
    model = build(preset, size, weights) if preset != "seed" else None
    params = None if model is None else {n: sum(p.numel() for p in getattr(model, n).parameters())
                                          for n in ("generator", "discriminator", "ref_discriminator")}
    result = {
        "benchmark": "coigan_speed",
        "command": "python benchmarks/coigan_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "hardware": hardware(),
        "note": "CPU shared with other developers' jobs during the run (load average above the core count): absolute "
                "numbers are pessimistic and noisy; the rounds alternate plain and Lightning to share the noise."
                if args.device == "cpu" else "",
        "load_average_1_5_15min": {"before": [round(v, 2) for v in load_before],
                                   "after": [round(v, 2) for v in os.getloadavg()]},
        "device": args.device, "preset": preset, "image_size": size, "batch_size": args.batch, "parameters": params,
        "iteration": "one turn: D turns (logistic D, logistic refD, + R1 each every 16th) and G turns (loss, + path "
                     "length every 4th) alternate; its/s counts turns, half of them G updates",
        "timed_iterations_per_round": args.iterations, "warmup_iterations": args.warmup, "rounds": rounds,
        "lightning_its_per_s_median": statistics.median(r["lightning_its_per_s"] for r in rounds),
        "plain_its_per_s_median": statistics.median(r["plain_its_per_s"] for r in rounds),
        "lightning_over_plain_median": statistics.median(r["lightning_over_plain"] for r in rounds),
    }
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
