"""DiffuseVAEModule: a DDPM conditioned on a frozen VAE's reconstruction (Pandey et al. 2022, formulation 1).

The U-Net sees x̂ = clamp(VAE(x)) fused at its input, down path and skips (seed 002 §3.6-3.7) and is
trained with the usual ε-MSE. Everything diffusion-related (schedules, samplers, EMA, ``sample``) is
``DDPMModule``'s; this file only adds the frozen VAE and the two generation modes:

- ``prior``: z ~ N(0, I) → VAE decoder → x̂ → DDPM refinement (the generative use);
- ``reconstruction``: x̂ = VAE(x) of test images → DDPM refinement (seed 002's paired evaluation).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_modules.contract import Sampling
from lightning_modules.ddpm import DDPMModule
from lightning_modules.hparams import save_config_hparams
from lightning_modules.reconstruction_eval import ReconstructionEvaluation
from lightning_modules.vae import VAEModule
from metrics.checkpoints import read_checkpoint


def load_frozen_vae(path: str) -> VAEModule:
    """Load a VAEModule checkpoint in eval mode with gradients off, or explain what is wrong."""
    ckpt_path, _ = read_checkpoint(
        path, config_key="vae_checkpoint", expect_class="VAEModule", expect_prefix="vae.",
        how_to_make="Train the VAE first (python cli.py fit --config sweeps/vae_mnist.yaml writes "
                    "runs/vae_mnist/checkpoints/last.ckpt) and set --model.init_args.vae_checkpoint to its last.ckpt.")
    vae = VAEModule.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    return vae.eval().requires_grad_(False)


class DiffuseVAEModule(ReconstructionEvaluation, DDPMModule):
    """DDPM refiner of a frozen VAE. Takes every ``DDPMModule`` argument, plus:

    Args:
        vae_checkpoint: path to a trained VAEModule checkpoint (its EMA/state_dict weights are used).
        denoiser: a U-Net built with ``cond_channels`` equal to the image channels.
        cond_from_mean: condition on the decoded posterior mean instead of a sampled z (seed 002 samples z).
        generation_mode: what ``predict`` and the sample grids generate: ``prior`` or ``reconstruction``.
        lpips_weights: local torchvision AlexNet state dict for LPIPS in ``test`` (skipped if absent).
        report_dir: where ``test`` writes its report (default <default_root_dir>/eval).
    """

    def __init__(
        self,
        vae_checkpoint: str,
        denoiser: nn.Module,
        cond_from_mean: bool = False,
        generation_mode: Literal["prior", "reconstruction"] = "prior",
        lpips_weights: str | None = None,
        report_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(denoiser=denoiser, **kwargs)
        save_config_hparams(self, objects=("denoiser", "optimizer"))
        if getattr(denoiser, "cond_channels", 0) != self.image_shape[0]:
            raise ValueError(
                f"DiffuseVAE needs a denoiser with cond_channels={self.image_shape[0]} (the image channels), "
                f"got {getattr(denoiser, 'cond_channels', 0)}: set model.init_args.denoiser.init_args.cond_channels."
            )
        vae = load_frozen_vae(vae_checkpoint)
        if vae.value_range != self.value_range or vae.image_shape != self.image_shape:
            raise ValueError(
                f"the VAE was trained on images {vae.image_shape} in {vae.value_range}, but this model uses "
                f"{self.image_shape} in {self.value_range}; train the VAE on the same data settings."
            )
        self.vae = vae
        self.cond_from_mean = cond_from_mean
        self.generation_mode = generation_mode
        self.lpips_weights, self.report_dir = lpips_weights, report_dir

    accepts_guide = False  # a plain DDPMModule guide cannot read the VAE condition

    def train(self, mode: bool = True) -> "DiffuseVAEModule":
        super().train(mode)
        self.vae.eval()  # frozen: dropout off, always
        return self

    # ---- conditioning ------------------------------------------------------------------------------

    @torch.no_grad()
    def vae_condition(self, x0: Tensor, batch_idx: int | None = 0) -> Tensor:
        """x̂ = clamp(VAE(x)) in value_range (seed 002 Listing 5.9); ``batch_idx=None`` draws fresh z noise."""
        return self.vae.reconstruct(x0, batch_idx, use_mean=self.cond_from_mean)

    def denoiser_kwargs(self, x0: Tensor, batch_idx: int | None = None) -> dict[str, Any]:
        """Training (batch_idx None) conditions on fresh reparameterisation noise every step; validation
        and test are seeded by the batch index."""
        return {"cond": self.vae_condition(x0, batch_idx)}

    @torch.no_grad()
    def prior_condition(self, indices: Tensor, seed: int) -> Tensor:
        """Decoded prior samples, z_i from seed + 500_000 + i (kept apart from the x_T seeds)."""
        return self.vae.generate(indices, sampling=Sampling(seed=seed + 500_000)).to(self.device)

    # ---- generation --------------------------------------------------------------------------------

    def generate(self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 sampling: Sampling | None = None, **kwargs: Any) -> Tensor:
        """Refines ``cond`` (VAE reconstructions) or, without it, decoded prior samples; labels are unused."""
        sampling = sampling or self.sampling
        if cond is None:
            cond = self.prior_condition(indices, sampling.seed)
        return super().generate(indices, None, cond, sampling, **kwargs)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_idx: int = 0) -> Tensor:
        """Refine VAE(x) with the DDPM (``sampling`` settings; per-image seeds follow the batch index)."""
        indices = torch.arange(x.shape[0]) + batch_idx * x.shape[0]
        return self.generate(indices, cond=self.vae_condition(x, batch_idx))

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        indices, labels = batch
        if (self.sampling.generation_mode or self.generation_mode) == "reconstruction":
            test = self.trainer.datamodule.dataset("test")
            x = torch.stack([test[int(i) % len(test)][0] for i in indices]).to(self.device)
            labels = torch.stack([test[int(i) % len(test)][1] for i in indices])
            cond = self.vae_condition(x)
        else:
            cond, labels = self.prior_condition(indices, self.sampling.seed), torch.full_like(labels, -1)
        samples = self.generate(indices, cond=cond)
        return {"samples": samples.cpu(), "index": indices.cpu(), "labels": labels.cpu(), "condition": cond.cpu()}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "model": "DiffuseVAE", "vae_checkpoint": self.hparams.get("vae_checkpoint"),
                "generation_mode": self.sampling.generation_mode or self.generation_mode, "cond_from_mean": self.cond_from_mean}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        frozen = sum(1 for _ in self.vae.modules())
        # Lightning warns about every module in eval mode; here that is the frozen stage-1 VAE, by design
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        rank_zero_info(f"The stage-1 VAE ({frozen} modules) is frozen and stays in eval mode while the DDPM trains.")
