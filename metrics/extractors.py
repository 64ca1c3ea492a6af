"""Feature extractors for FID/KID/IS/precision-recall, with a stated preprocessing and a weights fingerprint.

Every extractor takes float images in [0, 1], shape (B, C, H, W), any C in {1, 3} and any size, and
returns ``(features (B, D), logits (B, K) or None)``. Channel replication and resizing happen inside, and
``describe()`` states them, so a reported number always says how its features were made (seed 000 §3.3).

* ``InceptionV3Features``: the torch-fidelity / torchmetrics port of the TF FID Inception (2048-d pool
  features, 1008 logits for IS), comparable with papers.
* ``ClassifierFeatures``: an in-domain network trained by this project (``FeatureClassifierModule``),
  seed 000's RadImageNet idea for any data set, offline.
* ``ModuleFeatures``: any user ``nn.Module`` (given by ``class_path`` in a config).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metrics.checkpoints import read_checkpoint
from metrics.provenance import sha256_of

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class ExtractorWeightsError(FileNotFoundError):
    """Extractor weights are missing, unreadable or of the wrong kind."""


def state_dict_sha256(module: nn.Module) -> str:
    """Fingerprint of a module's weights (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def match_channels(x: Tensor, channels: int) -> Tensor:
    """Grey → RGB by replicating the channel; RGB → grey by the channel mean."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"Cannot map {x.shape[1]} image channels to the extractor's {channels}.")


class FeatureExtractor(nn.Module):
    """Frozen, always in eval mode. Subclasses set ``name``, ``num_features`` and implement ``extract``."""

    name: str = "extractor"
    num_features: int = 0
    input_channels: int = 3
    input_size: int | None = None
    resize: str = "none"
    weights_sha256: str = ""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    def extract(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if x.dim() != 4 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"Expected float images (B, C, H, W) in [0, 1], got {tuple(x.shape)} {x.dtype}.")
        features, logits = self.extract(x.float().clamp(0, 1))
        return features.double(), None if logits is None else logits.double()

    def describe(self) -> dict[str, Any]:
        """Provenance of the features: what network, which weights, what preprocessing."""
        mapping = "grey replicated to 3 channels" if self.input_channels == 3 else "grey as is, RGB averaged to grey"
        return {"name": self.name, "num_features": self.num_features, "weights_sha256": self.weights_sha256,
                "input_channels": self.input_channels, "input_size": self.input_size, "resize": self.resize,
                "channel_mapping": mapping}

    def fingerprint(self) -> str:
        d = self.describe()
        return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:16]


def resolve_inception_weights(weights_path: str | None) -> Path:
    """A local file, else torch hub's cache, else a download; offline with no file is a clear error."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ExtractorWeightsError(
                f"Inception weights_path {str(path)!r} does not exist. Download {INCEPTION_URL} on a machine with "
                "network access and point weights_path at the file."
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(INCEPTION_URL).name
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=True)
    except Exception as err:  # offline, proxy, disk: all end the same way for the user
        raise ExtractorWeightsError(
            f"Could not download the FID Inception weights ({type(err).__name__}: {err}). Either run once with "
            f"network access (the file is cached in {cached.parent}), or download {INCEPTION_URL} elsewhere and set "
            "weights_path to the local file (e.g. --...extractor.init_args.weights_path /path/to/"
            f"{cached.name}). For offline, in-domain features use metrics.ClassifierFeatures instead."
        ) from err
    return cached


class InceptionV3Features(FeatureExtractor):
    """The FID InceptionV3 (torch-fidelity port of the TF 2015-12-05 graph), 2048-d pool3 features.

    Args:
        weights_path: local ``weights-inception-2015-12-05-6726825d.pth``; null uses torch hub's cache or downloads.
        resize: ``tf1x-bilinear`` (TF / torch-fidelity / pytorch-fid compatible, the default for comparability)
            or ``bilinear-antialias`` (torchmetrics' default).
    """

    input_size = 299
    num_features = 2048
    input_channels = 3

    def __init__(
        self, weights_path: str | None = None, resize: Literal["tf1x-bilinear", "bilinear-antialias"] = "tf1x-bilinear"
    ) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = resolve_inception_weights(weights_path)
        try:
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(path), antialias=resize == "bilinear-antialias",
            )
        except Exception as err:
            raise ExtractorWeightsError(f"{path} is not a usable FID Inception state dict: {err}") from err
        self.name = "inceptionv3-fid"
        self.resize = f"{resize} to 299x299 (inside the network), input quantised to uint8 by round(255·x)"
        self.weights_sha256 = sha256_of(path)
        self.freeze()

    def extract(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = (match_channels(x, 3) * 255).round().to(torch.uint8)
        features, logits = self.net._torch_fidelity_forward(x)
        return features, logits


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features and logits of an in-domain classifier trained with ``sweeps/features_*.yaml``.

    Args:
        checkpoint: a ``FeatureClassifierModule`` checkpoint (``runs/features_*/checkpoints/last.ckpt``).
    """

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        path, ckpt = read_checkpoint(
            checkpoint, config_key="ClassifierFeatures checkpoint", expect_class="FeatureClassifierModule",
            expect_prefix="net.", missing_error=ExtractorWeightsError, invalid_error=ExtractorWeightsError,
            how_to_make="Train one with `python cli.py fit --config sweeps/features_fashion_mnist.yaml` (or "
                        "features_mnist.yaml) and point checkpoint at runs/features_*/checkpoints/last.ckpt.")
        hp = ckpt["hyper_parameters"]
        from networks.classifier import FeatureCNN

        net = FeatureCNN(**{k: hp[k] for k in FeatureCNN.ARGS if k in hp})
        net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
        self.net = net
        self.name = f"classifier:{path.name}"
        self.num_features = net.feature_dim
        self.input_channels = net.in_channels
        self.input_size = net.image_size
        self.value_range = tuple(hp.get("value_range", (0.0, 1.0)))
        self.resize = f"bilinear, antialiased, to {net.image_size}x{net.image_size} (skipped when already that size)"
        self.weights_sha256 = sha256_of(path)
        self.val_accuracy = ckpt.get("genlab", {}).get("val_accuracy")
        self.freeze()

    def extract(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x = match_channels(x, self.input_channels)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        low, high = self.value_range
        features = self.net.features(x * (high - low) + low)
        return features, self.net.head(features)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classifier_val_accuracy": self.val_accuracy}


class ModuleFeatures(FeatureExtractor):
    """Wraps a user module: it gets the images as float [0, 1] at the data's size and channels, returns (B, D)."""

    def __init__(self, module: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.net = module
        self.name = name or f"{type(module).__module__}.{type(module).__qualname__}"
        self.input_channels = getattr(module, "input_channels", 0) or 0
        self.resize = "none (the module's own)"
        self.weights_sha256 = state_dict_sha256(module)
        self.num_features = int(getattr(module, "num_features", 0) or 0)
        self.freeze()

    def extract(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.input_channels:
            x = match_channels(x, self.input_channels)
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            return out[0].flatten(1), (out[1] if len(out) > 1 else None)
        return out.flatten(1), None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if not self.input_channels:
            d["channel_mapping"] = "none (images passed as they are)"
        return d


def as_extractor(module: nn.Module) -> FeatureExtractor:
    return module if isinstance(module, FeatureExtractor) else ModuleFeatures(module)
