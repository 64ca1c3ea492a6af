"""The generative-module contract: what callbacks, the CLI and benchmarks may rely on.

Every generative LightningModule (DDPM, DiffuseVAE, VAE, and later U-ViT runs and COIGAN) subclasses
``GenerativeModule`` and fills in:

- ``image_shape`` (C, H, W), ``value_range`` (low, high) and ``num_classes`` (0 = unconditional);
- ``generate(indices, labels=None, cond=None, sampling=None)``: one image per index, sample i seeded by
  ``sampling.seed + i`` so results do not depend on batch size or DDP sharding;
- ``provenance()``: what produced a set of samples (EMA or not, sampler, steps, NFE, …);
- ``check_sampling(sampling)``: refuse settings the model cannot honour, before any training.

The base class also gives every module the same non-finite guard (automatic optimisation: before each
update; manual optimisation: ``check_finite``), an iteration counter that counts training batches
rather than optimizer steps (Lightning's ``global_step`` counts every ``optimizer.step()``, Lightning
#17958), ``weights_are_ema`` and the value-range conversions.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Iterable, Literal, Optional

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from diffusion.samplers import Sampler


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss or the gradients stop being finite; the run stops before any bad update."""


@dataclass
class Sampling:
    """How to draw samples: one object for ``predict``/``test`` (``--sampling.*``), ``SampleGrid``, the
    metrics callback and the benchmarks.

    Args:
        sampler: a ``diffusion.Sampler`` by class_path with its own arguments, e.g.
            ``--sampling.sampler DDIMSampler --sampling.sampler.steps 50 --sampling.sampler.eta 0``.
            null takes the model's ``default_sampler`` (chosen per noise process), and ``--sampling.sampler.steps
            N`` alone gives that sampler N steps. Models without a reverse process (the VAE) ignore it.
        guidance_scale: classifier-free guidance weight w (0 = plain conditional model); null takes the model's
            ``default_guidance`` (1.0 for class-conditional diffusion models, else 0), so the sample grid,
            val and test FID and predict agree unless a config sets it.
        seed: base seed; sample i uses seed + i, independent of batch size and DDP sharding.
        labels: classes to draw for class-conditional models, cycled over the samples (sample i gets
            labels[i % len(labels)]); null uses i mod num_classes.
        generation_mode: DiffuseVAE only: ``prior`` or ``reconstruction``; null keeps the model's setting.
        autoguide: DDPM only: guide by the loaded guide model (``guide_checkpoint`` or ``callbacks.GuideSnapshot``)
            instead of the unconditional branch (true), or keep classifier-free guidance (false); null takes the
            model's ``autoguide``.
        guidance_interval: DDPM only: ``[sigma_lo, sigma_hi]``, guide only at steps whose noise level σ(t)/α(t) lies in
            (sigma_lo, sigma_hi] (Kynkäänniemi et al. 2024); ``[0, .inf]`` guides at every step; null takes the
            model's ``guidance_interval``.
    """

    sampler: Optional[Sampler] = None
    guidance_scale: Optional[float] = None
    seed: int = 0
    labels: Optional[list[int]] = None
    generation_mode: Optional[Literal["prior", "reconstruction"]] = None
    autoguide: Optional[bool] = None
    guidance_interval: Optional[tuple[float, float]] = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of every setting, the sampler's class and arguments included."""
        out = asdict(self) if not isinstance(self.sampler, Sampler) else {
            **{k: v for k, v in self.__dict__.items() if k != "sampler"}, "sampler": self.sampler.describe()}
        for key in ("autoguide", "guidance_interval"):  # unset: records from before the field stay comparable
            if out.get(key) is None:
                out.pop(key, None)
        if out.get("guidance_interval") is not None:
            out["guidance_interval"] = list(out["guidance_interval"])
        return out

    def labels_for(self, indices: Tensor, num_classes: int) -> Tensor | None:
        """Labels of samples ``indices``: the cycled ``labels`` list, else i mod num_classes; None if unconditional."""
        if not num_classes:
            return None
        if self.labels:
            chosen = torch.tensor(self.labels, device=indices.device)
            return chosen[indices % len(chosen)]
        return indices % num_classes


class GenerativeModule(LightningModule):
    """Base class of genlab's generative modules (see the module docstring for the contract)."""

    image_shape: tuple[int, int, int]
    value_range: tuple[float, float]
    num_classes: int = 0
    # init arguments a resumed run may change (the command line wins, and the change is logged); any other
    # argument that differs from the checkpoint's is an error naming both values
    resume_safe_args: ClassVar[tuple[str, ...]] = ("optimizer", "lr", "lr_schedule", "warmup_steps", "weight_decay",
                                                   "p_uncond", "loss_weights")

    def __init__(self) -> None:
        super().__init__()
        self.sampling = Sampling()  # used by predict and test; the CLI's --sampling sets it
        self.weights_are_ema = False  # set when a checkpoint with EMA weights is loaded
        self.iterations = 0  # training batches started so far (each may take several optimizer steps)
        self.show_progress = False  # a per-step progress bar while sampling (predict, test, metrics on rank 0)
        self._resumed = False  # loaded from a training checkpoint (optimizer state included)
        self._configured_lrs: list[list[float]] = []  # the config's learning rates, per optimizer and group

    # ---- what subclasses implement -----------------------------------------------------------------

    def generate(self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 sampling: Sampling | None = None) -> Tensor:
        """Images (len(indices), C, H, W) in ``value_range``; sample i is seeded by sampling.seed + i."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What produced a set of samples, for reports and file metadata."""
        return {"model": type(self).__name__, "ema": self.weights_are_ema}

    def check_sampling(self, sampling: Sampling) -> None:
        """Raise a ValueError naming the problem when ``sampling`` cannot be honoured by this model."""
        if sampling.autoguide:
            raise ValueError(f"sampling.autoguide=true but a {type(self).__name__} has no guide model: autoguidance "
                             "guides a DDPMModule's reverse process; drop --sampling.autoguide (or set it false).")
        if sampling.guidance_interval is not None:
            raise ValueError(f"sampling.guidance_interval={list(sampling.guidance_interval)} but a {type(self).__name__} "
                             "has no guided reverse process: drop --sampling.guidance_interval.")

    @property
    def default_guidance(self) -> float:
        """The guidance weight a ``Sampling`` with ``guidance_scale: null`` gets (0: no guidance)."""
        return 0.0

    @property
    def default_sampler(self) -> Optional[Sampler]:
        """The sampler a ``Sampling`` with ``sampler: null`` gets (None: the model has no reverse process)."""
        return None

    def resolve_sampling(self, sampling: Sampling, check: bool = True) -> Sampling:
        """``sampling`` with the model's defaults filled in, checked (``check_sampling``) before any work
        unless ``check`` is False (describing settings that will not run, as in ``provenance``)."""
        if sampling.guidance_scale is None:
            sampling = replace(sampling, guidance_scale=self.default_guidance)
        default = self.default_sampler
        if sampling.sampler is None and default is not None:
            sampling = replace(sampling, sampler=default)
        elif type(sampling.sampler) is Sampler and default is not None:  # only --sampling.sampler.steps was given
            sampling = replace(sampling, sampler=default.with_steps(sampling.sampler.steps))
        if check:
            self.check_sampling(sampling)
        return sampling

    # ---- shared behaviour --------------------------------------------------------------------------

    def to_unit(self, x: Tensor) -> Tensor:
        """Map ``value_range`` to [0, 1]."""
        low, high = self.value_range
        return (x - low) / (high - low)

    def from_unit(self, x: Tensor) -> Tensor:
        low, high = self.value_range
        return low + (high - low) * x

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.iterations += 1
        self.reseed()

    def reseed(self) -> None:
        """Seed torch, NumPy and Python from (run seed, rank, iteration) before every training batch.

        The noise of iteration k then depends on nothing but k, so a run resumed from a checkpoint draws
        what the uninterrupted run drew (with the resumable training loader, the same batches too), and
        DDP ranks draw differently.
        """
        base = int(os.environ.get("PL_GLOBAL_SEED", 0))
        seed = ((base * 1_000_003 + self.global_rank) * 1_000_033 + self.iterations) % (2**63 - 1)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def check_finite(self, loss: Tensor, parameters: Iterable[torch.nn.Parameter] | None = None) -> None:
        """Raise ``NonFiniteLossError`` when the loss or the gradients of ``parameters`` are not finite.

        Automatic optimisation calls it before every update; manual optimisation calls it before each
        ``optimizer.step()``. One fused norm, one host sync.
        """
        grads = [p.grad for p in (parameters if parameters is not None else self.parameters()) if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros(())
        if torch.isfinite(loss.detach()).all() and torch.isfinite(norm):
            return
        raise NonFiniteLossError(
            f"Training loss is {float(loss.detach().float().mean())} (gradient norm {float(norm)}) at iteration "
            f"{self.iterations} (global step {self.global_step}, epoch {self.current_epoch}). The run was stopped before "
            "the update; the last checkpoint "
            "on disk is from before this step. Try a lower learning rate (--model.init_args.optimizer.init_args.lr), "
            "gradient clipping (--trainer.gradient_clip_val 1.0) or a warm-up (--model.init_args.lr_schedule.warmup_steps)."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.automatic_optimization:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.check_finite(getattr(self, "_last_loss", torch.zeros(())), params)

    def on_fit_start(self) -> None:
        # the learning rates the config asks for, before a checkpoint's optimizer state replaces them
        self._configured_lrs = [[g.get("initial_lr", g["lr"]) for g in opt.param_groups] for opt in self.trainer.optimizers]

    def on_train_start(self) -> None:
        if self._resumed:
            self._apply_configured_lrs()

    def _apply_configured_lrs(self) -> None:
        """On resume, a learning rate given on the command line beats the one stored with the optimizer state."""
        configs = self.trainer.lr_scheduler_configs
        for i, (opt, wanted) in enumerate(zip(self.trainer.optimizers, self._configured_lrs)):
            restored = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]
            if restored == wanted:
                continue
            for group, lr in zip(opt.param_groups, wanted):
                group["lr"] = lr
                if "initial_lr" in group:
                    group["initial_lr"] = lr
            for config in configs:
                scheduler = config.scheduler
                if scheduler.optimizer is opt and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                    scheduler.base_lrs = list(wanted)
                    for group, lr, fn in zip(opt.param_groups, wanted, scheduler.lr_lambdas):
                        group["lr"] = lr * fn(scheduler.last_epoch)
            if self.trainer.is_global_zero:
                print(f"Resume: optimizer {i} learning rate {restored} (checkpoint) -> {wanted} (config), applied.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genlab_iterations"] = self.iterations

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # WeightAveraging puts the EMA weights in state_dict and the raw ones in current_model_state.
        self.weights_are_ema = "current_model_state" in checkpoint
        self.iterations = int(checkpoint.get("genlab_iterations", checkpoint.get("global_step", 0)))
        self._resumed = "optimizer_states" in checkpoint


class Reconstructs:
    """Contract extension: a module that maps an image to its reconstruction (VAE, DiffuseVAE)."""

    def reconstruct(self, x: Tensor, batch_idx: int = 0) -> Tensor:
        """x̂ for images x, both in ``value_range``; seeded by ``batch_idx`` so evaluation is repeatable."""
        raise NotImplementedError


class Encodes:
    """Contract extension: a module with a latent space (VAE)."""

    def encode_mean(self, x: Tensor) -> Tensor:
        """The posterior means μ(x) of images x in ``value_range``, (B, ...)."""
        raise NotImplementedError
