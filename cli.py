"""genlab command line: ``python cli.py {fit,validate,test,predict,tune} --config sweeps/<run>.yaml``.

A thin LightningCLI. Models and datamodules are chosen by ``class_path``; every shipped config in
``sweeps/`` is complete and runnable. ``predict`` takes ``--sampling.*`` (sampler, steps, eta,
guidance_scale, seed) and writes samples to ``--predict_dir``; ``test`` uses the same ``--sampling.*``
for the FID/KID report of an optional top-level ``generation_metrics:`` callback.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Checkpoint, LearningRateMonitor, Timer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

import callbacks  # noqa: F401 - registers short class names for configs
import datamodules  # noqa: F401
import lightning_modules  # noqa: F401
from callbacks.checkpointing import AtomicCheckpointIO, LastCheckpoint
from callbacks.generation_metrics import GenerationMetricsCallback
from callbacks.hardware_notice import CPUNotice
from callbacks.sample_writer import SampleWriter
from lightning_modules.contract import GenerativeModule, Sampling
from lightning_modules.wandb_utils import choose_wandb_mode, get_wandb_logger, offline_sync_hint

KNOWN_UPSTREAM_WARNINGS = (  # harmless notices from libraries, silenced so the ones that matter stand out
    r".*LightningCLI's args parameter.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
    r".*was deprecated in v4\.\d+.*",
    r".*parameter was deprecated in v4.*",
)


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_known_warnings() -> None:
    """Silence the known upstream notices (the pytest config does the same for the tests)."""
    for pattern in KNOWN_UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTip())


def parse_error_headline(message: str) -> str:
    """The innermost problem of a nested jsonargparse error, on one line, to print above the full text."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    keys, inner = [], None
    for i, line in enumerate(lines):
        match = re.match(r'Parser key "([^"]+)":?', line)
        if match:
            keys.append(match.group(1))
            inner = lines[i + 1] if i + 1 < len(lines) else None
    if inner is None or inner.startswith(("Does not validate", "Problem with given class_path")):
        return ""
    return f"the problem: {'.'.join(keys)}: {inner}\nin full: "


class GenLabParser(LightningArgumentParser):
    """Puts the innermost problem on top of jsonargparse's nested Union/class_path messages."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if self.exit_on_error:  # the printed message, not an inner parser's raised one
            message = parse_error_headline(message) + message
        super().error(message, ex)


def join_negative_values(argv: list[str]) -> list[str]:
    """``--opt -1e-3`` → ``--opt=-1e-3``: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-(\d|\.\d)[\d.eE+-]*", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


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
        parser.add_class_arguments(Sampling, "sampling", help="Sampling settings used by predict and by test.")
        parser.add_argument("--predict_dir", type=Optional[str], default=None,
                            help="Where predict writes samples (default: <default_root_dir>/predictions).")
        parser.add_argument("--run_name", type=Optional[str], default=None,
                            help="Names the run: outputs (checkpoints, W&B files, samples) go to runs/<run_name> unless "
                                 "trainer.default_root_dir is set. Default: the name of the first --config file.")

    def parse_arguments(self, parser: Any, args: ArgsType) -> None:
        """Also sets ``self.recipe``, the config file the run is named after: the first one on the command line, not
        an overlay it loads; for a CLI built from a dict, the first parsed one."""
        super().parse_arguments(parser, args)
        argv = sys.argv[1:] if args is None else args
        named = command_line_configs(argv) if isinstance(argv, list) else []
        subcommand = self.config.get("subcommand")
        parsed = (self.config[subcommand] if subcommand else self.config).get("config") or []
        self.recipe = named[0] if named else str(parsed[0]) if parsed else None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Top-level callbacks (generation_metrics) are optional: drop the ones a config leaves out.
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):  # atomic checkpoint writes for every run
            trainer_config["plugins"] = [*plugins, AtomicCheckpointIO()]
        extra = [cb for cb in extra if cb is not None]
        notice = self._cpu_notice(trainer_config)
        trainer = self._instantiate_trainer(trainer_config, extra + ([notice] if notice else []))
        for logger in trainer.loggers:  # Lightning passes anonymous=None, which W&B now warns about
            if isinstance(logger, WandbLogger):
                logger._wandb_init.pop("anonymous", None)
                from wandb.sdk import wandb_require

                # Lightning still calls the legacy wandb.require("service"), a no-op that warns each time
                wandb_require._Requires.require_service = lambda self: None
        if not trainer.loggers and any(isinstance(cb, LearningRateMonitor) for cb in trainer.callbacks):
            # Lightning would stop at the first training step: the monitor has nowhere to log
            trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)]
            rank_zero_info("No logger (trainer.logger false): the config's LearningRateMonitor is left out.")
        # last.ckpt is written after every other callback's batch-end work (EMA's update above all)
        others = [cb for cb in trainer.callbacks if not isinstance(cb, (LastCheckpoint, Checkpoint))]
        trainer.callbacks = (others + [cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
                             + [cb for cb in trainer.callbacks if isinstance(cb, Checkpoint)])
        return trainer

    def _cpu_notice(self, trainer_config: dict[str, Any]) -> Optional[CPUNotice]:
        """A GPU-sized config (accelerator auto/gpu) that fits on a machine without a GPU gets a notice."""
        import torch

        if self.subcommand != "fit" or str(trainer_config.get("accelerator", "auto")) not in ("auto", "gpu", "cuda") \
                or torch.cuda.is_available():
            return None
        cpu = Path(self.recipe).with_name(Path(self.recipe).stem + "_cpu.yaml") if self.recipe else None
        return CPUNotice(self.recipe or "this config", str(cpu) if cpu and cpu.is_file() else None)

    def _parse_ckpt_path(self) -> None:
        """Replaced: Lightning would let the checkpoint's model arguments silently win over the command line.
        ``check_resume_arguments`` applies the explicit rule instead, after the data facts are linked."""

    def before_instantiate_classes(self) -> None:
        choose_wandb_mode()
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_ckpt_path(config.get("ckpt_path"))
        link_data_facts(config)
        link_guidance(config)
        if self.subcommand == "predict" and isinstance(config.get("trainer"), Namespace):
            config.trainer.logger = False  # predict trains nothing: samples go to files, not to a new W&B run
        check_resume_arguments(config, fit=self.subcommand == "fit")
        derive_run_dirs(config, fresh_fit=self.subcommand == "fit" and not config.get("ckpt_path"),
                        recipe=self.recipe)

    def before_test(self) -> None:
        self._apply_sampling()
        metrics = next((cb for cb in self.trainer.callbacks if isinstance(cb, GenerationMetricsCallback)), None)
        phases = ["the test loss over the test split (shorten with --trainer.limit_test_batches 0.1)"]
        if metrics is not None and metrics.test_num_samples:
            phases.append(f"{'/'.join(metrics.metric_names)} from {metrics.test_num_samples:,} generated samples "
                          f"against the {metrics.reference_split} split (--generation_metrics.test_num_samples)")
        rank_zero_info("test runs " + "; then ".join(f"({i}) {p}" for i, p in enumerate(phases, 1)) + ".")

    def _apply_sampling(self) -> None:
        if isinstance(self.model, GenerativeModule):
            sampling = self.model.resolve_sampling(self.config_init[self.subcommand].sampling)
            self.model.sampling = sampling
            self.model.show_progress = True
            rank_zero_info(f"Sampling with {sampling.describe()}")

    def before_predict(self) -> None:
        if getattr(self.datamodule, "num_predict_samples", None) == 0:
            raise SystemExit("error: predict would write nothing: data.init_args.num_predict_samples is 0; "
                             "set --data.init_args.num_predict_samples 100.")
        self._apply_sampling()
        config = self.config[self.subcommand]
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(SampleWriter(config.predict_dir))

    def after_fit(self) -> None:
        trainer = self.trainer
        if trainer.is_global_zero and trainer.max_steps > 0 and trainer.global_step < trainer.max_steps \
                and not trainer.interrupted:
            timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
            resume = f"--ckpt_path {Path(trainer.default_root_dir) / 'checkpoints' / 'last.ckpt'}"
            if timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0:
                why = (f"the trainer.max_time cap ({timer._duration:.0f} s) was reached first; the cap counts "
                       f"training time across resumes")
                resume += f" --trainer.max_time {_max_time_to_finish(timer.time_elapsed('train'), trainer)}"
            else:
                why = "training ended early"
            print(f"Stopped after {trainer.global_step:,} of {trainer.max_steps:,} steps: {why}. Resume with "
                  f"{resume} to finish the budget.")
        logger = get_wandb_logger(self.trainer)
        hint = offline_sync_hint(logger) if logger is not None and self.trainer.is_global_zero else None
        if hint:
            print(f"W&B ran offline. Upload this run with:\n    {hint}")


def _max_time_to_finish(elapsed_s: float, trainer: Trainer) -> str:
    """A ``max_time`` (DD:HH:MM:SS) that covers the steps left at this run's pace, with a 50% margin."""
    pace = elapsed_s / max(trainer.global_step, 1)
    total = int(elapsed_s + 1.5 * pace * (trainer.max_steps - trainer.global_step)) + 60
    days, rest = divmod(total, 86400)
    return f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


# ---- one fact, one place ---------------------------------------------------------------------------

DATA_FACTS = {  # model key (or sub-network key) ← data module fact
    "image_size": "image_size", "channels": "channels", "in_channels": "channels", "value_range": "value_range",
    "num_classes": "num_classes",
}
SUB_NETWORKS = ("denoiser", "vae", "generator")  # their in_channels follow the data too
LINKED_SUB_KEYS = ("in_channels", "image_size")


def import_object(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _norm(value: Any) -> Any:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value


def _default_of(cls: type, key: str) -> Any:
    for klass in cls.__mro__:
        param = inspect.signature(klass.__init__).parameters.get(key) if "__init__" in vars(klass) else None
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return inspect.Parameter.empty


def _link(target: Any, keys: Sequence[str], facts: dict[str, Any], where: str) -> None:
    """Set ``target.init_args[key]`` from the data facts; a value the user set that contradicts them is an error."""
    if not isinstance(target, Namespace) or not target.get("class_path") or target.get("init_args") is None:
        return
    cls = import_object(target.class_path)
    for key in keys:
        fact = DATA_FACTS[key]
        if fact not in facts or key not in target.init_args:
            continue
        value, wanted = target.init_args[key], facts[fact]
        if _norm(value) not in (_norm(wanted), _norm(_default_of(cls, key))):
            raise ValueError(f"{where}.init_args.{key}={value} contradicts data.init_args.{fact}={wanted}. The model takes "
                             f"{fact} from the data module (one fact, one place): set data.init_args.{fact} only.")
        target.init_args[key] = list(wanted) if isinstance(wanted, tuple) else wanted


def link_data_facts(config: Namespace) -> None:
    """Copy the data module's image size, channels, value range (and classes, for classifiers) into the model
    and its sub-network, so a config states them once, under ``data``."""
    data = config.get("data")
    if not isinstance(data, Namespace) or not data.get("class_path"):
        return
    data_cls = import_object(data.class_path)
    facts = {}
    for fact in set(DATA_FACTS.values()):
        value = (data.get("init_args") or Namespace()).get(fact)
        if value is None and isinstance(getattr(data_cls, fact, None), (int, float, tuple, list)):
            value = getattr(data_cls, fact)
        if value is not None:
            facts[fact] = _norm(value) if isinstance(value, (list, tuple)) else value
    model = config.get("model")
    _link(model, list(DATA_FACTS), facts, "model")  # num_classes / in_channels only exist on classifiers
    for name in SUB_NETWORKS:
        sub = (model.get("init_args") or Namespace()).get(name) if isinstance(model, Namespace) else None
        _link(sub, LINKED_SUB_KEYS, facts, f"model.init_args.{name}")


def link_guidance(config: Namespace) -> None:
    """A config's ``sampling.guidance_scale``, ``sampling.autoguide`` and ``sampling.guidance_interval`` are also its
    model's defaults (the arguments of the same names), so the sample grid and metrics during ``fit`` and the
    checkpoint's hyperparameters use what the config states. They win over a model value (a run's saved config.yaml
    holds both, and ``--sampling.*`` on it is the newer choice); a replacement is printed."""
    sampling, model = config.get("sampling"), config.get("model")
    init = model.get("init_args") if isinstance(model, Namespace) else None
    if not isinstance(sampling, Namespace) or not isinstance(init, Namespace):
        return
    for key in ("guidance_scale", "autoguide", "guidance_interval"):
        value = sampling.get(key)
        if value is None or key not in init:
            continue
        if init.get(key) is not None and init.get(key) != value:
            rank_zero_info(f"model.init_args.{key} {init.get(key)} replaced by sampling.{key} {value}.")
        init[key] = value


def check_ckpt_path(ckpt_path: str | None) -> None:
    """A missing --ckpt_path is one clear line, not a traceback after the model was built."""
    if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt_path) \
            and not Path(ckpt_path).is_file():
        raise SystemExit(f"error: --ckpt_path {ckpt_path} does not exist. `fit` of the same config writes "
                         "runs/<run name>/checkpoints/last.ckpt (the run name is the config file's name).")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config values as {dotted key: leaf}, with ``init_args`` levels dropped and tuples as lists."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            if key in ("_instantiator", "__path__"):
                continue
            name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else key
            out.update(_flatten(sub, name))
        return out
    if isinstance(value, tuple):
        value = list(value)
    return {prefix: value}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_resume_arguments(config: Namespace, fit: bool = False) -> None:
    """The rule on ``--ckpt_path``: the model class and architecture come from the checkpoint, and a config or
    command line that contradicts them is an error naming both values; the arguments the module lists in
    ``resume_safe_args`` (optimizer, learning rate, schedule...) follow the command line, and each change is
    printed. A ``fit`` resume also keeps the optimizer's class: its saved state fits no other."""
    ckpt_path, model = config.get("ckpt_path"), config.get("model")
    if not ckpt_path or not isinstance(model, Namespace) or not Path(str(ckpt_path)).is_file():
        return
    import torch

    try:
        hparams = dict(torch.load(ckpt_path, map_location="cpu", weights_only=True).get("hyper_parameters") or {})
    except Exception as err:
        raise SystemExit(f"error: --ckpt_path {ckpt_path} is not a readable checkpoint ({type(err).__name__}: {err}).")
    saved_class = hparams.pop("_class_path", None)
    if not hparams or not saved_class:
        return
    if saved_class != model.class_path:
        raise SystemExit(f"error: --ckpt_path {ckpt_path} holds a {saved_class}, but this config builds a "
                         f"{model.class_path}. Use the config that trained the checkpoint, or a new run without --ckpt_path.")
    cls = import_object(model.class_path)
    safe = getattr(cls, "resume_safe_args", ())
    wanted, saved = _flatten(model.get("init_args")), _flatten(hparams)
    trained_by, now_by = saved.get("optimizer.class_path"), wanted.get("optimizer.class_path")
    if fit and trained_by and now_by and trained_by != now_by:
        raise SystemExit(f"error: --ckpt_path {ckpt_path} was trained by {trained_by}, and its optimizer state cannot "
                         f"resume {now_by} (this config's model.init_args.optimizer). Resume with "
                         f"--model.init_args.optimizer {trained_by}, or start a new run without --ckpt_path.")
    changes, conflicts = [], []
    for key, value in wanted.items():
        if key not in saved or _same(value, saved[key]):
            continue
        (changes if key.split(".")[0] in safe else conflicts).append(f"model.init_args.{key}: checkpoint {saved[key]!r}, "
                                                                      f"now {value!r}")
    if conflicts:
        raise SystemExit("error: the config contradicts the checkpoint it resumes (" + str(ckpt_path) + "):\n  "
                         + "\n  ".join(conflicts) + "\nThese define the model and cannot change on resume. Use the "
                         "checkpoint's values, or start a new run without --ckpt_path. Changeable on resume: "
                         + ", ".join(safe) + ".")
    for change in changes:
        rank_zero_only(print)(f"Resume: {change} (applied).")


def _holds_a_run(root: Path) -> bool:
    return (root / "config.yaml").is_file() or any((root / "checkpoints").glob("*.ckpt"))


def command_line_configs(argv: Sequence[Any]) -> list[str]:
    """The ``--config``/``-c`` files named on the command line, in order.

    The parsed ``config`` list cannot say which file the user named: a config file may load an overlay with its own
    ``config:`` key (``sweeps/blocks/optimizer_muon.yaml``), and jsonargparse lists that overlay before its parent."""
    found, args = [], [str(a) for a in argv]
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            found.append(args[i + 1])
        elif arg.startswith("--config="):
            found.append(arg.split("=", 1)[1])
    return found


def derive_run_dirs(config: Namespace, fresh_fit: bool = False, recipe: str | None = None) -> None:
    """One run name → default_root_dir, the W&B run's name, group and files, and the checkpoint folder.

    The name is ``--run_name``, else the stem of ``recipe`` (the first config named on the command line). A new
    ``fit`` (no --ckpt_path) whose derived folder already holds a run gets the next free ``runs/<name>-2``,
    ``-3``..., so it never mixes its files with the earlier run's."""
    trainer = config.get("trainer")
    if not isinstance(trainer, Namespace):
        return
    name = config.get("run_name") or (Path(recipe).stem if recipe else "genlab")
    root = trainer.get("default_root_dir")
    if not root:
        root, base = str(Path("runs") / name), name
        version = 1
        while fresh_fit and _holds_a_run(Path(root)):
            version += 1
            name = f"{base}-{version}"
            root = str(Path("runs") / name)
        if version > 1:
            print(f"runs/{base} already holds a run: this new one writes to {root}. To continue the earlier run "
                  f"instead, pass --ckpt_path runs/{base}/checkpoints/last.ckpt.")
    trainer.default_root_dir = root
    if fresh_fit and rank_zero_only.rank == 0:  # only global rank 0 writes anything
        Path(root).mkdir(parents=True, exist_ok=True)  # W&B looks for it at start
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("WandbLogger"):
            args = logger.init_args
            if args.get("save_dir") in (None, "."):
                args.save_dir = root
            if not args.get("name"):
                args.name = name
            if not args.get("group"):
                args.group = name
    for cb in trainer.get("callbacks") or []:
        if isinstance(cb, Namespace) and str(cb.get("class_path", "")).endswith("ModelCheckpoint"):
            if not cb.init_args.get("dirpath"):
                cb.init_args.dirpath = str(Path(root) / "checkpoints")


def cli_main(args: ArgsType = None, **kwargs: Any) -> LightningCLI:
    """Build and run the CLI; returns it so tests and sweeps can read ``cli.trainer``."""
    quiet_known_warnings()
    kwargs.setdefault("save_config_callback", WandbSaveConfig)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    kwargs.setdefault("parser_class", GenLabParser)
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
    """``tune`` runs an Optuna study (tuning/tune.py); everything else is LightningCLI."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["tune"]:
        from tuning.tune import tune_main

        tune_main(args[1:])
    elif args[:1] in (["-h"], ["--help"]):
        try:
            cli_main(argv)
        finally:
            print("\nand:\n  tune                Run an Optuna study whose trials are fit runs (python cli.py tune --help).")
    else:
        if argv is None:
            sys.argv[1:] = join_negative_values(sys.argv[1:])
        cli_main(argv if argv is None else join_negative_values(argv))  # None: LightningCLI reads sys.argv


if __name__ == "__main__":
    main()
