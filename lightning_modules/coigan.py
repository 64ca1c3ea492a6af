"""COIGANModule: COIGAN's three-network GAN (seed 004 §2-3) under Lightning manual optimisation.

Networks: an FFC ResNet generator (base tile + N noisy masks → tile), a SWAGAN *defects* discriminator on the
per-class defect pixels (3·N channels) and a SWAGAN *reference* discriminator on whole tiles (3 channels).
Losses and regularisers live in ``networks/gan_losses.py``; this module only orders the updates.

Design choices (stated once, here):

- **Turn layout: the iteration alternates.** Each training batch is one *turn* of the seed's loop (§2.7):
  iteration k (the contract's ``self.iterations``, 1-based) is a D turn when (k − 1) mod (disc_steps +
  gen_steps) < disc_steps, else a G turn. With the seed's 1/1 this is D, G, D, G, … starting with D, and every
  turn gets a fresh batch, exactly like the seed. So ``iterations`` counts the seed's loop iterations (the
  released ``190000.pt`` ≈ iteration 190000 = 95000 D + 95000 G turns).
- **Update order.** D turn: G frozen, fake = G(x) without a graph; ① 5·logistic(D) → D step; ② if
  d_turns % 16 == 0: 3·16·R1(D) on ``disc_input`` → D step; ③ 5·logistic(refD) → refD step; ④ if the same
  counter % 16 == 0: 3·16·R1(refD) on ``ref`` → refD step. G turn: D and refD frozen; ① 20·adv(D) +
  8·adv(refD) + 5·L1smooth + 0.3·PLsmooth (sum) → G step; ② if g_turns % 4 == 0: 5·4·path-length on a fresh
  G(x) → G step. ``toggle_optimizer``/``untoggle_optimizer`` set ``requires_grad`` as Lightning documents for
  GANs. The lazy counters ``d_turns``/``g_turns`` count turns from 0 (checked, then incremented, as in the seed)
  and are saved in checkpoints, so a resume continues the R1 and path-length schedules exactly.
- **Non-finite guard.** ``check_finite(loss, params)`` runs after each backward and before each
  ``optimizer.step()``, so a diverging run stops before the bad update.
- **Budget.** ``max_iterations`` stops the run after that many iterations (Lightning's ``max_steps`` counts
  every ``optimizer.step()``, 1-4 per iteration here).
- **DDP.** The whole LightningModule is one DDP model, and each backward touches one network only (the other
  two are frozen by ``toggle_optimizer`` or unused), so configs use ``strategy: ddp_find_unused_parameters_true``
  (DDP then finds the unused parameters from each loss's graph) rather than the seed's ``0·D(real)`` trick,
  which would have to pull all three networks into every backward. BatchNorm (generator only): by default each
  rank normalises with its own batch statistics (as the seed, batch 8 per GPU) and DDP broadcasts rank 0's
  running statistics at each forward; ``trainer.sync_batchnorm: true`` switches to SyncBatchNorm (global batch
  statistics; PyTorch accepts it on GPUs only, and the path-length penalty differentiates twice through the
  generator, which SyncBatchNorm's hand-written backward may not support: untested here, no GPU). Each rank draws
  different objects: the data module seeds its stream with the global rank.
- **EMA.** ``callbacks.EMA(decay=0.999, submodule="generator")`` averages the generator once per iteration, D turns
  included (the generator does not change on those), so with 1/1 turns the decay per generator update is
  0.999² ≈ 0.998. Checkpoints then hold the EMA generator in ``state_dict``; inference and grids use it.
- **fast_dev_run.** Lightning's ``fast_dev_run=N`` caps optimizer steps, not batches: the first D turn takes 4
  steps (two with R1), the first G turn 2, so ``fast_dev_run=6`` runs one turn of each.
- **Weight decay.** The seed sets none, so PyTorch's AdamW default applies: 0.01 (seed 004 §2.6).
- **Contract.** COIGAN is conditioned on masks, not on a class label, so the contract's ``num_classes`` is 0
  (``generate`` ignores labels); ``num_defect_classes`` is N. ``generate(indices)`` draws sample i (base tile,
  placed defects, mask noise) from the data module's sample stream seeded by ``sampling.seed + i``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.coigan_inference import build_gen_input, collate_samples, extract_defects
from lightning_modules.contract import GenerativeModule, Sampling
from lightning_modules.data_checks import check_matches_data
from lightning_modules.hparams import save_config_hparams
from networks.ffc import FFCResNetGenerator
from networks.gan_losses import (
    COIGANLossWeights,
    LazyR1,
    PathLengthRegularizer,
    SmoothMaskedL1,
    SmoothMaskedPerceptual,
    combine_losses,
    d_logistic_loss,
    g_nonsaturating_loss,
)
from networks.swagan import SWAGANDiscriminator

__all__ = ["COIGANModule", "SEED_GENERATOR", "SEED_DISCRIMINATOR"]

SEED_GENERATOR: dict[str, Any] = dict(ngf=64, n_downsampling=3, n_blocks=8, ratio_g=0.75, out_activation="sigmoid")
SEED_DISCRIMINATOR: dict[str, Any] = dict(channel_multiplier=3)


def _build(cls: type, defaults: dict[str, Any], given: Optional[dict[str, Any]], fixed: dict[str, Any], key: str) -> nn.Module:
    """``cls(**defaults | given | fixed)``; a key the data decides (``fixed``) or an unknown key is a config error."""
    given = dict(given or {})
    clash = sorted(set(given) & set(fixed))
    if clash:
        raise ValueError(f"model.init_args.{key} sets {clash}, which follow the data (image_size, num_classes); "
                         f"remove them from {key}.")
    try:
        return cls(**{**defaults, **given, **fixed})
    except TypeError as err:
        raise ValueError(f"model.init_args.{key}: {err} (the keys are {cls.__name__}'s arguments).") from None


class COIGANModule(GenerativeModule):
    """Controllable object-inpainting GAN (seed 004). See the module docstring for the design choices.

    Args:
        generator: ``FFCResNetGenerator`` arguments (defaults: the seed's ngf 64, 3 downsamplings, 8 blocks,
            α 0.75, sigmoid); ``input_nc`` follows num_classes.
        discriminator: ``SWAGANDiscriminator`` arguments of the defects discriminator (seed: channel_multiplier 3);
            ``size`` and ``input_channels`` follow the data.
        ref_discriminator: the same for the reference discriminator (null: same as ``discriminator``).
        use_ref_disc: train the reference discriminator (seed: true).
        loss_weights: ``networks.gan_losses.COIGANLossWeights`` fields to override (defaults: the seed's run).
        perceptual_net: backbone of the smooth-masked perceptual loss: ``resnet50dilated`` (seed) or an lpips
            trunk (``alex``, ``vgg``, ``squeeze``).
        perceptual_weights_path: local weights of that backbone (needed when loss_weights.perceptual_smooth > 0).
        path_length_reduction: ``seed`` (the seed's (2, 1) reduction) or ``sample`` (‖J^T y‖ per sample).
        optimizer: ``adamw`` (seed) or ``adam``, the same for the three networks.
        lr: learning rate of the three optimizers (seed 0.002).
        betas: Adam betas (seed (0, 0.998)).
        weight_decay: AdamW weight decay (the seed sets none: PyTorch's default 0.01).
        gen_steps: consecutive G turns (seed 1).
        disc_steps: consecutive D turns (seed 1).
        max_iterations: stop after this many iterations (turns); null: the trainer's limits decide.
        noise: mask-noise spec as in ``data.init_args.noise`` for inference without a data module; during fit
            the data module's spec is adopted (and saved in checkpoints), so state it under ``data`` only.
        mask_base_img: zero the base under the masks (seed: false); during fit the data module's value is adopted.
        blend: how ``predict``/``inpaint`` combine the output with the input: ``hard`` copies the input outside
            the union mask (labels stay true), ``none`` returns the generator output as the seed does.
        image_size: tile side; linked from the data module by ``cli.py``.
        num_classes: N defect classes; linked from the data module.
        channels: image channels (3); linked from the data module.
        value_range: must be (0, 1): the generator ends in a sigmoid and the base tiles are in [0, 1].
    """

    def __init__(
        self,
        generator: Optional[dict[str, Any]] = None,
        discriminator: Optional[dict[str, Any]] = None,
        ref_discriminator: Optional[dict[str, Any]] = None,
        use_ref_disc: bool = True,
        loss_weights: Optional[dict[str, Any]] = None,
        perceptual_net: Literal["resnet50dilated", "alex", "vgg", "squeeze"] = "resnet50dilated",
        perceptual_weights_path: Optional[str] = None,
        path_length_reduction: Literal["seed", "sample"] = "seed",
        optimizer: Literal["adamw", "adam"] = "adamw",
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.998),
        weight_decay: float = 0.01,
        gen_steps: int = 1,
        disc_steps: int = 1,
        max_iterations: Optional[int] = None,
        noise: Optional[dict[str, Any]] = None,
        mask_base_img: bool = False,
        blend: Literal["hard", "none"] = "hard",
        image_size: int = 256,
        num_classes: int = 4,
        channels: int = 3,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        save_config_hparams(self)
        self.automatic_optimization = False
        if gen_steps < 1 or disc_steps < 1:
            raise ValueError(f"gen_steps and disc_steps must be >= 1, got {gen_steps} and {disc_steps}.")
        if channels != 3 or tuple(float(v) for v in value_range) != (0.0, 1.0):
            raise ValueError(f"COIGAN works on RGB tiles in [0, 1] (sigmoid output); got channels={channels}, "
                             f"value_range={tuple(value_range)}: set data.init_args accordingly.")
        if num_classes < 1:
            raise ValueError(f"num_classes (defect classes) must be >= 1, got {num_classes}.")
        try:
            self.weights = COIGANLossWeights(**(loss_weights or {}))
        except TypeError as err:
            raise ValueError(f"model.init_args.loss_weights: {err}; the keys are COIGANLossWeights' fields.") from None
        w = self.weights
        self.image_shape, self.value_range, self.num_classes = (3, image_size, image_size), (0.0, 1.0), 0
        self.num_defect_classes = num_classes
        self.generator = _build(FFCResNetGenerator, SEED_GENERATOR, generator, {"input_nc": 3 + num_classes, "output_nc": 3},
                                "generator")
        self.discriminator = _build(SWAGANDiscriminator, SEED_DISCRIMINATOR, discriminator,
                                    {"size": image_size, "input_channels": 3 * num_classes}, "discriminator")
        self.use_ref_disc = use_ref_disc
        self.ref_discriminator = _build(SWAGANDiscriminator, SEED_DISCRIMINATOR,
                                        discriminator if ref_discriminator is None else ref_discriminator,
                                        {"size": image_size, "input_channels": 3}, "ref_discriminator") if use_ref_disc else None
        self.r1 = LazyR1(w.r1, w.r1_interval)
        self.ref_r1 = LazyR1(w.ref_r1, w.ref_r1_interval)
        self.path_length = PathLengthRegularizer(w.path_length, w.path_length_interval, w.path_length_decay,
                                                 path_length_reduction)
        self.l1_smooth = SmoothMaskedL1(w.obj_weight, w.bg_weight, w.smooth_kernel_size)
        self.perceptual = (SmoothMaskedPerceptual(perceptual_net, perceptual_weights_path, w.obj_weight, w.bg_weight,
                                                  w.smooth_kernel_size) if w.perceptual_smooth > 0 else None)
        self.optimizer_name, self.lr, self.betas, self.weight_decay = optimizer, lr, tuple(betas), weight_decay
        self.gen_steps, self.disc_steps, self.max_iterations = gen_steps, disc_steps, max_iterations
        self.noise_spec, self.mask_base_img, self.blend = noise, mask_base_img, blend
        self.d_turns = 0  # D turns done: drives both discriminators' lazy R1 (the seed's two counters move together)
        self.g_turns = 0  # G turns done: drives the lazy path-length penalty
        self.step_kind: str | None = None  # what the optimizer step about to run is ("d", "d_r1", "ref_d", …)
        self.sample_source: Any = None  # a COIGANSamples for generate() outside a trainer

    # ---- turns -------------------------------------------------------------------------------------

    def turn_of(self, iteration: int) -> Literal["d", "g"]:
        """``d`` or ``g`` for a 1-based iteration (see the module docstring)."""
        return "d" if (iteration - 1) % (self.disc_steps + self.gen_steps) < self.disc_steps else "g"

    def _optimizers(self) -> tuple[Any, Any, Any]:
        opts = self.optimizers()
        return opts[0], opts[1], opts[2] if self.use_ref_disc else None

    def _step(self, optimizer: Any, loss: Tensor, kind: str) -> None:
        """zero_grad → backward → non-finite guard → step, for one of the three optimizers."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.check_finite(loss, [p for group in optimizer.param_groups for p in group["params"]])
        self.step_kind = kind
        optimizer.step()
        self.step_kind = None

    def _log(self, values: dict[str, Tensor | float], batch_size: int) -> None:
        self.log_dict({f"train/{k}": v for k, v in values.items()}, on_step=True, on_epoch=False, sync_dist=True,
                      batch_size=batch_size)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.turn_of(self.iterations) == "d":
            self.discriminator_turn(batch)
        else:
            self.generator_turn(batch)
        self._log({"iterations": float(self.iterations)}, batch["base"].shape[0])
        if self.max_iterations and self.iterations >= self.max_iterations:
            self.trainer.should_stop = True

    def discriminator_turn(self, batch: dict[str, Tensor]) -> None:
        """Steps ①-④ of a D turn (module docstring); the generator runs without a graph."""
        opt_g, opt_d, opt_ref = self._optimizers()
        w, b = self.weights, batch["base"].shape[0]
        masks = batch["orig_gen_input_masks"]
        with torch.no_grad():
            fake = self.generator(batch["gen_input"])
        logs: dict[str, Tensor] = {}
        self.toggle_optimizer(opt_d)
        real_logits, fake_logits = self.discriminator(batch["disc_input"]), self.discriminator(extract_defects(fake, masks))
        loss = w.d_logistic * d_logistic_loss(real_logits, fake_logits)
        self._step(opt_d, loss, "d")
        logs.update(d_loss=loss.detach(), d_real_score=real_logits.detach().mean(), d_fake_score=fake_logits.detach().mean())
        if self.r1.applies(self.d_turns):
            real = batch["disc_input"].detach().requires_grad_(True)
            r1_loss = self.r1(self.discriminator(real), real)
            self._step(opt_d, r1_loss, "d_r1")
            logs.update(d_r1=r1_loss.detach() / (self.r1.weight * self.r1.interval), d_r1_loss=r1_loss.detach())
        self.untoggle_optimizer(opt_d)
        if opt_ref is not None:
            self.toggle_optimizer(opt_ref)
            real_logits, fake_logits = self.ref_discriminator(batch["ref"]), self.ref_discriminator(fake)
            loss = w.ref_d_logistic * d_logistic_loss(real_logits, fake_logits)
            self._step(opt_ref, loss, "ref_d")
            logs.update(ref_d_loss=loss.detach(), ref_d_real_score=real_logits.detach().mean(),
                        ref_d_fake_score=fake_logits.detach().mean())
            if self.ref_r1.applies(self.d_turns):
                real = batch["ref"].detach().requires_grad_(True)
                r1_loss = self.ref_r1(self.ref_discriminator(real), real)
                self._step(opt_ref, r1_loss, "ref_d_r1")
                logs.update(ref_d_r1=r1_loss.detach() / (self.ref_r1.weight * self.ref_r1.interval),
                            ref_d_r1_loss=r1_loss.detach())
            self.untoggle_optimizer(opt_ref)
        self.d_turns += 1
        self._log(logs, b)

    def generator_losses(self, batch: dict[str, Tensor], fake: Tensor) -> dict[str, Tensor]:
        """The generator's loss terms whose weight is > 0 (unweighted), plus the scores for logging."""
        w, masks = self.weights, batch["orig_gen_input_masks"]
        base_in = batch["gen_input"][:, :3]
        rec = fake * (1 - batch["gen_input_union_mask"][:, None]) if self.mask_base_img else fake
        terms: dict[str, Tensor] = {}
        if w.adversarial > 0:
            terms["adversarial"] = g_nonsaturating_loss(self.discriminator(extract_defects(fake, masks)))
        if w.ref_adversarial > 0 and self.ref_discriminator is not None:
            terms["ref_adversarial"] = g_nonsaturating_loss(self.ref_discriminator(fake))
        if w.l1_smooth > 0:
            terms["l1_smooth"] = self.l1_smooth(rec, base_in, masks)
        if w.perceptual_smooth > 0 and self.perceptual is not None:
            terms["perceptual_smooth"] = self.perceptual(rec, base_in, masks)
        if w.l1 > 0:
            terms["l1"] = F.l1_loss(rec, base_in)
        return terms

    def generator_turn(self, batch: dict[str, Tensor]) -> None:
        """Steps ①-② of a G turn (module docstring); both discriminators are frozen."""
        opt_g, _, _ = self._optimizers()
        w, b = self.weights, batch["base"].shape[0]
        self.toggle_optimizer(opt_g)
        fake = self.generator(batch["gen_input"])
        terms = self.generator_losses(batch, fake)
        loss = combine_losses(terms, vars(w), w.reduction)
        self._step(opt_g, loss, "g")
        logs = {f"g_{k}": v.detach() for k, v in terms.items()}
        logs["g_loss"] = loss.detach()
        if self.path_length.applies(self.g_turns):
            x = batch["gen_input"].detach().requires_grad_(True)
            pl_loss, lengths = self.path_length(self.generator(x), x)
            self._step(opt_g, pl_loss, "g_pl")
            logs.update(path_length=lengths.mean(), path_length_loss=pl_loss.detach(),
                        mean_path_length=self.path_length.mean_path_length.detach().clone())
        self.untoggle_optimizer(opt_g)
        self.g_turns += 1
        self._log(logs, b)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Reconstruction of the base away from the masks (smooth-masked L1) on the fixed stream."""
        fake = self.generator(batch["gen_input"])
        self.log("val/l1_smooth", self.l1_smooth(fake, batch["gen_input"][:, :3], batch["orig_gen_input_masks"]),
                 on_epoch=True, sync_dist=True, batch_size=fake.shape[0])

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """As ``validation_step``; FID/KID come from ``callbacks.GenerationMetricsCallback`` through ``generate``."""
        fake = self.generator(batch["gen_input"])
        self.log("test/l1_smooth", self.l1_smooth(fake, batch["gen_input"][:, :3], batch["orig_gen_input_masks"]),
                 on_epoch=True, sync_dist=True, batch_size=fake.shape[0])

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[self.optimizer_name]
        kwargs = dict(lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        nets = [self.generator, self.discriminator] + ([self.ref_discriminator] if self.use_ref_disc else [])
        return [cls(net.parameters(), **kwargs) for net in nets]

    # ---- Lightning plumbing ------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check the data facts and adopt the data module's mask noise and base masking (one fact, one place)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        check_matches_data(self.image_shape, self.value_range, dm)
        if dm is not None and getattr(dm, "num_classes", self.num_defect_classes) != self.num_defect_classes:
            raise ValueError(f"model.num_classes={self.num_defect_classes} does not match data.num_classes={dm.num_classes}.")
        sample_args = getattr(dm, "sample_args", None)
        if stage == "fit" and isinstance(sample_args, dict):
            self.noise_spec, self.mask_base_img = sample_args.get("noise"), bool(sample_args.get("mask_base_img"))
            self.hparams["noise"], self.hparams["mask_base_img"] = self.noise_spec, self.mask_base_img

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]:
        if self.max_iterations and self.iterations >= self.max_iterations:
            return -1  # the budget is spent (e.g. resuming a finished run): skip the rest of the epoch
        super().on_train_batch_start(batch, batch_idx)
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["coigan"] = {"d_turns": self.d_turns, "g_turns": self.g_turns, "noise": self.noise_spec,
                                "mask_base_img": self.mask_base_img}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("coigan", {})
        self.d_turns, self.g_turns = int(state.get("d_turns", 0)), int(state.get("g_turns", 0))
        self.noise_spec = state.get("noise", self.noise_spec)
        self.mask_base_img = bool(state.get("mask_base_img", self.mask_base_img))

    # ---- generation (the contract) -----------------------------------------------------------------

    def _samples(self) -> Any:
        if self.sample_source is not None:
            return self.sample_source
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "dataset"):
            raise ValueError("COIGANModule.generate draws base tiles and masks from a Severstal data module's sample "
                             "stream: run it under a Trainer with data.class_path "
                             "datamodules.severstal.SeverstalCOIGANDataModule, or set module.sample_source = "
                             "datamodule.dataset('val').")
        return dm.dataset("val")

    @torch.no_grad()
    def generate(self, indices: Tensor, labels: Tensor | None = None, cond: Tensor | None = None,
                 sampling: Sampling | None = None) -> Tensor:
        """Generated tiles (B, 3, S, S) in [0, 1], the raw generator output (no blending).

        ``cond`` (B, 3 + N, S, S) is a ready generator input; otherwise sample i (base tile, placed objects, mask
        noise) is drawn from the data module's sample stream seeded by ``sampling.seed + i`` (labels are ignored).
        """
        sampling = sampling or self.sampling
        if cond is None:
            samples = self._samples()
            cond = collate_samples([samples.sample(samples.start(worker=sampling.seed + int(i))) for i in indices])["gen_input"]
        return self.generator(cond.to(self.device, torch.float32)).clamp(0, 1)

    @torch.no_grad()
    def inpaint_tensors(self, base: Tensor, masks: Tensor, seeds: list[int], blend: str | None = None) -> Tensor:
        """Tiles for base (B, 3, S, S) in [0, 1] and clean masks (B, N, S, S), mask noise seeded per sample."""
        gen_input = build_gen_input(base, masks, self.noise_spec, seeds, self.mask_base_img).to(self.device)
        fake = self.generator(gen_input).clamp(0, 1)
        if (blend or self.blend) == "hard":
            union = masks.to(fake.device).amax(1, keepdim=True).clamp(0, 1)
            fake = fake * union + base.to(fake.device) * (1 - union)
        return fake

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Inpaint a batch of the predict set (``datamodules.severstal_predict``): base, masks, index, name."""
        seeds = [self.sampling.seed + int(i) for i in batch["index"]]
        tiles = self.inpaint_tensors(batch["base"], batch["masks"], seeds)
        return {"tiles": tiles.cpu(), "masks": batch["masks"].cpu(), "index": batch["index"].cpu(), "name": batch["name"]}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "iterations": self.iterations, "d_turns": self.d_turns, "g_turns": self.g_turns,
                "num_defect_classes": self.num_defect_classes, "image_size": self.image_shape[1],
                "noise": self.noise_spec or "seed multiscale (scales 1,2,4, mean 0.5, std 0.08, blur 41)",
                "mask_base_img": self.mask_base_img, "blend": self.blend, "sampling_seed": self.sampling.seed,
                "nfe": 1}
