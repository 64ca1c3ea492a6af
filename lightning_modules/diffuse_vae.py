"""DiffuseVAEModule: a DDPM conditioned on a frozen VAE's reconstruction (Pandey et al. 2022, formulation 1).

The U-Net sees x̂ = clamp(VAE(x)) fused at its input, down path and skips (seed 002 §3.6-3.7) and is
trained with the usual ε-MSE. Everything diffusion-related (schedules, samplers, EMA, ``sample``) is
``DDPMModule``'s; this file only adds the frozen VAE and the two generation modes:

- ``prior``: z ~ N(0, I) → VAE decoder → x̂ → DDPM refinement (the generative use);
- ``reconstruction``: x̂ = VAE(x) of test images → DDPM refinement (seed 002's paired evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from diffusion.samplers import SamplingConfig
from lightning_modules.ddpm import DDPMModule
from lightning_modules.hparams import save_config_hparams
from lightning_modules.reconstruction_eval import ReconstructionEvaluation
from lightning_modules.vae import VAEModule


def load_frozen_vae(path: str) -> VAEModule:
    """Load a VAEModule checkpoint in eval mode with gradients off, or explain what is wrong."""
    ckpt_path = Path(path).expanduser()
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"vae_checkpoint {str(ckpt_path)!r} does not exist. Train the VAE first "
            "(python cli.py fit --config sweeps/vae_mnist.yaml writes runs/vae_mnist/checkpoints/last.ckpt) "
            "or set --model.init_args.vae_checkpoint to its last.ckpt."
        )
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"vae_checkpoint {str(ckpt_path)!r} is not a readable checkpoint: {err}") from err
    class_path = (ckpt.get("hyper_parameters") or {}).get("_class_path", "")
    if not class_path.endswith("VAEModule") or not any(k.startswith("vae.") for k in ckpt.get("state_dict", {})):
        raise ValueError(
            f"vae_checkpoint {str(ckpt_path)!r} is not a VAEModule checkpoint (model class: {class_path or 'unknown'}). "
            "Point it at the last.ckpt of a `fit --config sweeps/vae_*.yaml` run."
        )
    vae = VAEModule.load_from_checkpoint(ckpt_path, map_location="cpu")
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

    def train(self, mode: bool = True) -> "DiffuseVAEModule":
        super().train(mode)
        self.vae.eval()  # frozen: dropout off, always
        return self

    # ---- conditioning ------------------------------------------------------------------------------

    @torch.no_grad()
    def vae_condition(self, x0: Tensor, batch_idx: int = 0) -> Tensor:
        """x̂ = clamp(VAE(x)) in value_range (seed 002 Listing 5.9)."""
        return self.vae.reconstruct(x0, batch_idx, use_mean=self.cond_from_mean)

    def denoiser_kwargs(self, x0: Tensor, batch_idx: int | None = None) -> dict[str, Any]:
        return {"cond": self.vae_condition(x0, batch_idx or 0)}

    @torch.no_grad()
    def prior_condition(self, indices: Tensor, seed: int) -> Tensor:
        """Decoded prior samples, z_i from seed + 500_000 + i (kept apart from the x_T seeds)."""
        return self.vae.sample_with_config(SamplingConfig(seed=seed + 500_000), indices).to(self.device)

    # ---- generation --------------------------------------------------------------------------------

    def sample_with_config(self, config: SamplingConfig, indices: Tensor, labels: Tensor | None = None,
                           cond: Tensor | None = None, **kwargs: Any) -> Tensor:
        if cond is None:
            cond = self.prior_condition(indices, config.seed)
        return super().sample_with_config(config, indices, None, cond=cond, **kwargs)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_idx: int = 0) -> Tensor:
        """Refine VAE(x) with the DDPM (``sampling`` settings; per-image seeds follow the batch index)."""
        indices = torch.arange(x.shape[0]) + batch_idx * x.shape[0]
        return self.sample_with_config(self.sampling, indices, cond=self.vae_condition(x, batch_idx))

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        indices, labels = batch
        if (self.sampling.generation_mode or self.generation_mode) == "reconstruction":
            test = self.trainer.datamodule.dataset("test")
            x = torch.stack([test[int(i) % len(test)][0] for i in indices]).to(self.device)
            labels = torch.stack([test[int(i) % len(test)][1] for i in indices])
            cond = self.vae_condition(x)
        else:
            cond, labels = self.prior_condition(indices, self.sampling.seed), torch.full_like(labels, -1)
        samples = self.sample_with_config(self.sampling, indices, cond=cond)
        return {"samples": samples.cpu(), "index": indices.cpu(), "labels": labels.cpu(), "condition": cond.cpu()}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "model": "DiffuseVAE", "vae_checkpoint": self.hparams.get("vae_checkpoint"),
                "generation_mode": self.sampling.generation_mode or self.generation_mode, "cond_from_mean": self.cond_from_mean}
