"""VAEModule: trains seed 002's spatial-latent VAE on reconstruction + kl_weight · KL (§5)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lightning_modules.contract import Encodes, GenerativeModule, Sampling
from lightning_modules.data_checks import check_matches_data
from lightning_modules.hparams import save_config_hparams
from lightning_modules.lr_schedule import check_learning_rates
from lightning_modules.reconstruction_eval import ReconstructionEvaluation
from networks.vae import kl_divergence, reconstruction_loss


class VAEModule(ReconstructionEvaluation, Encodes, GenerativeModule):
    """Variational auto-encoder with an ELBO-style loss, prior sampling and seed 002's evaluation.

    Args:
        vae: the network (``networks.VAE``) returning (x̂ in [0, 1], μ, log σ²).
        recon_loss: ``mse``, ``bce`` or ``l1``.
        reduction: ``mean`` averages the reconstruction over pixels and the KL over latent elements
            (the scale at which seed 002 searched kl_weight in [1e-6, 1e-2]); ``sum`` sums both per image
            (the ELBO; use kl_weight near 1).
        kl_weight: weight of KL(q(z|x) ‖ N(0, I)).
        optimizer: optimizer factory.
        image_size: must match the data.
        channels: must match the data.
        value_range: pixel range of the data; the network works in [0, 1].
        lpips_weights: local torchvision AlexNet state dict for LPIPS in ``test`` (skipped if absent).
        report_dir: where ``test`` writes its report (default <default_root_dir>/eval).
    """

    def __init__(
        self,
        vae: nn.Module,
        recon_loss: Literal["mse", "bce", "l1"] = "mse",
        reduction: Literal["mean", "sum"] = "mean",
        kl_weight: float = 1e-3,
        optimizer: OptimizerCallable = torch.optim.Adam,
        image_size: int = 32,
        channels: int = 1,
        value_range: tuple[float, float] = (0.0, 1.0),
        lpips_weights: str | None = None,
        report_dir: str | None = None,
    ) -> None:
        super().__init__()
        save_config_hparams(self, objects=("vae", "optimizer"))
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
        self.vae = vae
        self.recon_loss, self.reduction, self.kl_weight = recon_loss, reduction, kl_weight
        self.optimizer_factory = optimizer
        self.image_shape = (channels, image_size, image_size)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.lpips_weights, self.report_dir = lpips_weights, report_dir

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_rec, mu, logvar = self.vae(self.to_unit(x))
        return self.from_unit(x_rec), mu, logvar

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        target = self.to_unit(x)
        mu, logvar = self.vae.encode(target)
        x_rec = self.vae.decode(self.vae.sample(mu, logvar, generator))
        recon = reconstruction_loss(x_rec, target, self.recon_loss)
        kl = kl_divergence(mu, logvar)
        if self.reduction == "mean":
            recon, kl = recon / target[0].numel(), kl / mu[0].numel()
        return {"loss": recon + self.kl_weight * kl, "recon": recon, "kl": kl}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0]
        parts = self.loss(x)
        self._last_loss = parts["loss"].detach()
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=x.shape[0])
        self.log_dict({"train/recon": parts["recon"], "train/kl": parts["kl"]}, batch_size=x.shape[0])
        return parts["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0]
        parts = self.loss(x, torch.Generator(device=self.device).manual_seed(10_000 + batch_idx))
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, sync_dist=True, batch_size=x.shape[0])

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_idx: int | None = 0, use_mean: bool = False) -> Tensor:
        """VAE(x) in value_range; z is sampled (as in seed 002) unless ``use_mean``.

        The noise is seeded by ``batch_idx`` (repeatable evaluation); ``batch_idx=None`` draws fresh noise.
        """
        mu, logvar = self.vae.encode(self.to_unit(x))
        g = None if batch_idx is None else torch.Generator(device=self.device).manual_seed(30_000 + batch_idx)
        z = mu if use_mean else self.vae.sample(mu, logvar, g)
        return self.from_unit(self.vae.decode(z).clamp(0, 1))

    @torch.no_grad()
    def encode_mean(self, x: Tensor) -> Tensor:
        return self.vae.encode(self.to_unit(x))[0]

    def latent_shape(self) -> tuple[int, int, int]:
        s = self.vae.latent_size(self.image_shape[1])
        return (self.vae.latent_channels, s, s)

    @torch.no_grad()
    def generate(self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 sampling: Sampling | None = None) -> Tensor:
        """Prior samples: z_i ~ N(0, I) from seed sampling.seed + i, decoded (Algorithm 4); the sampler is unused."""
        seed = (sampling or self.sampling).seed
        z = torch.stack([torch.randn(self.latent_shape(), generator=torch.Generator().manual_seed(seed + int(i)))
                         for i in indices]).to(self.device)
        return self.from_unit(self.vae.decode(z).clamp(0, 1))

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        indices, labels = batch
        samples = self.generate(indices)
        return {"samples": samples.cpu(), "index": indices.cpu(), "labels": torch.full_like(labels, -1).cpu()}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "model": "VAE", "z": "sampled (reparameterised)", "seed": self.sampling.seed}

    def setup(self, stage: str) -> None:
        check_matches_data(self.image_shape, self.value_range, getattr(self.trainer, "datamodule", None))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.vae.parameters())
        check_learning_rates(optimizer)
        return optimizer
