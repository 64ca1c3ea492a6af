"""genlab command line: ``python cli.py {fit,validate,test,predict,tune} --config sweeps/<run>.yaml``.

A thin LightningCLI. Models and datamodules are chosen by ``class_path``; every shipped config in
``sweeps/`` is complete and runnable. ``predict`` takes ``--sampling.*`` (sampler, steps, eta,
guidance_scale, seed) and writes samples to ``--predict_dir``; ``test`` uses the same ``--sampling.*``
for the FID/KID report of an optional top-level ``generation_metrics:`` callback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from typing import Any, Optional

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import ArgsType, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

import callbacks  # noqa: F401 - registers short class names for configs
import datamodules  # noqa: F401
import lightning_modules  # noqa: F401
from callbacks.generation_metrics import GenerationMetricsCallback
from callbacks.sample_writer import SampleWriter
from callbacks.wandb_utils import choose_wandb_mode, get_wandb_logger, offline_sync_hint
from diffusion.samplers import SamplingConfig


class WandbSaveConfig(SaveConfigCallback):
    """Writes config.yaml as usual and sends the full resolved config to W&B (rank 0 only)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = get_wandb_logger(trainer)
        if logger is not None:
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            logger.log_hyperparams({"config": config})


class GenLabCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(GenerationMetricsCallback, "generation_metrics", subclass_mode=True, required=False)
        parser.add_class_arguments(SamplingConfig, "sampling", help="Sampling settings used by predict and by test.")
        parser.add_argument("--predict_dir", type=Optional[str], default=None,
                            help="Where predict writes samples (default: <default_root_dir>/predictions).")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Top-level callbacks (generation_metrics) are optional: drop the ones a config leaves out.
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, [cb for cb in extra if cb is not None])

    def before_instantiate_classes(self) -> None:
        choose_wandb_mode()

    def before_test(self) -> None:
        self._apply_sampling()

    def _apply_sampling(self) -> None:
        config = self.config[self.subcommand]
        if hasattr(self.model, "sampling"):
            self.model.sampling = SamplingConfig(**config.sampling.as_dict())
            rank_zero_info(f"Sampling with {asdict(self.model.sampling)}")

    def before_predict(self) -> None:
        self._apply_sampling()
        config = self.config[self.subcommand]
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(SampleWriter(config.predict_dir))

    def after_fit(self) -> None:
        logger = get_wandb_logger(self.trainer)
        hint = offline_sync_hint(logger) if logger is not None and self.trainer.is_global_zero else None
        if hint:
            print(f"W&B ran offline. Upload this run with:\n    {hint}")


def cli_main(args: ArgsType = None, **kwargs: Any) -> LightningCLI:
    """Build and run the CLI; returns it so tests and sweeps can read ``cli.trainer``."""
    kwargs.setdefault("save_config_callback", WandbSaveConfig)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    return GenLabCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        args=args,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> None:
    """``tune`` runs an Optuna study (tuning/tune.py); inside a study's trial process, ``fit`` reports to it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tune"]:
        from tuning.tune import tune_main

        tune_main(argv[1:])
    elif os.environ.get("GENLAB_OPTUNA_TRIAL"):
        from tuning.trial import run_trial

        run_trial(argv)
    else:
        cli_main(argv)


if __name__ == "__main__":
    main()
