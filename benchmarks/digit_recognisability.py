"""How recognisable are a class-conditional DDPM's digits? A classifier trained on real digits reads them.

Trains a small CNN on the real training split (same data module, image size and value range as the
checkpoint), reports its accuracy on the real test split, then samples ``--per-class`` images of each
class from the checkpoint's EMA weights and reports how often the classifier agrees with the label the
sample was conditioned on. Real-test accuracy is the ceiling.

    python benchmarks/digit_recognisability.py --ckpt runs/ddpm_mnist_cpu/checkpoints/last.ckpt \\
        --config sweeps/ddpm_mnist_cpu.yaml --out docs/benchmarks/ddpm_mnist_cpu_quality.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, write_result  # noqa: E402
from benchmarks.common import sampling as make_sampling  # noqa: E402
from datamodules import FashionMNISTDataModule, MNISTDataModule  # noqa: E402
from lightning_modules import DDPMModule  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def train_classifier(dm, epochs: int, seed: int) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    clf = SmallCNN()
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    for _ in range(epochs):
        clf.train()
        for x, y in dm.train_dataloader():
            loss = F.cross_entropy(clf(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return clf.eval(), accuracy(clf, dm.test_dataloader())


@torch.no_grad()
def accuracy(clf, loader) -> float:
    correct = total = 0
    for x, y in loader:
        correct += (clf(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier-epochs", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    data_args = {k: v for k, v in config["data"]["init_args"].items()}
    data_args["num_workers"] = 0
    dm_cls = FashionMNISTDataModule if "Fashion" in config["data"]["class_path"] else MNISTDataModule
    dm = dm_cls(**data_args)
    dm.setup()
    clf, real_acc = train_classifier(dm, args.classifier_epochs, args.seed)

    model = DDPMModule.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True).eval()  # EMA weights, if any
    sampling = make_sampling(args.sampler, args.steps, args.eta, guidance_scale=args.guidance_scale, seed=args.seed)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    correct, confidences = 0, []
    for chunk in torch.arange(len(labels)).split(100):
        x = model.generate(chunk, labels[chunk], sampling=sampling)
        with torch.no_grad():
            probs = clf(x).softmax(1)
        correct += (probs.argmax(1) == labels[chunk]).sum().item()
        confidences.append(probs.max(1).values)
    result = {
        "benchmark": "digit_recognisability",
        "command": "python " + " ".join(sys.argv),
        "hardware": hardware(),
        "checkpoint": args.ckpt,
        "ema_weights": model.weights_are_ema,
        "sampling": asdict(sampling),
        "samples": len(labels),
        "data": dm.info,
        "classifier": {"arch": "SmallCNN (3 conv)", "epochs": args.classifier_epochs, "real_test_accuracy": real_acc},
        "generated_accuracy": correct / len(labels),
        "generated_mean_confidence": torch.cat(confidences).mean().item(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
