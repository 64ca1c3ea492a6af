"""The design seams: module contract, samplers that own their loop, linked configs, iteration counter,
sub-network EMA, LR schedule, DiffuseVAE noise, and imports that run one way."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, TINY_DVAE, TINY_VAE, run_cli
from lightning.pytorch import Trainer
from torch import nn

from diffusion import DDIMSampler, DDPMSampler, DenoiseFn, Inpaint, SampleOutput, Sampler, StepState, Trajectory
from diffusion.processes import DiscreteVPProcess, randn_like
from lightning_modules import DDPMModule
from lightning_modules.contract import GenerativeModule, NonFiniteLossError, Sampling
from lightning_modules.lr_schedule import LRSchedule
from networks import TinyUNet

DATA = ROOT / "tests" / "data"


# ---- parity with the code before the redesign (commit 400494a) ------------------------------------

def _old_module(prediction_type: str) -> DDPMModule:
    net = TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=10)
    return DDPMModule(net, num_timesteps=50, beta_end=0.2, prediction_type=prediction_type, image_size=16,
                      value_range=(-1.0, 1.0), schedule="cosine" if prediction_type == "v_prediction" else "linear")


def _sampler(config: dict) -> Sampler:
    if config["sampler"] == "ddim":
        return DDIMSampler(config["steps"], eta=config.get("eta", 0.0), spacing=config.get("spacing", "leading"))
    return DDPMSampler(config["steps"], variance=config.get("variance", "beta_tilde"), spacing=config.get("spacing", "leading"))


def same_samples(new, stored) -> bool:
    """Equal to the stored samples up to float rounding. On the CPU that recorded them they are bit-identical; other
    instruction sets (AVX2 vs AVX-512 kernels) round convolutions differently, by up to ~2e-5 after a full sampling
    loop, while any change to a sampler's maths moves samples by more than 1e-2."""
    diff = (torch.as_tensor(new) - torch.as_tensor(stored)).abs().max().item()
    return diff <= 1e-4


@pytest.fixture
def two_threads():
    """The stored samples were recorded with 2 intra-op threads; a convolution's reduction order, and so its last
    bits, depend on the thread count, so bit-for-bit tests pin it (under OMP_NUM_THREADS=1 they failed unpinned)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_ddpm_and_ddim_samples_equal_those_of_the_old_code(two_threads):
    """Samples saved by the pre-redesign code (15 cases: ε/x0/v, DDPM/DDIM, spacings, η, guidance)."""
    _compare_with_old_samples(torch.load(DATA / "sampler_parity_400494a.pt", weights_only=True))


def _compare_with_old_samples(ref: dict) -> None:
    for case in ref["cases"]:
        module = _old_module(case["prediction_type"])
        module.load_state_dict(ref["state"])
        module.eval()
        cfg = case["config"]
        sampling = Sampling(sampler=_sampler(cfg), guidance_scale=cfg.get("guidance_scale", 0.0), seed=11)
        out = module.generate(torch.arange(5), torch.arange(5) % 10, sampling=sampling)
        assert same_samples(out, case["samples"]), (case["prediction_type"], cfg)


def test_an_old_checkpoint_loads_and_predicts_the_same_samples(two_threads):
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
                  "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.guidance_scale", "1.5",
                  "--sampling.seed", "3",
                  "--predict_dir", "pred")
    assert cli.model.weights_are_ema
    new = np.load("pred/samples_rank0.npz")["samples"]
    assert same_samples(new, np.load(DATA / "tiny_ddpm_400494a_predict.npz")["samples"])


def test_predict_may_change_the_x0_clipping_of_a_checkpoint():
    """clip_denoised and dynamic_threshold are sampling choices: predict applies them instead of refusing."""
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
                  "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.guidance_scale", "1.5",
                  "--sampling.seed", "3",
                  "--model.init_args.dynamic_threshold", "0.9", "--predict_dir", "pred")
    assert cli.model.dynamic_threshold == 0.9 and cli.model.clip_denoised
    new = np.load("pred/samples_rank0.npz")["samples"]
    assert not same_samples(new, np.load(DATA / "tiny_ddpm_400494a_predict.npz")["samples"])
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
                  "--sampling.sampler.steps", "5", "--model.init_args.clip_denoised", "false", "--predict_dir", "pred2")
    assert cli.model.clip_denoised is False


def test_the_models_guidance_scale_is_the_default_that_sampling_falls_back_to(two_threads):
    """model.guidance_scale 1.5 without --sampling.guidance_scale gives the samples stored for w = 1.5."""
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
                  "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3",
                  "--model.init_args.guidance_scale", "1.5", "--predict_dir", "pred")
    assert cli.model.sampling.guidance_scale == 1.5
    assert same_samples(np.load("pred/samples_rank0.npz")["samples"],
                        np.load(DATA / "tiny_ddpm_400494a_predict.npz")["samples"])
    module = _old_module("epsilon")
    assert module.default_guidance == 1.0  # unset: 1 for a class-conditional model
    assert DDPMModule(module.denoiser, guidance_scale=0.0, image_size=16).resolve_sampling(Sampling()).guidance_scale == 0.0
    with pytest.raises(ValueError, match="must be >= 0"):
        DDPMModule(module.denoiser, guidance_scale=-1.0, image_size=16)
    unconditional = TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, num_classes=0)
    with pytest.raises(ValueError, match="unconditional"):
        DDPMModule(unconditional, guidance_scale=2.0, image_size=16)


def test_predict_takes_a_guidance_interval_for_an_old_checkpoint(two_threads):
    """An interval that holds every step reproduces the stored fully guided samples; the interval is
    kept in the hyperparameters and the provenance."""
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
                  "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3",
                  "--sampling.guidance_scale", "1.5", "--model.init_args.guidance_interval", "[0, 1e9]",
                  "--predict_dir", "pred")
    assert cli.model.guidance_interval == (0.0, 1e9) and tuple(cli.model.hparams.guidance_interval) == (0.0, 1e9)
    assert cli.model.provenance()["guidance_interval"] == (0.0, 1e9)
    stored = np.load(DATA / "tiny_ddpm_400494a_predict.npz")["samples"]
    assert same_samples(np.load("pred/samples_rank0.npz")["samples"], stored)
    common = ("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
              "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3")
    run_cli(*common, "--sampling.guidance_scale", "1.5", "--model.init_args.guidance_interval", "[1e8, 1e9]",
            "--predict_dir", "never")  # an interval no step reaches: the conditional model
    run_cli(*common, "--sampling.guidance_scale", "0", "--predict_dir", "w0")
    never = np.load("never/samples_rank0.npz")["samples"]
    assert np.array_equal(never, np.load("w0/samples_rank0.npz")["samples"]) and not same_samples(never, stored)


def test_sampling_guidance_interval_is_linked_into_the_model_and_overrides_it_per_call(two_threads):
    """``--sampling.guidance_interval`` sets the model's interval (hyperparameters, provenance, samples), and a
    ``Sampling`` that names an interval wins over the model's for that call."""
    common = ("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
              "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3",
              "--sampling.guidance_scale", "1.5")
    cli = run_cli(*common, "--sampling.guidance_interval", "[1e8, 1e9]", "--predict_dir", "never")
    module = cli.model
    assert module.guidance_interval == (1e8, 1e9) and tuple(module.hparams.guidance_interval) == (1e8, 1e9)
    assert module.provenance()["guidance_interval"] == (1e8, 1e9)
    assert module.provenance()["sampling"]["guidance_interval"] == [1e8, 1e9]
    assert module.last_nfe == 5 and module.provenance()["network_passes"] == 5  # no step reached: no guiding pass
    run_cli(*common[:-2], "--sampling.guidance_scale", "0", "--predict_dir", "w0")
    never = np.load("never/samples_rank0.npz")["samples"]
    assert np.array_equal(never, np.load("w0/samples_rank0.npz")["samples"])
    stored = np.load(DATA / "tiny_ddpm_400494a_predict.npz")["samples"]
    sampling = replace(module.sampling, guidance_interval=(0.0, float("inf")))
    with torch.no_grad():
        indices = torch.arange(len(stored))
        everywhere = module.generate(indices, sampling.labels_for(indices, module.num_classes), sampling=sampling)
    assert same_samples(everywhere.cpu().numpy(), stored)
    assert module.last_nfe == 5 and module.last_network_passes == 10  # every step guided: two passes each
    with torch.no_grad():
        module.generate(indices, sampling.labels_for(indices, module.num_classes),
                        sampling=replace(sampling, guidance_interval=(0.0, 1.0)))
    assert 5 < module.last_network_passes < 10  # DDIM-5's last steps lie below σ = 1, its first ones above
    with pytest.raises(ValueError, match="0 <= sigma_lo < sigma_hi"):
        module.resolve_sampling(replace(sampling, guidance_interval=(2.0, 1.0)))


def test_predict_takes_a_guide_checkpoint_for_an_old_checkpoint():
    """Autoguidance is a sampling choice: predict on a checkpoint trained without it works, and a model guided by
    an identical copy of itself draws its conditional samples (to rounding) while a weaker copy (weights × 0.9) moves
    them; the path is in the hyperparameters and the provenance."""
    common = ("predict", "--config", str(TINY), "--ckpt_path", str(DATA / "tiny_ddpm_400494a.ckpt"),
              "--sampling.sampler", "DDIMSampler", "--sampling.sampler.steps", "5", "--sampling.seed", "3")
    guide = str(DATA / "tiny_ddpm_400494a.ckpt")
    cli = run_cli(*common, "--sampling.guidance_scale", "1.5", "--model.init_args.guide_checkpoint", guide,
                  "--predict_dir", "self")
    assert cli.model.hparams.guide_checkpoint == guide and cli.model.provenance()["guide"]["checkpoint"] == guide
    run_cli(*common, "--sampling.guidance_scale", "0", "--predict_dir", "w0")
    ckpt = torch.load(guide, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k: v * 0.9 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, "weaker.ckpt")
    run_cli(*common, "--sampling.guidance_scale", "1.5", "--model.init_args.guide_checkpoint", "weaker.ckpt",
            "--predict_dir", "weaker")
    guided_by_self, w0 = np.load("self/samples_rank0.npz")["samples"], np.load("w0/samples_rank0.npz")["samples"]
    weaker = np.load("weaker/samples_rank0.npz")["samples"]
    assert np.abs(guided_by_self - w0).max() < 1e-4 and np.abs(weaker - w0).max() > 1e-2


# ---- samplers by class_path, hooks ---------------------------------------------------------------

class X0JumpSampler(Sampler):
    """A toy third-party sampler: one network call, then jump straight to x̂_0 (steps is ignored)."""

    def __init__(self, steps: int = 1, shrink: float = 1.0) -> None:
        super().__init__(steps)
        self.shrink = shrink

    def sample(self, denoise, x_T, generator=None, hooks=()) -> SampleOutput:
        t = torch.full((x_T.shape[0],), denoise.process.num_timesteps - 1, dtype=torch.long)
        return SampleOutput(denoise(x_T, t).x0 * self.shrink, 1)


def test_a_sampler_defined_in_a_test_file_plugs_in_by_class_path():
    run_cli("fit", "--config", str(TINY), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    cli = run_cli("predict", "--config", str(TINY), "--ckpt_path", "run/checkpoints/last.ckpt",
                  "--sampling.sampler", "test_contract.X0JumpSampler", "--sampling.sampler.shrink", "0.0",
                  "--predict_dir", "pred")
    assert isinstance(cli.model.sampling.sampler, X0JumpSampler)
    assert np.all(np.load("pred/samples_rank0.npz")["samples"] == 0.0)  # shrink 0 → its own argument was used
    assert cli.model.provenance()["nfe"] == 1


def _toy_denoise(process: DiscreteVPProcess) -> DenoiseFn:
    return DenoiseFn(lambda x, t: torch.tanh(0.5 * x), process, "epsilon", (-1.0, 1.0))


@pytest.mark.parametrize("sampler", [DDIMSampler(10, eta=0.5), DDPMSampler(10), DDIMSampler(7, spacing="trailing")])
def test_inpainting_hook_keeps_the_known_pixels_exactly(sampler):
    process = DiscreteVPProcess("linear", 100)
    known = torch.rand(3, 1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    x_T = randn_like(known, gens)
    trajectory = Trajectory()
    out = sampler.sample(_toy_denoise(process), x_T, gens, hooks=[Inpaint(known, mask), trajectory])
    assert torch.equal(out.x[..., :4], known[..., :4])
    assert not torch.equal(out.x[..., 4:], known[..., 4:])
    assert len(trajectory.x) == sampler.steps == out.nfe
    # intermediate steps carry noised, not clean, known pixels
    assert not torch.equal(trajectory.x[0][..., :4], known[..., :4])


def test_hooks_see_the_marginal_of_the_level_x_sits_at():
    process = DiscreteVPProcess("linear", 50)
    seen: list[tuple[int, float]] = []

    def record(state: StepState) -> None:
        seen.append((int(state.t_next[0]), float(state.sigma_next.flatten()[0])))

    DDIMSampler(5).sample(_toy_denoise(process), torch.randn(2, 1, 4, 4), None, [record])
    assert [t for t, _ in seen] == [30, 20, 10, 0, -1]
    assert seen[-1][1] == 0.0 and seen[0][1] == pytest.approx(math.sqrt(1 - float(process.alpha_bars[30])), rel=1e-6)


# ---- configs: one fact, one place ----------------------------------------------------------------

def test_data_image_size_and_range_flow_into_model_and_denoiser():
    cli = run_cli("fit", "--config", str(TINY), "--trainer.fast_dev_run", "1", "--data.init_args.image_size", "8",
                  "--data.init_args.value_range", "[0.0, 1.0]")
    assert cli.model.image_shape == (1, 8, 8)
    assert cli.model.value_range == (0.0, 1.0)
    assert cli.model.denoiser.in_channels == 1
    assert cli.trainer.global_step == 1


def test_channels_flow_into_the_denoiser(tmp_path):
    from jsonargparse import Namespace

    from cli import link_data_facts

    config = Namespace(data=Namespace(class_path="datamodules.ImageFolderDataModule",
                                      init_args=Namespace(root="x", channels=3, image_size=24, value_range=[-1.0, 1.0])),
                       model=Namespace(class_path="lightning_modules.DDPMModule", init_args=Namespace(
                           image_size=32, channels=1, value_range=[0.0, 1.0],
                           denoiser=Namespace(class_path="networks.UNet", init_args=Namespace(in_channels=1)))))
    link_data_facts(config)
    assert config.model.init_args.channels == 3 and config.model.init_args.image_size == 24
    assert config.model.init_args.denoiser.init_args.in_channels == 3
    assert config.model.init_args.value_range == [-1.0, 1.0]


def test_a_model_value_that_contradicts_the_data_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"model.init_args.image_size=12 contradicts data.init_args.image_size=16"):
        run_cli("fit", "--config", str(TINY), "--trainer.fast_dev_run", "1", "--model.init_args.image_size", "12")


def test_a_configs_guidance_scale_reaches_the_model_the_grid_and_the_checkpoint():
    """sampling.guidance_scale is stated once: fit's sample grid and the saved hyperparameters follow it, and it
    wins over the model's own value."""
    from callbacks import SampleGrid

    cli = run_cli("fit", "--config", str(ROOT / "sweeps" / "ddpm_mnist_cpu.yaml"), "--trainer.fast_dev_run", "1",
                  "--data", "SyntheticDataModule", "--data.num_samples", "16", "--data.batch_size", "4",
                  "--data.num_workers", "0", "--data.image_size", "28", "--sampling.guidance_scale", "0.25")
    assert cli.model.default_guidance == 0.25 and cli.model.hparams["guidance_scale"] == 0.25
    grid = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SampleGrid))
    assert grid.sampling.guidance_scale == 0.25
    cli = run_cli("fit", "--config", str(TINY), "--trainer.fast_dev_run", "1", "--model.init_args.guidance_scale", "2",
                  "--sampling.guidance_scale", "0.25")  # a saved config.yaml holds both: the sampling block wins
    assert cli.model.default_guidance == 0.25


def test_run_name_derives_every_output_folder():
    cli = run_cli("fit", "--config", str(ROOT / "sweeps" / "ddpm_mnist_cpu.yaml"), "--trainer.fast_dev_run", "1",
                  "--data", "SyntheticDataModule", "--data.num_samples", "16", "--data.batch_size", "4",
                  "--data.num_workers", "0", "--data.image_size", "28", "--run_name", "my_run")
    assert cli.trainer.default_root_dir == str(Path("runs") / "my_run")
    from callbacks import LastCheckpoint

    last = next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint))
    assert last.path(cli.trainer) == Path("runs") / "my_run" / "checkpoints" / "last.ckpt"
    logger = cli.config["fit"]["trainer"]["logger"]["init_args"]  # fast_dev_run swaps the logger for a dummy
    assert logger["name"] == "my_run" and logger["group"] == "my_run"
    assert Path(logger["save_dir"]) == Path("runs") / "my_run"


# ---- iteration counter, sub-network EMA, LR schedule ---------------------------------------------

class TwoOptimizerToy(GenerativeModule):
    """A GAN-shaped toy: two sub-networks, two optimizers, manual optimisation."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(4, 4)
        self.critic = nn.Linear(4, 1)
        self.image_shape, self.value_range = (1, 2, 2), (0.0, 1.0)

    def training_step(self, batch, batch_idx):
        opt_g, opt_c = self.optimizers()
        for opt, loss in ((opt_c, self.critic(batch[0]).mean()), (opt_g, self.generator(batch[0]).pow(2).mean())):
            opt.zero_grad()
            self.manual_backward(loss)
            self.check_finite(loss)
            opt.step()
        self.seen_iterations.append(self.iterations)

    def configure_optimizers(self):
        return torch.optim.SGD(self.generator.parameters(), lr=0.1), torch.optim.SGD(self.critic.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(20, 4)), batch_size=4)


def _fit_toy(callbacks, max_epochs: int = 1) -> tuple[TwoOptimizerToy, Trainer]:
    torch.manual_seed(0)
    module = TwoOptimizerToy()
    module.seen_iterations = []
    trainer = Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks)
    trainer.fit(module)
    return module, trainer


def test_iteration_counter_counts_batches_not_optimizer_steps():
    from callbacks import EMA

    ema = EMA(decay=0.5, warmup_power=None, submodule="generator")
    module, trainer = _fit_toy([ema])
    assert trainer.global_step == 10  # 5 batches × 2 optimizer steps (Lightning #17958)
    assert module.iterations == 5 and module.seen_iterations == [1, 2, 3, 4, 5]
    assert int(ema.average_model.n_averaged) == 5  # one EMA update per iteration


def test_ema_of_a_named_sub_network_only():
    from callbacks import EMA

    ema = EMA(decay=0.5, warmup_power=None, submodule="generator")
    module, trainer = _fit_toy([ema])
    averaged = dict(ema.average_model.module.named_parameters())
    assert set(averaged) == {"weight", "bias"}  # the generator's, not the critic's
    # training ended: the generator holds the EMA weights, which differ from its raw weights
    assert torch.equal(module.generator.weight, averaged["weight"])
    checkpoint = {"state_dict": {k: v.clone() for k, v in module.state_dict().items()}}
    ema.on_save_checkpoint(trainer, module, checkpoint)
    assert set(checkpoint["state_dict"]) == set(module.state_dict())
    with pytest.raises(ValueError, match="not a sub-network"):
        EMA(submodule="discriminator")._target(module)


def test_non_finite_guard_under_manual_optimisation():
    module = TwoOptimizerToy()
    module.generator.weight.grad = torch.full_like(module.generator.weight, float("nan"))
    with pytest.raises(NonFiniteLossError, match="stopped before the update"):
        module.check_finite(torch.tensor(1.0), module.generator.parameters())
    with pytest.raises(NonFiniteLossError):
        module.check_finite(torch.tensor(float("inf")), [])


def test_cosine_lr_matches_its_closed_form():
    schedule = LRSchedule(warmup_steps=10, decay="cosine", total_steps=110, min_lr=1e-6)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = schedule.build(opt, None)
    lrs = []
    for _ in range(130):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for s in (0, 4, 9):
        assert lrs[s] == pytest.approx(1e-4 * (s + 1) / 10)
    for s in (10, 35, 60, 100, 110):
        expected = 1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * (s - 10) / 100))
        assert lrs[s] == pytest.approx(expected, rel=1e-9)
    assert lrs[60] == pytest.approx((1e-4 + 1e-6) / 2)
    assert lrs[129] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        schedule.build(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0), None)


def test_lr_schedule_runs_per_iteration_in_a_fit():
    cli = run_cli("fit", "--config", str(TINY), "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0",
                  "--model.init_args.lr_schedule.warmup_steps", "2", "--model.init_args.lr_schedule.decay", "cosine",
                  "--model.init_args.lr_schedule.min_lr", "0.0001")
    lr = cli.trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * 1 / 1)))


# ---- DiffuseVAE conditioning noise ---------------------------------------------------------------

def test_diffuse_vae_training_conditions_draw_fresh_noise_each_step():
    run_cli("fit", "--config", str(TINY_VAE), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--trainer.limit_val_batches", "1")
    from lightning_modules import DiffuseVAEModule

    module = DiffuseVAEModule(vae_checkpoint="vae_run/checkpoints/last.ckpt",
                              denoiser=TinyUNet(channels=(8, 16), t_emb_dim=16, num_heads=2, cond_channels=1),
                              num_timesteps=20, image_size=16, value_range=(0.0, 1.0))
    x = torch.rand(2, 1, 16, 16)
    a, b = module.denoiser_kwargs(x)["cond"], module.denoiser_kwargs(x)["cond"]
    assert not torch.equal(a, b)  # training: fresh reparameterisation noise
    assert torch.equal(module.denoiser_kwargs(x, 3)["cond"], module.denoiser_kwargs(x, 3)["cond"])  # val/test: seeded


# ---- imports run one way -------------------------------------------------------------------------

# The design card's order; callbacks sit just above lightning_modules because they talk to its contract. The
# bottom tier (networks, diffusion, datamodules) may import within itself, as long as no cycle forms.
LAYERS = {"cli": 0, "tuning": 1, "callbacks": 2, "lightning_modules": 3, "metrics": 4,
          "networks": 5, "diffusion": 5, "datamodules": 5}
BOTTOM = 5


def _project_imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in [ROOT / "cli.py", *(p for pkg in LAYERS if pkg != "cli" for p in (ROOT / pkg).rglob("*.py"))]:
        src = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS and top != src:
                    edges.setdefault(src, set()).add(top)
    return edges


def test_imports_run_one_way_and_have_no_cycle():
    edges = _project_imports()
    for src, targets in edges.items():
        for dst in targets:
            assert LAYERS[dst] > LAYERS[src] or LAYERS[dst] == LAYERS[src] == BOTTOM, \
                f"{src} imports {dst}: arrows must run downwards"
    # and no cycle at all, even among allowed edges
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(stack + [node, nxt])}"
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [])


def test_tiny_dvae_config_has_no_restated_facts():
    text = TINY_DVAE.read_text()
    assert text.count("image_size") == 1 and "in_channels" not in text
