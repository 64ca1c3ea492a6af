"""DDPMModule: trains a denoiser with the DDPM objective and samples it with any ``diffusion.Sampler``.

Training minimises L_simple = E‖target − net(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)‖² (Ho et al. 2020, Eq. 14;
seed 002 Eq. 2.32), with ε-, x0- or v-targets. Labels are dropped with probability ``p_uncond`` so the
same network also learns ε(x, ∅) for classifier-free guidance. The noise process and the samplers live
in ``diffusion/``; the network is injected (any ``networks.denoiser.Denoiser``). This module only builds
the closure ``denoise(x, t)`` (labels, guidance, conditions, x̂_0 clipping) and hands it to a sampler.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from diffusion.guidance import autoguidance, check_guidance_interval, classifier_free_guidance, interval_weight
from diffusion.hooks import Progress
from diffusion.loss_weighting import LossWeighting
from diffusion.ncsn import NCSNProcess
from diffusion.noise_levels import NoiseLevelDistribution
from diffusion.processes import DiscreteVPProcess, NoiseProcess
from diffusion.samplers import DDPMSampler, DenoiseFn, Hook, SampleOutput, Sampler
from diffusion.sde_samplers import AnnealedLangevin, PredictorCorrector
from lightning_modules.contract import GenerativeModule, NonFiniteLossError, Sampling
from lightning_modules.data_checks import check_matches_data
from lightning_modules.hparams import save_config_hparams
from lightning_modules.lr_schedule import LRSchedule, configure_with_schedule
from metrics.checkpoints import read_checkpoint
from metrics.provenance import sha256_of
from networks.denoiser import Denoiser, check_denoiser

__all__ = ["DDPMModule", "NonFiniteLossError"]


def _describe(process: NoiseProcess) -> str:
    """The process's class and arguments, plus a digest of its tables (β_t and ᾱ_t are not in ``extra_repr``)."""
    digest = hashlib.sha256()
    for name, buf in sorted(process.named_buffers(), key=lambda item: item[0]):
        digest.update(name.encode() + buf.detach().cpu().double().numpy().tobytes())
    return f"{type(process).__name__}({process.extra_repr()}; tables {digest.hexdigest()[:12]})"


class DDPMModule(GenerativeModule):
    """Denoising diffusion probabilistic model.

    Args:
        denoiser: the network net(x_t, t, y, **cond) (the contract in ``networks/denoiser.py``): a
            ``networks.UNet``, ``networks.UViT`` or your own class by ``class_path``.
        schedule: ``linear`` or ``cosine`` β_t schedule.
        num_timesteps: T, the number of diffusion steps.
        beta_start: β_1 of the linear schedule.
        beta_end: β_T of the linear schedule (seed 002 Optuna best: 0.024).
        cosine_s: offset s of the cosine schedule.
        process: another noise process by class_path, e.g. ``diffusion.VESDE`` for continuous-time VE score
            matching (NCSN-style; ε-MSE is denoising score matching with λ(σ) = σ²). Null builds DDPM's
            discrete process from ``schedule``, ``num_timesteps`` and the β arguments.
        prediction_type: what the network predicts: ``epsilon``, ``sample`` (x0) or ``v_prediction``.
        loss_weighting: weight of each noise level in the training loss, e.g. ``diffusion.MinSNR`` (gamma 5);
            null is L_simple. Validation and test losses stay L_simple, so runs with different weightings compare.
        noise_levels: the distribution training draws t from, e.g. ``diffusion.LogNormalSigma`` (EDM's ln σ ~
            N(−1.2, 1.2²)); null is the process's own (uniform steps for DDPM). Validation and test keep the process's.
        p_uncond: probability of replacing the label by the null token in training (needs a
            class-conditional denoiser; ignored otherwise).
        optimizer: optimizer factory, e.g. ``torch.optim.AdamW`` with its ``lr``.
        lr_schedule: warm-up and decay of the learning rate, per iteration.
        warmup_steps: shorthand for ``lr_schedule.warmup_steps`` (kept so older configs and checkpoints load).
        image_size: side of the generated images; linked from the data module by ``cli.py``.
        channels: image channels; linked from the data module.
        value_range: pixel range of the data; linked from the data module. Samples are clipped to it.
        clip_denoised: clip x̂_0 to ``value_range`` at every sampling step.
        dynamic_threshold: with ``clip_denoised``, Imagen's dynamic thresholding at this percentile (e.g. 0.995)
            instead of the static clip; null keeps the static clip.
        guidance_scale: the classifier-free guidance weight w that sampling uses when it is not given one (the
            sample grid, the metrics, ``predict`` and ``test`` without ``--sampling.guidance_scale``). It is saved in
            the hyperparameters, so a checkpoint loaded in Python samples at the weight its config chose; null is 1 for
            class-conditional models and 0 otherwise.
        guidance_interval: ``[sigma_lo, sigma_hi]``: guide only at steps whose noise level σ(t)/α(t) lies in
            (sigma_lo, sigma_hi] and use the conditional model elsewhere (Kynkäänniemi et al. 2024; their
            ImageNet choice is [0.28, 2.9]). Steps outside it cost one network pass instead of two. null guides
            at every step. A sampling choice, like ``guidance_scale``: resume-safe and saved in the hyperparameters.
        guide_checkpoint: autoguidance (Karras et al. 2024): a weaker DDPMModule checkpoint on the same data and
            process (e.g. this recipe stopped early) whose prediction replaces the unconditional branch; it also
            guides unconditional models and unlabelled samples. Frozen, EMA weights, outside the state_dict; a
            sampling choice (resume-safe). A checkpoint saved with it loads elsewhere with ``guide_checkpoint=None``.
        autoguide: sample with the loaded guide (``guide_checkpoint``, or the snapshot ``callbacks.GuideSnapshot``
            takes) in place of the unconditional branch; false keeps classifier-free guidance even when a guide is
            loaded. A config's ``sampling.autoguide`` sets it, as ``sampling.guidance_scale`` sets ``guidance_scale``.
    """

    accepts_guide: ClassVar[bool] = True  # a plain DDPMModule guide can stand in for its unconditional branch

    # x̂_0 clipping is a sampling choice and the loss weighting a training emphasis: a resumed run or
    # predict/test on a checkpoint may change them
    resume_safe_args = (*GenerativeModule.resume_safe_args, "clip_denoised", "dynamic_threshold", "loss_weighting",
                        "noise_levels",
                        "guidance_scale", "guidance_interval", "guide_checkpoint", "autoguide")

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: Literal["linear", "cosine"] = "linear",
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        process: Optional[NoiseProcess] = None,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        loss_weighting: Optional[LossWeighting] = None,
        noise_levels: Optional[NoiseLevelDistribution] = None,
        p_uncond: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_schedule: Optional[LRSchedule] = None,
        warmup_steps: int = 0,
        image_size: int = 32,
        channels: int = 1,
        value_range: tuple[float, float] = (0.0, 1.0),
        clip_denoised: bool = True,
        dynamic_threshold: Optional[float] = None,
        guidance_scale: Optional[float] = None,
        guidance_interval: Optional[tuple[float, float]] = None,
        guide_checkpoint: Optional[str] = None,
        autoguide: bool = True,
    ) -> None:
        super().__init__()
        save_config_hparams(self, objects=("denoiser", "optimizer", "process", "loss_weighting", "noise_levels"))
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}.")
        check_denoiser(denoiser)
        if denoiser.in_channels != channels:
            raise ValueError(f"the denoiser has in_channels={denoiser.in_channels} but the images have {channels} "
                             "channels; leave denoiser.init_args.in_channels out of the config (cli.py links it).")
        if lr_schedule is not None and warmup_steps and lr_schedule.warmup_steps != warmup_steps:
            raise ValueError(f"warmup_steps={warmup_steps} and lr_schedule.warmup_steps={lr_schedule.warmup_steps} "
                             "disagree; set only lr_schedule.warmup_steps.")
        self.denoiser = denoiser
        self.process = process if process is not None else DiscreteVPProcess(schedule, num_timesteps, beta_start, beta_end,
                                                                             cosine_s)
        self.prediction_type = prediction_type
        self.loss_weighting = loss_weighting
        self.noise_levels = noise_levels
        self.p_uncond = p_uncond
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule(warmup_steps=warmup_steps)
        self.image_shape = (channels, image_size, image_size)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        if dynamic_threshold is not None and not 0.0 < dynamic_threshold <= 1.0:
            raise ValueError(f"dynamic_threshold is a percentile in (0, 1], e.g. 0.995; got {dynamic_threshold}.")
        self.clip_denoised = clip_denoised
        self.dynamic_threshold = dynamic_threshold
        self.num_classes = int(denoiser.num_classes)
        self.autoguide = autoguide
        self.set_guide(guide_checkpoint)
        if guidance_scale is not None and (guidance_scale < 0 or (guidance_scale and not self.can_guide)):
            raise ValueError(f"guidance_scale={guidance_scale}: it must be >= 0, and 0 or null for an unconditional "
                             f"denoiser (num_classes={self.num_classes}) without a guide_checkpoint.")
        self.guidance_scale = guidance_scale
        self.guidance_interval = check_guidance_interval(guidance_interval)
        self.last_nfe: int | None = None  # denoiser calls per sample of the last generate()
        self.last_network_passes: int | None = None  # network passes per sample of it: a guided step costs two
        self._passes = 0
        self.trained_guide: dict[str, Any] | None = None  # the guide a loaded checkpoint recorded (on_load_checkpoint)

    # ---- autoguidance ------------------------------------------------------------------------------

    def set_guide(self, path: str | None) -> None:
        """Load ``path`` as the frozen guiding model of autoguidance (None: guide by the unconditional branch).

        The guide is held outside the module tree, so it never enters this module's checkpoints, optimizer or EMA.
        Loading it leaves the global RNG as it was, so a guide set mid-run (``callbacks.GuideSnapshot``) does not
        change the training that follows.
        """
        self.guide_checkpoint, self.guide_sha256, self.guide_data, self.guide_iterations = path, None, None, None
        self.__dict__["_guide"] = None
        if path is None:
            return
        if not self.accepts_guide:
            raise ValueError(f"guide_checkpoint (autoguidance, also set by callbacks.GuideSnapshot) takes a plain "
                             f"DDPMModule guide, which cannot read the extra conditions of {type(self).__name__}; leave "
                             "it null and remove GuideSnapshot.")
        ckpt_path, ckpt = read_checkpoint(
            path, config_key="guide_checkpoint", expect_class="DDPMModule", expect_prefix="denoiser.",
            how_to_make="Use a DDPMModule checkpoint trained on the same data and noise process, e.g. the "
                        "guide.ckpt that callbacks.GuideSnapshot writes a quarter into the CPU recipes' runs "
                        "(runs/ddpm_mnist_cpu/checkpoints/guide.ckpt).")
        with torch.random.fork_rng(devices=[]):  # building the guide draws initial weights; training's RNG stays put
            guide = DDPMModule.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True,
                                                    guide_checkpoint=None)
        mismatches = [f"{name}: guide {theirs} vs model {ours}" for name, theirs, ours in (
            ("noise process", _describe(guide.process), _describe(self.process)),
            ("prediction_type", guide.prediction_type, self.prediction_type),
            ("image shape", guide.image_shape, self.image_shape),
            ("value_range", guide.value_range, self.value_range),
            ("classes", guide.num_classes, self.num_classes if guide.num_classes else 0)) if theirs != ours]
        if mismatches:
            raise ValueError(f"guide_checkpoint {str(ckpt_path)!r} does not match this model ({'; '.join(mismatches)}): "
                             "the guide must be trained on the same data, noise process and parameterisation.")
        self.guide_sha256 = sha256_of(ckpt_path)
        self.guide_data = (ckpt.get("datamodule_hyper_parameters") or {}).get("_class_path")
        self.guide_iterations = int(ckpt.get("genlab_iterations", ckpt.get("global_step", 0)))
        self.__dict__["_guide"] = guide.eval().requires_grad_(False)

    def check_guide_data(self, datamodule: Any) -> None:
        """Refuse a guide trained on another data set: its checkpoint names its data module."""
        if self.guide_data and datamodule is not None and self.guide_data.rsplit(".", 1)[-1] != type(datamodule).__name__:
            raise ValueError(f"guide_checkpoint {self.guide_checkpoint!r} was trained on {self.guide_data}, but this run "
                             f"uses {type(datamodule).__name__}; train the guide on the same data.")

    def uses_guide(self, autoguide: bool | None = None) -> bool:
        """Whether sampling runs the guide model: one is loaded and ``autoguide`` (None: the model's) asks for it."""
        return self._guide is not None and (self.autoguide if autoguide is None else autoguide)

    @property
    def can_guide(self) -> bool:
        """Guidance has a second branch: the unconditional one of a class-conditional denoiser, or a guide model in use."""
        return bool(self.num_classes) or self.uses_guide()

    def _guide_prediction(self, x: Tensor, t: Tensor, labels: Tensor | None, **kwargs: Any) -> Tensor:
        guide: DDPMModule = self._guide.to(device=x.device, dtype=x.dtype)
        return guide(x, t, labels if guide.num_classes else None, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Besides the contract's counter, record which guide sampled this model, so a later run can check it."""
        super().on_save_checkpoint(checkpoint)
        if self.guide_checkpoint is not None:
            checkpoint["genlab_guide"] = {"sha256": self.guide_sha256, "iterations": self.guide_iterations}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.trained_guide = checkpoint.get("genlab_guide")

    # ---- model -------------------------------------------------------------------------------------

    def forward(self, xt: Tensor, t: Tensor, y: Tensor | None = None, **kwargs: Any) -> Tensor:
        """The denoiser's prediction at x_t."""
        return self.denoiser(xt, t, y, **kwargs)

    def diffusion_loss(self, x0: Tensor, y: Tensor | None, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """L_simple on a batch: uniform t, Gaussian ε, MSE against the parameterisation's target.

        In training, ``noise_levels`` (when set) draws t instead, and ``loss_weighting`` weights each sample's MSE by
        its noise level.
        """
        b = x0.shape[0]
        if self.noise_levels is not None and self.training:
            t = self.noise_levels(self.process, b, self.device, generator)
        else:
            t = self.process.training_times(b, self.device, generator)
        noise = torch.randn(x0.shape, device=self.device, generator=generator)
        xt = self.process.add_noise(x0, noise, t)
        if y is not None and self.num_classes and self.training and self.p_uncond > 0:
            drop = torch.rand(b, device=self.device) < self.p_uncond
            y = torch.where(drop, torch.full_like(y, -1), y)
        out = self(xt, t, y if self.num_classes else None, **kwargs)
        target = self.process.target(self.prediction_type, x0, noise, t)
        if self.loss_weighting is None or not self.training:
            return F.mse_loss(out, target)
        per_sample = (out.float() - target.float()).square().flatten(1).mean(1)
        return (self.loss_weighting(self.process, t, self.prediction_type) * per_sample).mean()

    def denoiser_kwargs(self, x0: Tensor, batch_idx: int | None = None) -> dict[str, Any]:
        """Extra inputs of the denoiser for a batch; none for a plain DDPM (DiffuseVAE adds ``cond``).

        ``batch_idx`` is None in training (fresh randomness every step) and set in validation and test
        (seeded, so losses are comparable across epochs).
        """
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

    def guided_prediction(self, x: Tensor, t: Tensor, labels: Tensor | None, guidance_scale: float,
                          autoguide: bool | None = None, guidance_interval: tuple[float, float] | None = None,
                          **kwargs: Any) -> Tensor:
        """Network output at network time ``t`` with guidance: classifier-free, whose two branches run in one batched
        forward pass, or autoguidance by the loaded guide when ``autoguide`` (None: the model's ``autoguide``). With
        ``guidance_interval`` (None: the model's), steps outside it run the conditional branch alone."""
        interval = self.guidance_interval if guidance_interval is None else guidance_interval
        if not self.num_classes:
            labels = None
        guide = self._guide if self.uses_guide(autoguide) else None
        self._passes += 1
        if labels is None and guide is None:
            return self(x, t, None, **kwargs)
        w: float | Tensor = guidance_scale
        if guidance_scale and interval is not None:
            alpha, sigma = self.process.marginal(self.process.time_from_network(t).expand(x.shape[0]), 1)
            w = interval_weight(guidance_scale, sigma / alpha, interval).to(x.dtype)
            if not bool(w.any()):
                return self(x, t, labels, **kwargs)
            w = w.view(-1, *([1] * (x.ndim - 1)))
        if not isinstance(w, Tensor) and w == 0:
            return self(x, t, labels, **kwargs)
        self._passes += 1  # the guiding branch: the guide model or the unconditional half of the batch
        if guide is not None:
            return autoguidance(self(x, t, labels, **kwargs), self._guide_prediction(x, t, labels, **kwargs), w)
        both = self(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)]),
            **{k: torch.cat([v, v]) if isinstance(v, Tensor) else v for k, v in kwargs.items()},
        )
        cond, uncond = both.chunk(2)
        return classifier_free_guidance(cond, uncond, w)

    def denoise_fn(self, labels: Tensor | None = None, guidance_scale: float = 0.0, autoguide: bool | None = None,
                   guidance_interval: tuple[float, float] | None = None, **kwargs: Any) -> DenoiseFn:
        """The closure a sampler calls: labels, guidance, conditions and x̂_0 clipping are bound here."""
        if labels is not None:
            labels = labels.to(self.device)
        return DenoiseFn(lambda x, t: self.guided_prediction(x, t, labels, guidance_scale, autoguide, guidance_interval,
                                                             **kwargs), self.process,
                         self.prediction_type, self.value_range if self.clip_denoised else None,  # type: ignore[arg-type]
                         self.dynamic_threshold)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        sampler: Sampler,
        guidance_scale: float = 0.0,
        generator: Any = None,
        labels: Tensor | None = None,
        x_T: Tensor | None = None,
        hooks: tuple[Hook, ...] = (),
        autoguide: bool | None = None,
        guidance_interval: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> SampleOutput:
        """Draw ``n`` images with ``sampler``, starting from x_T ~ prior; returns the samples in
        ``value_range`` and the number of network evaluations.

        Args:
            n: number of samples.
            sampler: any ``diffusion.Sampler``.
            guidance_scale: CFG weight w; needs ``labels``.
            generator: a torch.Generator, or one per sample for batch-size-independent results.
            labels: class labels (n,) for class-conditional sampling; −1 is unconditional.
            x_T: optional starting noise.
            hooks: per-step hooks (``diffusion.Inpaint``, ``diffusion.Trajectory``, ...).
            autoguide: guide by the loaded guide model, when there is one, instead of the unconditional branch
                (None: the model's ``autoguide``).
            guidance_interval: guide only at noise levels σ in (sigma_lo, sigma_hi] (None: the model's).
            kwargs: passed to the denoiser (e.g. ``cond`` images).
        """
        x = x_T if x_T is not None else self.process.prior_sample((n, *self.image_shape), generator, self.device)
        self._passes = 0
        out = sampler.sample(self.denoise_fn(labels, guidance_scale, autoguide, guidance_interval, **kwargs), x,
                             generator, hooks)
        return SampleOutput(out.x.clamp(*self.value_range), out.nfe)

    def generate(self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 sampling: Sampling | None = None, **kwargs: Any) -> Tensor:
        """Sample i is seeded by sampling.seed + indices[i] (EDM-style per-sample generators)."""
        sampling = self.resolve_sampling(sampling or self.sampling)
        gens = [torch.Generator(device=self.device).manual_seed(sampling.seed + int(i)) for i in indices]
        if labels is not None and not self.num_classes:
            labels = None
        if cond is not None:
            kwargs["cond"] = cond
        if self.show_progress and "hooks" not in kwargs:
            kwargs["hooks"] = (Progress(f"sampling {len(indices)} images"),)
        out = self.sample(len(indices), sampling.sampler, sampling.guidance_scale, gens, labels,
                          autoguide=bool(sampling.autoguide), guidance_interval=sampling.guidance_interval, **kwargs)
        self.last_nfe, self.last_network_passes = out.nfe, self._passes
        return out.x

    @property
    def default_guidance(self) -> float:
        """The ``guidance_scale`` argument; unset, w = 1 for class-conditional models (legible classes at a
        moderate cost in diversity)."""
        if self.guidance_scale is not None:
            return float(self.guidance_scale)
        return 1.0 if self.num_classes else 0.0

    @property
    def default_sampler(self) -> Sampler:
        """Per noise process: on the discrete VP process, DDPM ancestral sampling over 100 respaced steps (all T
        when T < 100; cleaner backgrounds and better FID than DDIM-50 on the CPU recipes, docs/benchmarks.md
        "Best samples per CPU-minute"); on NCSN's levels, annealed Langevin over exactly those σ with seed 001's
        uniform start over the value range; on other SDEs, score_sde's predictor-corrector (reverse diffusion +
        one Langevin step, snr 0.16) with N = 1000."""
        if isinstance(self.process, NCSNProcess):
            return AnnealedLangevin(sigma_1=self.process.sigma_max, sigma_L=self.process.sigma_min,
                                    levels=self.process.levels, uniform_init=True, init_range=tuple(self.value_range))
        if self.process.discrete:
            return DDPMSampler(min(100, self.process.num_timesteps))
        return PredictorCorrector(1000)

    def resolve_sampling(self, sampling: Sampling, check: bool = True) -> Sampling:
        """The contract's defaults, plus ``autoguide`` and ``guidance_interval`` from the model when the sampling settings
        leave them unset."""
        if sampling.autoguide is None:
            sampling = replace(sampling, autoguide=self.autoguide)
        interval = self.guidance_interval if sampling.guidance_interval is None else sampling.guidance_interval
        sampling = replace(sampling, guidance_interval=check_guidance_interval(interval))
        return super().resolve_sampling(sampling, check)

    def check_sampling(self, sampling: Sampling) -> None:
        (sampling.sampler or self.default_sampler).check(self.process)
        if sampling.guidance_scale and not (self.num_classes or self.uses_guide(sampling.autoguide)):
            raise ValueError(f"guidance_scale={sampling.guidance_scale} but the denoiser is unconditional "
                             "(num_classes=0): classifier-free guidance needs a class-conditional model; set it to 0, "
                             "or guide by a weaker model with --model.init_args.guide_checkpoint.")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        indices, labels = batch
        if self.sampling.labels:
            labels = self.sampling.labels_for(indices, self.num_classes)
        samples = self.generate(indices, labels)
        return {"samples": samples.cpu(), "index": indices.cpu(), "labels": labels.cpu()}

    def provenance(self) -> dict[str, Any]:
        sampling = self.resolve_sampling(self.sampling, check=False)
        return {**super().provenance(), "sampling": sampling.describe(), "nfe": self.last_nfe,
                "network_passes": self.last_network_passes,
                "process": f"{type(self.process).__name__}({self.process.extra_repr()})",
                "schedule": getattr(self.process, "schedule", None),
                "num_timesteps": getattr(self.process, "num_timesteps", None), "prediction_type": self.prediction_type,
                "clip_denoised": self.clip_denoised, "dynamic_threshold": self.dynamic_threshold,
                "guidance_interval": sampling.guidance_interval,
                "guide": {"checkpoint": self.guide_checkpoint, "sha256": self.guide_sha256}
                if self.guide_checkpoint and sampling.autoguide else None,
                "loss_weighting": repr(self.loss_weighting) if self.loss_weighting is not None else None,
                "noise_levels": repr(self.noise_levels) if self.noise_levels is not None else None}

    # ---- Lightning plumbing ------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        check_matches_data(self.image_shape, self.value_range, datamodule, self.num_classes)
        self.check_guide_data(datamodule)

    def configure_optimizers(self) -> Any:
        return configure_with_schedule(self, self.optimizer_factory(self.denoiser.parameters()), self.lr_schedule)
