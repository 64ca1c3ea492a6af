"""DDPMModule: trains a denoiser with the DDPM objective and samples with DDPM or DDIM.

Training minimises L_simple = E‖target − net(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)‖² (Ho et al. 2020, Eq. 14;
seed 002 Eq. 2.32), with ε-, x0- or v-targets. Labels are dropped with probability ``p_uncond`` so the
same network also learns ε(x, ∅) for classifier-free guidance. Schedules and samplers live in
``diffusion/``; the network is injected.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from diffusion.guidance import classifier_free_guidance
from diffusion.samplers import GeneratorLike, SamplingConfig, make_sampler, randn_like
from diffusion.schedules import NoiseSchedule
from lightning_modules.data_checks import check_matches_data
from lightning_modules.hparams import save_config_hparams


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss or the gradients stop being finite; the run stops before any bad update."""


class DDPMModule(LightningModule):
    """Denoising diffusion probabilistic model.

    Args:
        denoiser: the network net(x_t, t, y); a ``networks.UNet`` by ``class_path``.
        schedule: ``linear`` or ``cosine`` β_t schedule.
        num_timesteps: T, the number of diffusion steps.
        beta_start: β_1 of the linear schedule.
        beta_end: β_T of the linear schedule (seed 002 Optuna best: 0.024).
        cosine_s: offset s of the cosine schedule.
        prediction_type: what the network predicts: ``epsilon``, ``sample`` (x0) or ``v_prediction``.
        p_uncond: probability of replacing the label by the null token in training (needs a
            class-conditional denoiser; ignored otherwise).
        optimizer: optimizer factory, e.g. ``torch.optim.AdamW`` with its ``lr``.
        warmup_steps: linear learning-rate warm-up, in optimizer steps.
        image_size: side of the generated images; must match the datamodule.
        channels: image channels; must match the datamodule.
        value_range: pixel range of the data; samples are clipped to it.
        clip_denoised: clip x̂_0 to ``value_range`` at every sampling step.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Literal["linear", "cosine"] = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        p_uncond: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.Adam,
        warmup_steps: int = 0,
        image_size: int = 32,
        channels: int = 1,
        value_range: tuple[float, float] = (0.0, 1.0),
        clip_denoised: bool = True,
    ) -> None:
        super().__init__()
        save_config_hparams(self, objects=("denoiser", "optimizer"))
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}.")
        self.denoiser = denoiser
        self.noise_schedule = NoiseSchedule(schedule, num_timesteps, beta_start, beta_end, cosine_s)
        self.prediction_type = prediction_type
        self.p_uncond = p_uncond
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.image_shape = (channels, image_size, image_size)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.clip_denoised = clip_denoised
        self.num_classes = int(getattr(denoiser, "num_classes", 0))
        self.sampling = SamplingConfig()  # used by predict; the CLI's --sampling.* sets it
        self.weights_are_ema = False  # set when a checkpoint with EMA weights is loaded

    # ---- model -------------------------------------------------------------------------------------

    def forward(self, xt: Tensor, t: Tensor, y: Tensor | None = None, **kwargs: Any) -> Tensor:
        """The denoiser's prediction at x_t."""
        return self.denoiser(xt, t, y, **kwargs)

    def diffusion_loss(self, x0: Tensor, y: Tensor | None, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """L_simple on a batch: uniform t, Gaussian ε, MSE against the parameterisation's target."""
        b = x0.shape[0]
        t = torch.randint(0, self.noise_schedule.num_timesteps, (b,), device=self.device, generator=generator)
        noise = torch.randn(x0.shape, device=self.device, generator=generator)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        if y is not None and self.num_classes and self.training and self.p_uncond > 0:
            drop = torch.rand(b, device=self.device) < self.p_uncond
            y = torch.where(drop, torch.full_like(y, -1), y)
        out = self(xt, t, y if self.num_classes else None, **kwargs)
        return F.mse_loss(out, self.noise_schedule.target(self.prediction_type, x0, noise, t))

    def denoiser_kwargs(self, x0: Tensor, batch_idx: int | None = None) -> dict[str, Any]:
        """Extra inputs of the denoiser for a batch; none for a plain DDPM (DiffuseVAE adds ``cond``)."""
        return {}

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, (list, tuple)):
            return batch[0], batch[1] if len(batch) > 1 else None
        return batch, None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, y = self._unpack(batch)
        loss = self.diffusion_loss(x0, y, **self.denoiser_kwargs(x0))
        self._last_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x0.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before an update with a non-finite loss or gradient: one fused norm, one host sync per step."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if not torch.isfinite(norm):
            loss = float(getattr(self, "_last_loss", torch.tensor(float("nan"))))
            raise NonFiniteLossError(
                f"Training loss is {loss} (gradient norm {float(norm)}) at global step {self.global_step} "
                f"(epoch {self.current_epoch}). The run was stopped before the update; the last checkpoint on disk "
                "is from before this step. Try a lower learning rate (--model.init_args.optimizer.init_args.lr), "
                "gradient clipping (--trainer.gradient_clip_val 1.0) or a warm-up (--model.init_args.warmup_steps)."
            )

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, y = self._unpack(batch)
        # Fixed t and ε per batch, so validation losses are comparable across epochs.
        g = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        loss = self.diffusion_loss(x0, y, generator=g, **self.denoiser_kwargs(x0, batch_idx))
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        x0, y = self._unpack(batch)
        g = torch.Generator(device=self.device).manual_seed(20_000 + batch_idx)
        loss = self.diffusion_loss(x0, y, generator=g, **self.denoiser_kwargs(x0, batch_idx))
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    # ---- sampling ----------------------------------------------------------------------------------

    def guided_prediction(self, x: Tensor, t: Tensor, labels: Tensor | None, guidance_scale: float, **kwargs: Any) -> Tensor:
        """Network output with classifier-free guidance; both branches run in one batched forward pass."""
        if labels is None or not self.num_classes:
            return self(x, t, None, **kwargs)
        if guidance_scale == 0:
            return self(x, t, labels, **kwargs)
        both = self(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)]),
            **{k: torch.cat([v, v]) if isinstance(v, Tensor) else v for k, v in kwargs.items()},
        )
        cond, uncond = both.chunk(2)
        return classifier_free_guidance(cond, uncond, guidance_scale)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int = 50,
        sampler: str = "ddim",
        eta: float = 0.0,
        guidance_scale: float = 0.0,
        generator: GeneratorLike = None,
        labels: Tensor | None = None,
        spacing: str = "leading",
        variance: str = "beta_tilde",
        x_T: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Draw ``n`` images in ``value_range`` (B, C, H, W), starting from x_T ~ N(0, I).

        Args:
            n: number of samples.
            steps: denoising steps (≤ T).
            sampler: ``ddim`` or ``ddpm``.
            eta: DDIM η.
            guidance_scale: CFG weight w; needs ``labels``.
            generator: a torch.Generator, or one per sample for batch-size-independent results.
            labels: class labels (n,) for class-conditional sampling; −1 is unconditional.
            spacing: DDIM/DDPM step spacing.
            variance: DDPM σ²: ``beta`` or ``beta_tilde``.
            x_T: optional starting noise.
            kwargs: passed to the denoiser (e.g. ``cond`` images).
        """
        s = make_sampler(
            sampler, self.noise_schedule, self.prediction_type, spacing,  # type: ignore[arg-type]
            self.value_range if self.clip_denoised else None, eta, variance,  # type: ignore[arg-type]
        )
        s.set_timesteps(steps)
        x = x_T if x_T is not None else randn_like(torch.empty(n, *self.image_shape, device=self.device), generator)
        if labels is not None:
            labels = labels.to(self.device)
        for t in s.timesteps.tolist():
            tt = torch.full((n,), t, device=self.device, dtype=torch.long)
            out = self.guided_prediction(x, tt, labels, guidance_scale, **kwargs)
            x = s.step(out, t, x, generator).prev_sample
        return x.clamp(*self.value_range)

    def sample_with_config(self, config: SamplingConfig, indices: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Tensor:
        """Sample i is seeded by config.seed + indices[i] (EDM-style per-sample generators)."""
        gens = [torch.Generator(device=self.device).manual_seed(config.seed + int(i)) for i in indices]
        if labels is not None and not self.num_classes:
            labels = None
        return self.sample(
            len(indices), config.steps, config.sampler, config.eta, config.guidance_scale, gens, labels,
            config.spacing, config.variance, **kwargs,
        )

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        indices, labels = batch
        if self.sampling.labels:
            chosen = torch.tensor(self.sampling.labels, device=indices.device)
            labels = chosen[indices % len(chosen)]
        samples = self.sample_with_config(self.sampling, indices, labels)
        return {"samples": samples.cpu(), "index": indices.cpu(), "labels": labels.cpu()}

    def provenance(self) -> dict[str, Any]:
        """What produced a set of samples, for reports and file metadata."""
        return {"ema": self.weights_are_ema, "sampling": asdict(self.sampling), "schedule": self.hparams.get("schedule"),
                "num_timesteps": self.noise_schedule.num_timesteps, "prediction_type": self.prediction_type}

    # ---- Lightning plumbing ------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        check_matches_data(self.image_shape, self.value_range, getattr(self.trainer, "datamodule", None), self.num_classes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # WeightAveraging puts the EMA weights in state_dict and the raw ones in current_model_state.
        self.weights_are_ema = "current_model_state" in checkpoint

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.denoiser.parameters())
        if not self.warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}
